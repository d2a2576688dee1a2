"""Data gates the job issue runs before training: pure functions over stored artifacts.

Each returns a ``GateResult`` with the figures behind the decision; the caller turns a
failed gate into its refusal (and audit event). The two policy gates (the source is still
approved, the purpose is allowed) belong to the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest import dedup


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    code: str | None  # machine-readable reason when refused
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "passed": self.passed,
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }


def min_examples_gate(*, examples: int, minimum: int) -> GateResult:
    details = {"examples": examples, "minimum": minimum}
    if examples < minimum:
        return GateResult(
            "min_examples",
            False,
            "too_few_examples",
            f"the training file has {examples} examples; the data source requires {minimum}",
            details,
        )
    return GateResult(
        "min_examples", True, None, f"{examples} examples (minimum {minimum})", details
    )


def overlap_gate(
    *,
    training_fingerprint: Path,
    validation_fingerprint: Path,
    threshold: float = dedup.DEFAULT_THRESHOLD,
    max_overlapping_lines: int = 0,
) -> GateResult:
    """Refuses when more than ``max_overlapping_lines`` validation examples repeat training
    examples, exactly or with estimated similarity >= ``threshold``. Reads the two
    fingerprint artifacts written at upload, never the files themselves."""
    found = dedup.overlap(
        dedup.Fingerprint(training_fingerprint),
        dedup.Fingerprint(validation_fingerprint),
        threshold=threshold,
    )
    details = {
        **found.to_dict(),
        "overlapping_lines": found.lines,
        "max_overlapping_lines": max_overlapping_lines,
    }
    if found.lines > max_overlapping_lines:
        return GateResult(
            "train_validation_overlap",
            False,
            "train_validation_overlap",
            f"{found.lines} of {found.probe_examples} validation examples repeat training "
            f"examples ({found.exact.count} exactly, {found.near.count} nearly); "
            f"at most {max_overlapping_lines} allowed",
            details,
        )
    return GateResult(
        "train_validation_overlap",
        True,
        None,
        f"{found.lines} of {found.probe_examples} validation examples repeat training examples",
        details,
    )
