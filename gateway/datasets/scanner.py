"""One chunk of whole lines in, everything the datasheet needs about them out.

``scan_chunk`` is the unit of parallel work: a pure function of the chunk's bytes and the
settings, cheap to pickle both ways, so it runs in-process or in a worker process alike.
PII is found once for the whole chunk on its raw bytes (``pii.scan_jsonl_chunk``). Then per
line it validates (the strict decoder, then ``formats.parse`` for what it refused), counts
roles, tokens and short answers, keys the example for exact duplicates and collects its
user/assistant text for MinHash (computed for the whole chunk at once); lines the raw scan
could not settle are decoded and scanned content by content, and redacted when asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Final

import numpy as np

from gateway.datasets import dedup, formats, pii
from gateway.datasets.formats import (
    AssistantMessage,
    ChatExample,
    FaultCode,
    LineFault,
    PromptCompletionExample,
    SystemMessage,
)
from gateway.datasets.tokens import TOKENS_PER_MESSAGE, BpeTokenCounter, approximate_tokens

SHOWN: Final = 100
NOT_AN_EXAMPLE: Final = 0
# Module-level names for the per-line path: one lookup instead of an attribute chain.
_FORMAT_CODES = formats.FORMAT_CODES
_encode = formats.encode_example
_decode = formats.decode_example
_exact_key = dedup.exact_key
CHAT, PROMPT_COMPLETION = formats.CHAT, formats.PROMPT_COMPLETION


@dataclass(frozen=True)
class ScanSettings:
    max_line_bytes: int = 1 << 20
    pii_action: str = "allow"  # block | redact | allow: only "redact" changes the work
    scan_pii: bool = True
    short_answer_chars: int = 8
    tokenizer_file: Path | None = None  # None: the approximation in tokens.py


@dataclass
class Capped:
    """A count and the first ``SHOWN`` line numbers."""

    count: int = 0
    lines: list[int] = field(default_factory=list)

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.lines) < SHOWN:
            self.lines.append(line)

    def merge(self, other: Capped) -> None:
        self.count += other.count
        room = SHOWN - len(self.lines)
        if room > 0:
            self.lines.extend(other.lines[:room])


@dataclass
class ChunkResult:
    first_line: int
    line_count: int
    formats: np.ndarray  # uint8 per line: 0 not an example, else formats.FORMAT_CODES
    tokens: np.ndarray  # int32 per line, 0 for non-examples
    exact: np.ndarray  # uint64 per line, 0 for non-examples
    signatures: np.ndarray  # uint16[line_count, NUM_BINS]
    faults: list[LineFault] = field(default_factory=list)
    fault_count: int = 0
    roles: dict[str, int] = field(default_factory=dict)
    short_answers: Capped = field(default_factory=Capped)
    pii_findings: dict[str, int] = field(default_factory=dict)  # kind -> findings
    pii_lines: dict[str, Capped] = field(default_factory=dict)  # kind -> lines
    pii_line_count: int = 0
    # redact only: line index in chunk -> redacted line (no newline), and its new keys
    redacted_lines: dict[int, bytes] = field(default_factory=dict)
    redacted_exact: dict[int, int] = field(default_factory=dict)
    redacted_signatures: dict[int, np.ndarray] = field(default_factory=dict)


def split_lines(chunk: bytes) -> list[bytes]:
    lines = chunk.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


class _LineScanner:
    def __init__(self, settings: ScanSettings, first_line: int, line_count: int) -> None:
        self.settings = settings
        self.max_line_bytes = settings.max_line_bytes
        self.first_line = first_line
        # Plain lists while scanning (item assignment on numpy arrays costs more per line).
        self.formats = [NOT_AN_EXAMPLE] * line_count
        self.tokens = [0] * line_count
        self.exact_keys: list[bytes] = [bytes(8)] * line_count
        self.shingle_rows: list[int] = []
        self.shingle_texts: list[bytes] = []
        self.result_faults: list[LineFault] = []
        self.fault_count = 0
        self.turns = self.system_turns = self.assistant_turns = 0
        self.short_answers = Capped()
        self.pii_findings: dict[str, int] = {}
        self.pii_lines: dict[str, Capped] = {}
        self.pii_line_count = 0
        self.redacted_lines: dict[int, bytes] = {}
        self.redacted_texts: dict[int, bytes] = {}
        self.redacted_exact: dict[int, int] = {}
        self.token_texts: list[list[str]] | None = (
            [[] for _ in range(line_count)] if settings.tokenizer_file else None
        )

    def fault(self, index: int, code: str, message: str) -> None:
        self.fault_count += 1
        if len(self.result_faults) < SHOWN:
            self.result_faults.append(LineFault(self.first_line + index, code, message))

    def scan(self, index: int, raw: bytes, prefer: str, line_pii: pii.ChunkPii | None) -> str:
        if len(raw) > self.max_line_bytes:
            self.fault(
                index,
                FaultCode.LINE_TOO_LONG,
                f"line is {len(raw)} bytes; the limit is {self.settings.max_line_bytes}",
            )
            return prefer
        example = _decode(raw, prefer)
        if example is None or not (
            self._chat(index, example)
            if type(example) is ChatExample
            else self._prompt_completion(index, example)
        ):
            # The slow path decides: it names the faults, or accepts what the strict decoder
            # could not type (a repeated key, which keeps its last value in both paths).
            _, faults, example = formats.parse(raw)
            for code, message in faults:
                self.fault(index, code, message)
            if example is None:
                return prefer
            accepted = self._accept(index, example)
            assert accepted, "the slow path accepted a line the checks refuse"
        fmt = CHAT if type(example) is ChatExample else PROMPT_COMPLETION
        self.formats[index] = _FORMAT_CODES[fmt]
        self.exact_keys[index] = _exact_key(_encode(example))
        if line_pii is not None:
            raw_findings = line_pii.findings.get(index)
            if index in line_pii.decode or (raw_findings and self.settings.pii_action == "redact"):
                self._pii(index, example)
            elif raw_findings:
                self._record_pii(index, [finding.kind for finding in raw_findings])
        return fmt

    def _accept(self, index: int, example: formats.Example) -> bool:
        """Checks the strict decoder leaves to us; records the line's figures if it passes."""
        if type(example) is ChatExample:
            return self._chat(index, example)
        return self._prompt_completion(index, example)

    def _chat(self, index: int, example: ChatExample) -> bool:
        # Built-ins over whole lists (map, count, sum) instead of a per-message loop: this
        # runs once per line of every upload.
        messages = example.messages
        contents = [message.content for message in messages]
        if not contents or not all(contents) or any(map(str.isspace, contents)):
            return False
        kinds = list(map(type, messages))
        assistants = kinds.count(AssistantMessage)
        if not assistants:
            return False
        systems = kinds.count(SystemMessage)
        self.system_turns += systems
        self.assistant_turns += assistants
        self.turns += len(messages)
        short_chars = self.settings.short_answer_chars
        if min(map(len, contents)) < 4 * short_chars and any(
            kind is AssistantMessage and len(content.strip()) < short_chars
            for kind, content in zip(kinds, contents, strict=True)
        ):
            self.short_answers.add(self.first_line + index)
        chars = sum(map(len, contents))
        utf8_bytes = (
            chars if all(map(str.isascii, contents)) else sum(map(len, map(str.encode, contents)))
        )
        self.tokens[index] = approximate_tokens(
            chars=chars, utf8_bytes=utf8_bytes, messages=len(messages)
        )
        if self.token_texts is not None:
            self.token_texts[index] = contents
        if systems == 1 and kinds[0] is SystemMessage:
            contents = contents[1:]
        elif systems:
            contents = [
                c for kind, c in zip(kinds, contents, strict=True) if kind is not SystemMessage
            ]
        self.shingle_rows.append(index)
        self.shingle_texts.append("\n".join(contents).encode())
        return True

    def _prompt_completion(self, index: int, example: PromptCompletionExample) -> bool:
        prompt, completion = example.prompt, example.completion
        if formats.is_blank(prompt) or formats.is_blank(completion):
            return False
        if len(completion.strip()) < self.settings.short_answer_chars:
            self.short_answers.add(self.first_line + index)
        text = prompt + "\n" + completion
        chars = len(text)
        utf8 = text.encode()
        self.tokens[index] = approximate_tokens(chars=chars, utf8_bytes=len(utf8), messages=0)
        if self.token_texts is not None:
            self.token_texts[index] = [prompt, completion]
        self.shingle_rows.append(index)
        self.shingle_texts.append(utf8)
        return True

    def _pii(self, index: int, example: formats.Example) -> None:
        contents = (
            [m.content for m in example.messages]
            if type(example) is ChatExample
            else [example.prompt, example.completion]
        )
        encoded = [content.encode() for content in contents]
        per_content = pii.scan_contents(encoded)
        kinds = [finding.kind for findings in per_content for finding in findings]
        if not kinds:
            return
        self._record_pii(index, kinds)
        if self.settings.pii_action == "redact":
            redacted = [
                pii.redact_bytes(data, findings).decode() if findings else content
                for content, data, findings in zip(contents, encoded, per_content, strict=True)
            ]
            self._redact(index, example, redacted)

    def _record_pii(self, index: int, kinds: list[str]) -> None:
        for kind in kinds:
            self.pii_findings[kind] = self.pii_findings.get(kind, 0) + 1
        self.pii_line_count += 1
        line = self.first_line + index
        distinct = sorted(set(kinds))
        for kind in distinct:
            self.pii_lines.setdefault(kind, Capped()).add(line)
        if self.settings.pii_action == "block":
            self.fault(index, FaultCode.PII_FOUND, "personal data: " + ", ".join(distinct))

    def _redact(self, index: int, example: formats.Example, redacted: list[str]) -> None:
        if type(example) is ChatExample:
            messages = []
            for message, content in zip(example.messages, redacted, strict=True):
                messages.append(_with_content(message, content))
            new: formats.Example = ChatExample(messages=messages)
            texts = [
                c
                for m, c in zip(example.messages, redacted, strict=True)
                if type(m) is not SystemMessage
            ]
            shingle_text = "\n".join(texts)
        else:
            new = PromptCompletionExample(prompt=redacted[0], completion=redacted[1])
            shingle_text = redacted[0] + "\n" + redacted[1]
        encoded = formats.encode_example(new)
        self.redacted_lines[index] = encoded
        self.redacted_texts[index] = shingle_text.encode()
        self.redacted_exact[index] = int.from_bytes(dedup.exact_key(encoded), "little")

    def result(self, line_count: int) -> ChunkResult:
        signatures = np.full((line_count, dedup.NUM_BINS), dedup.EMPTY_BIN, dtype=np.uint16)
        if self.shingle_rows:
            signatures[self.shingle_rows] = dedup.signatures(self.shingle_texts)
        redacted_signatures: dict[int, np.ndarray] = {}
        if self.redacted_texts:
            rows = list(self.redacted_texts)
            computed = dedup.signatures([self.redacted_texts[r] for r in rows])
            redacted_signatures = {row: computed[i] for i, row in enumerate(rows)}
        if self.token_texts is not None:
            self._count_tokens_exactly()
        return ChunkResult(
            first_line=self.first_line,
            line_count=line_count,
            formats=np.array(self.formats, dtype=np.uint8),
            tokens=np.array(self.tokens, dtype=np.int32),
            exact=dedup.exact_keys_array(self.exact_keys),
            signatures=signatures,
            faults=self.result_faults,
            fault_count=self.fault_count,
            roles={
                role: count
                for role, count in (
                    ("system", self.system_turns),
                    ("user", self.turns - self.system_turns - self.assistant_turns),
                    ("assistant", self.assistant_turns),
                )
                if count
            },
            short_answers=self.short_answers,
            pii_findings=self.pii_findings,
            pii_lines=self.pii_lines,
            pii_line_count=self.pii_line_count,
            redacted_lines=self.redacted_lines,
            redacted_exact=self.redacted_exact,
            redacted_signatures=redacted_signatures,
        )

    def _count_tokens_exactly(self) -> None:
        assert self.token_texts is not None and self.settings.tokenizer_file is not None
        counter = BpeTokenCounter(self.settings.tokenizer_file)
        counts = iter(counter.count([text for texts in self.token_texts for text in texts]))
        for index, texts in enumerate(self.token_texts):
            if texts:
                chat = self.formats[index] == _FORMAT_CODES[formats.CHAT]
                markers = TOKENS_PER_MESSAGE * len(texts) if chat else 0
                self.tokens[index] = sum(next(counts) for _ in texts) + markers


def _with_content(message: formats.Message, content: str) -> formats.Message:
    if type(message) is AssistantMessage:
        return AssistantMessage(content=content, weight=message.weight)
    return type(message)(content=content)


def scan_file_range(
    path: str, offset: int, length: int, first_line: int, settings: ScanSettings, prefer: str
) -> ChunkResult:
    """``scan_chunk`` of bytes already on disk: a worker reads them from the page cache
    itself, so the uploading process never pickles the chunk through a pipe."""
    with open(path, "rb") as handle:
        chunk = os.pread(handle.fileno(), length, offset)
    if len(chunk) != length:
        raise OSError(f"short read from the upload's temporary file at {offset}")
    return scan_chunk(chunk, first_line, settings, prefer)


def scan_chunk(chunk: bytes, first_line: int, settings: ScanSettings, prefer: str) -> ChunkResult:
    """Scan the whole lines of ``chunk``; ``first_line`` is the 1-based number of its first
    line and ``prefer`` the format to try first (the file's, once known)."""
    lines = split_lines(chunk)
    scanner = _LineScanner(settings, first_line, len(lines))
    chunk_pii = None
    if settings.scan_pii:
        chunk_pii = pii.scan_jsonl_chunk(chunk, [0, *accumulate(len(line) + 1 for line in lines)])
    for index, raw in enumerate(lines):
        prefer = scanner.scan(index, raw, prefer, chunk_pii)
    return scanner.result(len(lines))
