"""The datasheet of one file version, assembled from chunk results in file order.

It carries counts and line numbers only: never an example's text, never a PII value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from ingest import formats
from ingest.conflicts import Conflicts
from ingest.dedup import DuplicatePairs
from ingest.formats import FaultCode, LineFault
from ingest.scanner import SHOWN, Capped, ChunkResult

# 2: near-duplicates on normalised text and word shingles; conflicts; structure.
SCHEMA: Final = "tunegate.datasheet/2"
PROCESSED: Final = "processed"
ERROR: Final = "error"


@dataclass(frozen=True)
class TokenStats:
    total: int
    min: int
    mean: float
    p50: int
    p95: int
    max: int

    @classmethod
    def of(cls, counts: np.ndarray) -> TokenStats | None:
        if counts.size == 0:
            return None
        p50, p95 = np.percentile(counts, [50, 95], method="inverted_cdf")
        return cls(
            total=int(counts.sum(dtype=np.int64)),
            min=int(counts.min()),
            mean=round(float(counts.mean()), 2),
            p50=int(p50),
            p95=int(p95),
            max=int(counts.max()),
        )


@dataclass(frozen=True)
class PiiSummary:
    action: str
    recogniser_set: str
    findings: int
    lines: int
    by_kind: dict[str, tuple[int, Capped]]  # kind -> (findings, lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "recogniser_set": self.recogniser_set,
            "findings": self.findings,
            "lines": self.lines,
            "by_type": {
                kind: {"findings": findings, "lines": capped.count, "line_numbers": capped.lines}
                for kind, (findings, capped) in sorted(self.by_kind.items())
            },
        }


@dataclass(frozen=True)
class Datasheet:
    sha256: str
    bytes: int
    lines: int
    status: str
    format: str | None
    examples: int
    tokenizer: str
    tokens: TokenStats | None
    roles: dict[str, int]
    exact_duplicates: DuplicatePairs
    near_duplicates: DuplicatePairs
    near_duplicate_threshold: float
    short_answers: Capped
    short_answer_chars: int
    pii: PiiSummary | None
    fault_count: int
    faults: list[LineFault] = field(default_factory=list)
    conflicts: Conflicts | None = None  # ingest.conflicts
    structure: dict[str, Any] | None = None  # ingest.structure.infer

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "lines": self.lines,
            "status": self.status,
            "format": self.format,
            "examples": self.examples,
            "tokenizer": self.tokenizer,
            "tokens": None if self.tokens is None else self.tokens.__dict__.copy(),
            "roles": dict(self.roles),
            "exact_duplicates": self.exact_duplicates.to_dict(),
            "near_duplicates": {
                "threshold": self.near_duplicate_threshold,
                **self.near_duplicates.to_dict(),
            },
            "short_answers": {
                "under_chars": self.short_answer_chars,
                "count": self.short_answers.count,
                "lines": self.short_answers.lines,
            },
            "pii": None if self.pii is None else self.pii.to_dict(),
            "faults": {
                "count": self.fault_count,
                "shown": [fault.to_dict() for fault in self.faults],
            },
            "conflicts": None if self.conflicts is None else self.conflicts.to_dict(),
            "structure": self.structure,
        }


class DatasheetBuilder:
    """Takes chunk results (and faults found outside chunks) strictly in line order."""

    def __init__(self, *, pii_action: str, scan_pii: bool, recogniser_set: str) -> None:
        self.pii_action = pii_action
        self.scan_pii = scan_pii
        self.recogniser_set = recogniser_set
        self.format: str | None = None
        self.lines = 0
        self.examples = 0
        self.faults: list[LineFault] = []
        self.fault_count = 0
        self.roles: dict[str, int] = {}
        self.short_answers = Capped()
        self.pii_findings: dict[str, int] = {}
        self.pii_lines: dict[str, Capped] = {}
        self.pii_line_count = 0
        self._tokens: list[np.ndarray] = []

    def add_fault(self, fault: LineFault) -> None:
        self.fault_count += 1
        if len(self.faults) < SHOWN:
            self.faults.append(fault)

    def add_lines(self, count: int) -> None:
        """Lines accounted for outside chunks (an over-long line that was skipped)."""
        self.lines += count

    def add(self, result: ChunkResult) -> np.ndarray:
        """Merge one chunk; returns its per-line mask of examples in the file's format."""
        self.lines += result.line_count
        codes = result.formats
        if self.format is None:
            valid = np.flatnonzero(codes)
            if valid.size:
                self.format = formats.FORMAT_NAMES[int(codes[valid[0]])]
        faults = list(result.faults)
        extra_faults = 0
        accepted = codes != 0
        if self.format is not None:
            mine = formats.FORMAT_CODES[self.format]
            mixed = np.flatnonzero(accepted & (codes != mine))
            if mixed.size:
                extra_faults = int(mixed.size)
                faults.extend(
                    LineFault(
                        int(row) + result.first_line,
                        FaultCode.MIXED_FORMAT,
                        f"this line is {formats.FORMAT_NAMES[int(codes[row])]}; "
                        f"the file is {self.format}",
                    )
                    for row in mixed[:SHOWN]
                )
                faults.sort(key=lambda fault: fault.line)
            accepted = codes == mine
        for fault in faults[: max(0, SHOWN - len(self.faults))]:
            self.faults.append(fault)
        self.fault_count += result.fault_count + extra_faults
        self.examples += int(accepted.sum())
        self._tokens.append(result.tokens[accepted])
        for role, count in result.roles.items():
            self.roles[role] = self.roles.get(role, 0) + count
        self.short_answers.merge(result.short_answers)
        for kind, count in result.pii_findings.items():
            self.pii_findings[kind] = self.pii_findings.get(kind, 0) + count
        for kind, capped in result.pii_lines.items():
            self.pii_lines.setdefault(kind, Capped()).merge(capped)
        self.pii_line_count += result.pii_line_count
        return accepted

    def finish(
        self,
        *,
        sha256: str,
        size: int,
        tokenizer: str,
        exact_duplicates: DuplicatePairs,
        near_duplicates: DuplicatePairs,
        near_duplicate_threshold: float,
        short_answer_chars: int,
        conflicts: Conflicts | None = None,
        structure: dict[str, Any] | None = None,
    ) -> Datasheet:
        if self.examples == 0 and self.fault_count == 0:
            self.add_fault(LineFault(0, FaultCode.NO_EXAMPLES, "the file holds no examples"))
        tokens = np.concatenate(self._tokens) if self._tokens else np.zeros(0, np.int32)
        pii = None
        if self.scan_pii:
            pii = PiiSummary(
                action=self.pii_action,
                recogniser_set=self.recogniser_set,
                findings=sum(self.pii_findings.values()),
                lines=self.pii_line_count,
                by_kind={
                    kind: (self.pii_findings[kind], self.pii_lines[kind])
                    for kind in self.pii_findings
                },
            )
        return Datasheet(
            sha256=sha256,
            bytes=size,
            lines=self.lines,
            status=ERROR if self.fault_count else PROCESSED,
            format=self.format,
            examples=self.examples,
            tokenizer=tokenizer,
            tokens=TokenStats.of(tokens),
            roles=self.roles,
            exact_duplicates=exact_duplicates,
            near_duplicates=near_duplicates,
            near_duplicate_threshold=near_duplicate_threshold,
            short_answers=self.short_answers,
            short_answer_chars=short_answer_chars,
            pii=pii,
            fault_count=self.fault_count,
            faults=self.faults,
            conflicts=conflicts,
            structure=structure,
        )
