"""One chunk of whole lines in, everything the datasheet needs about them out.

``scan_chunk`` is the unit of parallel work: a pure function of the chunk's bytes and the
settings, cheap to pickle both ways, so it runs in-process or in a worker process alike.
PII is found once for the whole chunk on its raw bytes (``pii.scan_jsonl_chunk``). Every
line is decoded by the strict decoder; the chat examples it typed are then checked and
measured all at once (emptiness, roles, tokens, short answers, the text for MinHash) with
built-ins and numpy over the chunk's flattened messages, because Python work per line was
most of the scan. Only the lines that need more go one by one, in line order: what the
strict decoder or the checks refused (``formats.parse`` names the faults, or accepts what
the decoder could not type), and lines the raw PII scan could not settle or that are to be
redacted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import accumulate, chain
from pathlib import Path
from typing import Final

import msgspec
import numpy as np

from ingest import conflicts, dedup, formats, pii, structure
from ingest.formats import (
    AssistantMessage,
    ChatExample,
    FaultCode,
    LineFault,
    OutputMessage,
    PreferenceExample,
    PromptCompletionExample,
    SystemMessage,
    UserMessage,
)
from ingest.tokens import TOKENS_PER_MESSAGE, BpeTokenCounter, approximate_tokens

SHOWN: Final = 100
NOT_AN_EXAMPLE: Final = 0
# Module-level names for the per-line path: one lookup instead of an attribute chain.
_FORMAT_CODES = formats.FORMAT_CODES
_encode = formats.encode_example
_decode = formats.decode_example
_exact_key = dedup.exact_key
CHAT, PROMPT_COMPLETION = formats.CHAT, formats.PROMPT_COMPLETION
_CHAT_CODE = _FORMAT_CODES[CHAT]
# Formats whose token count adds the per-message markers of a chat template.
_MESSAGE_CODES = (_CHAT_CODE, _FORMAT_CODES[formats.PREFERENCE])
_SYSTEM, _USER, _ASSISTANT = 0, 1, 2
_ROLE_CODES: Final[dict[type, int]] = {
    SystemMessage: _SYSTEM,
    UserMessage: _USER,
    AssistantMessage: _ASSISTANT,
}
# After each MinHash text: a newline between the turns of one example, padding after its last.
_TURN_SEPARATORS: Final = ("\n", dedup.PAD.decode())
_REFUSED = (msgspec.DecodeError, UnicodeDecodeError)


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
    # conflicts and structure (chat examples ending in an assistant answer after a prompt)
    answer_keys: np.ndarray | None = None  # uint64 per line, 0 where none
    prompt_signatures: np.ndarray | None = None  # uint16[line_count, NUM_BINS]
    answers: structure.Observed = field(default_factory=structure.Observed)


def split_lines(chunk: bytes) -> list[bytes]:
    lines = chunk.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass
class _ChatFigures:
    """Per chat example of one batch: whether it passes the checks, and its figures."""

    valid: np.ndarray  # bool
    short: np.ndarray  # bool: an assistant turn under the short-answer length
    tokens: np.ndarray  # int64
    systems: int
    assistants: int
    turns: int
    minhash_text: bytes  # each valid example's user and assistant turns, then dedup.PAD
    minhash_lengths: np.ndarray  # int64 per MinHash segment, its text without the padding
    segments: np.ndarray  # int64 per valid example: 2 (prompt, answer) or 1 (all its turns)
    answers: list[str]  # the answer of each valid example with 2 segments, in order


def _chat_figures(examples: list[ChatExample], short_answer_chars: int) -> _ChatFigures:
    """The checks the strict decoder leaves to us (non-blank content, an assistant turn) and
    the figures of chat examples, many at once: C-level passes over the flattened
    messages, reduced per example with numpy."""
    message_lists = [example.messages for example in examples]
    counts = np.fromiter(map(len, message_lists), np.int64, len(examples))
    messages = list(chain.from_iterable(message_lists))
    contents = [message.content for message in messages]
    total = len(contents)
    roles = np.fromiter(map(_ROLE_CODES.__getitem__, map(type, messages)), np.uint8, total)
    lengths = np.fromiter(map(len, contents), np.int64, total)
    blank = np.fromiter(map(str.isspace, contents), bool, total) | (lengths == 0)
    utf8_lengths, minhash_bytes, byte_texts = _utf8_views(contents, lengths)
    is_assistant = roles == _ASSISTANT
    short = np.zeros(total, dtype=bool)
    answers = np.flatnonzero(is_assistant)
    if answers.size:
        stripped = map(str.strip, map(contents.__getitem__, answers.tolist()))
        short[answers] = np.fromiter(map(len, stripped), np.int64, answers.size) < (
            short_answer_chars
        )

    has_messages = counts > 0
    firsts = (np.cumsum(counts) - counts)[has_messages]

    def per_example(values: np.ndarray) -> np.ndarray:
        summed = np.zeros(len(examples), dtype=np.int64)
        if firsts.size:
            summed[has_messages] = np.add.reduceat(values.astype(np.int64), firsts)
        return summed

    assistants = per_example(is_assistant)
    systems = per_example(roles == _SYSTEM)
    valid = has_messages & (per_example(blank) == 0) & (assistants > 0)
    chars = per_example(lengths)
    tokens = approximate_tokens(chars=chars, utf8_bytes=per_example(utf8_lengths), messages=counts)

    # System prompts are left out of MinHash: whole files share them.
    example_of = np.repeat(np.arange(len(examples)), counts)
    kept = np.flatnonzero(valid[example_of] & (roles != _SYSTEM))
    kept_example = example_of[kept]
    last_turn = np.r_[kept_example[1:] != kept_example[:-1], True][: kept.size]
    # An example whose last turn is an assistant's answer after other turns is hashed as
    # two segments, its prompt and its answer (no shingle spans the two): the example's
    # signature is their bin-wise minimum, the prompt's is kept for conflicts.
    segment_end, segments, final_answers = _segments(contents, roles, kept, last_turn)
    pieces: list[str] = [""] * (2 * kept.size)
    pieces[0::2] = map(byte_texts.__getitem__, kept.tolist())
    pieces[1::2] = map(_TURN_SEPARATORS.__getitem__, segment_end.tolist())
    minhash_lengths = kept
    if kept.size:
        first_turns = np.flatnonzero(np.r_[True, segment_end[:-1]])
        minhash_lengths = np.add.reduceat(minhash_bytes[kept] + 1, first_turns) - 1
    return _ChatFigures(
        valid=valid,
        short=per_example(short) > 0,
        tokens=tokens,
        systems=int(systems[valid].sum()),
        assistants=int(assistants[valid].sum()),
        turns=int(counts[valid].sum()),
        minhash_text="".join(pieces).encode("latin-1"),
        minhash_lengths=minhash_lengths,
        segments=segments,
        answers=final_answers,
    )


def _utf8_views(
    contents: list[str], lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per content: its UTF-8 length, the UTF-8 length of its MinHash text, and that text
    as a one-byte-a-character string.

    MinHash needs UTF-8 bytes. Joined as str, one wide character would widen the whole
    chunk's text (and its encoding) to two or four bytes a character; joined as the
    Latin-1 spelling of each content's UTF-8, the text stays one byte a character.
    Non-ASCII texts are normalised for MinHash (dedup.normalise) unless their own bytes
    hash the same (dedup.needs_normalising: Latin-1 letters); ASCII is folded there."""
    total = len(contents)
    utf8_lengths = lengths.copy()
    wide = np.flatnonzero(~np.fromiter(map(str.isascii, contents), bool, total)).tolist()
    byte_texts = contents
    minhash_bytes = utf8_lengths
    if wide:
        encoded = list(map(str.encode, map(contents.__getitem__, wide)))
        wide_lengths = np.fromiter(map(len, encoded), np.int64, len(wide))
        utf8_lengths[wide] = wide_lengths
        byte_texts = contents.copy()
        for index, text in zip(wide, encoded, strict=True):
            byte_texts[index] = text.decode("latin-1")
        normalised = dedup.needs_normalising(b"".join(encoded), np.cumsum(wide_lengths))
        if normalised.any():
            minhash_bytes = utf8_lengths.copy()
            for index in np.asarray(wide)[normalised].tolist():
                text = dedup.normalise(contents[index]).encode()
                minhash_bytes[index] = len(text)
                byte_texts[index] = text.decode("latin-1")
    return utf8_lengths, minhash_bytes, byte_texts


def _segments(
    contents: list[str], roles: np.ndarray, kept: np.ndarray, last_turn: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Over the kept turns (in order, ``last_turn`` marking each example's last): where a
    MinHash segment ends, the segments of each example, and the split examples' answers."""
    if not kept.size:
        return last_turn, np.zeros(0, np.int64), []
    example_index = np.cumsum(np.r_[True, last_turn[:-1]]) - 1
    answered = roles[kept[last_turn]] == _ASSISTANT
    with_prompt = np.zeros(answered.size, dtype=bool)
    with_prompt[example_index[~last_turn]] = True
    split = answered & with_prompt
    segment_end = last_turn.copy()
    segment_end[:-1] |= last_turn[1:] & ~last_turn[:-1] & split[example_index[:-1]]
    answer_turns = kept[last_turn][split]
    return (
        segment_end,
        1 + split.astype(np.int64),
        list(map(contents.__getitem__, answer_turns.tolist())),
    )


class _LineScanner:
    def __init__(self, settings: ScanSettings, first_line: int, line_count: int) -> None:
        self.settings = settings
        self.max_line_bytes = settings.max_line_bytes
        self.first_line = first_line
        self.formats = np.zeros(line_count, dtype=np.uint8)
        self.tokens = np.zeros(line_count, dtype=np.int32)
        self.exact = np.zeros(line_count, dtype="<u8")
        # Lines scanned one by one, then whole batches: (rows, PAD-joined texts, lengths).
        self.shingle_rows: list[int] = []
        self.shingle_texts: list[bytes] = []
        self.shingle_batches: list[tuple[np.ndarray, bytes, np.ndarray]] = []
        self.segment_counts: list[np.ndarray] = []  # per row of each shingle batch
        self.answers: list[str] = []  # of the rows with two segments, in batch order
        self.result_faults: list[LineFault] = []
        self.fault_count = 0
        self.turns = self.system_turns = self.assistant_turns = 0
        self.short_answer_rows: list[np.ndarray] = []
        self.short_answer_singles: list[int] = []
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

    def scan_all(self, lines: list[bytes], prefer: str, line_pii: pii.ChunkPii | None) -> None:
        """Decode every line; check and measure the chat examples together; then go through
        the lines that need more, one by one and in line order (faults are kept in order)."""
        examples = self._decode_all(lines, prefer)
        chat_rows = [i for i, example in enumerate(examples) if isinstance(example, ChatExample)]
        later: set[int] = set()
        if len(chat_rows) == len(examples):
            self._chat_batch(np.arange(len(examples)), examples, later)
        else:
            for index, example in enumerate(examples):
                if example is None:
                    later.add(index)
                elif type(example) is not ChatExample:
                    if self._accept(index, example):
                        self._typed(index, example)
                    else:
                        later.add(index)
            if chat_rows:
                chats = [examples[i] for i in chat_rows]
                self._chat_batch(np.array(chat_rows, dtype=np.int64), chats, later)
        if line_pii is not None:
            later.update(line_pii.decode)
            later.update(line_pii.findings)
        for index in sorted(later):
            decoded = examples[index]
            if self.formats[index] and decoded is not None:
                self._line_pii(index, decoded, line_pii)
            else:
                prefer = self.scan(index, lines[index], prefer, line_pii)

    def _decode_all(self, lines: list[bytes], prefer: str) -> list[formats.Example | None]:
        decode = formats.DECODERS[prefer].decode
        if max(map(len, lines), default=0) <= self.max_line_bytes:
            try:
                return list(map(decode, lines))
            except _REFUSED:
                pass  # some line is refused or of the other format: decode one by one
        limit = self.max_line_bytes
        return [_decode(raw, prefer) if len(raw) <= limit else None for raw in lines]

    def _chat_batch(self, rows: np.ndarray, examples: list, later: set[int]) -> None:
        figures = _chat_figures(examples, self.settings.short_answer_chars)
        later.update(rows[~figures.valid].tolist())
        valid = np.flatnonzero(figures.valid)
        valid_rows = rows[valid]
        self.formats[valid_rows] = _CHAT_CODE
        self.tokens[valid_rows] = figures.tokens[valid]
        valid_examples = map(examples.__getitem__, valid.tolist())
        keys = b"".join(map(_exact_key, map(_encode, valid_examples)))
        self.exact[valid_rows] = np.frombuffer(keys, dtype="<u8")
        self.system_turns += figures.systems
        self.assistant_turns += figures.assistants
        self.turns += figures.turns
        self.short_answer_rows.append(rows[figures.valid & figures.short])
        self._shingle_batch(valid_rows, figures)
        if self.token_texts is not None:
            for row, index in zip(valid_rows.tolist(), valid.tolist(), strict=True):
                self.token_texts[row] = [m.content for m in examples[index].messages]

    def scan(self, index: int, raw: bytes, prefer: str, line_pii: pii.ChunkPii | None) -> str:
        if len(raw) > self.max_line_bytes:
            self.fault(
                index,
                FaultCode.LINE_TOO_LONG,
                f"line is {len(raw)} bytes; the limit is {self.settings.max_line_bytes}",
            )
            return prefer
        example = _decode(raw, prefer)
        if example is None or not self._accept(index, example):
            # The slow path decides: it names the faults, or accepts what the strict decoder
            # could not type (a repeated key, which keeps its last value in both paths).
            _, faults, example = formats.parse(raw)
            for code, message in faults:
                self.fault(index, code, message)
            if example is None:
                return prefer
            accepted = self._accept(index, example)
            assert accepted, "the slow path accepted a line the checks refuse"
        self._typed(index, example)
        self._line_pii(index, example, line_pii)
        return formats.format_of(example)

    def _typed(self, index: int, example: formats.Example) -> None:
        self.formats[index] = _FORMAT_CODES[formats.format_of(example)]
        self.exact[index] = int.from_bytes(_exact_key(_encode(example)), "little")

    def _line_pii(
        self, index: int, example: formats.Example, line_pii: pii.ChunkPii | None
    ) -> None:
        if line_pii is not None:
            raw_findings = line_pii.findings.get(index)
            if index in line_pii.decode or (raw_findings and self.settings.pii_action == "redact"):
                self._pii(index, example)
            elif raw_findings:
                self._record_pii(index, [finding.kind for finding in raw_findings])

    def _accept(self, index: int, example: formats.Example) -> bool:
        """Checks the strict decoder leaves to us; records the line's figures if it passes."""
        if isinstance(example, ChatExample):
            return self._chat(index, example)
        if isinstance(example, PreferenceExample):
            return self._preference(index, example)
        return self._prompt_completion(index, example)

    def _chat(self, index: int, example: ChatExample) -> bool:
        figures = _chat_figures([example], self.settings.short_answer_chars)
        if not figures.valid[0]:
            return False
        self.system_turns += figures.systems
        self.assistant_turns += figures.assistants
        self.turns += figures.turns
        if figures.short[0]:
            self.short_answer_singles.append(index)
        self.tokens[index] = figures.tokens[0]
        if self.token_texts is not None:
            self.token_texts[index] = [message.content for message in example.messages]
        rows = np.array([index], dtype=np.int64)
        self._shingle_batch(rows, figures)
        return True

    def _shingle_batch(self, rows: np.ndarray, figures: _ChatFigures) -> None:
        self.shingle_batches.append((rows, figures.minhash_text, figures.minhash_lengths))
        self.segment_counts.append(figures.segments)
        self.answers.extend(figures.answers)

    def _prompt_completion(self, index: int, example: PromptCompletionExample) -> bool:
        prompt, completion = example.prompt, example.completion
        if formats.is_blank(prompt) or formats.is_blank(completion):
            return False
        if len(completion.strip()) < self.settings.short_answer_chars:
            self.short_answer_singles.append(index)
        text = prompt + "\n" + completion
        chars = len(text)
        utf8 = text.encode()
        self.tokens[index] = approximate_tokens(chars=chars, utf8_bytes=len(utf8), messages=0)
        if self.token_texts is not None:
            self.token_texts[index] = [prompt, completion]
        self.shingle_rows.append(index)
        self.shingle_texts.append(utf8)
        return True

    def _preference(self, index: int, example: PreferenceExample) -> bool:
        """A preference example: the input's turns and both outputs are measured, shingled
        (system turns left out, as in chat) and counted; the preferred output is the answer
        the short-answer check looks at."""
        if not formats.preference_valid(example):
            return False
        messages = example.input.messages
        systems = sum(type(message) is SystemMessage for message in messages)
        assistants = sum(type(message) is OutputMessage for message in messages) + 2
        self.system_turns += systems
        self.assistant_turns += assistants
        self.turns += len(messages) + 2
        preferred = example.preferred_output[0].content
        if len(preferred.strip()) < self.settings.short_answer_chars:
            self.short_answer_singles.append(index)
        contents = formats.contents_of(example)
        chars = sum(map(len, contents))
        utf8 = sum(len(content.encode()) for content in contents)
        self.tokens[index] = approximate_tokens(
            chars=chars, utf8_bytes=utf8, messages=len(contents)
        )
        if self.token_texts is not None:
            self.token_texts[index] = contents
        self.shingle_rows.append(index)
        self.shingle_texts.append(_preference_shingle_text(example, contents).encode())
        return True

    def _pii(self, index: int, example: formats.Example) -> None:
        contents = formats.contents_of(example)
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
        if isinstance(example, PreferenceExample):
            new: formats.Example = formats.with_contents(example, redacted)
            assert isinstance(new, PreferenceExample)
            shingle_text = _preference_shingle_text(new, redacted)
        elif isinstance(example, ChatExample):
            messages = []
            for message, content in zip(example.messages, redacted, strict=True):
                messages.append(_with_content(message, content))
            new = ChatExample(messages=messages)
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
        prompt_signatures = answer_keys = None
        answers = structure.Observed()
        if self.shingle_batches:
            rows = np.concatenate([batch[0] for batch in self.shingle_batches])
            if rows.size:
                segment_signatures = dedup.padded_signatures(
                    dedup.PAD + b"".join(batch[1] for batch in self.shingle_batches),
                    np.concatenate([batch[2] for batch in self.shingle_batches]),
                )
                counts = np.concatenate(self.segment_counts)
                example, split, prompts, answer_signatures = _split_segments(
                    segment_signatures, counts
                )
                signatures[rows] = example
                if split.size:
                    prompt_signatures, answer_keys, answers = self._prompt_results(
                        line_count, rows[split], prompts, answer_signatures
                    )
        redacted_signatures: dict[int, np.ndarray] = {}
        if self.redacted_texts:
            redacted_rows = list(self.redacted_texts)
            computed = dedup.signatures([self.redacted_texts[r] for r in redacted_rows])
            redacted_signatures = {row: computed[i] for i, row in enumerate(redacted_rows)}
        if self.token_texts is not None:
            self._count_tokens_exactly()
        short_rows = np.sort(
            np.concatenate([*self.short_answer_rows, np.array(self.short_answer_singles, int)])
        )
        return ChunkResult(
            first_line=self.first_line,
            line_count=line_count,
            formats=self.formats,
            tokens=self.tokens,
            exact=self.exact,
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
            short_answers=Capped(
                int(short_rows.size), (short_rows[:SHOWN] + self.first_line).tolist()
            ),
            pii_findings=self.pii_findings,
            pii_lines=self.pii_lines,
            pii_line_count=self.pii_line_count,
            redacted_lines=self.redacted_lines,
            redacted_exact=self.redacted_exact,
            redacted_signatures=redacted_signatures,
            answer_keys=answer_keys,
            prompt_signatures=prompt_signatures,
            answers=answers,
        )

    def _prompt_results(
        self, line_count: int, rows: np.ndarray, prompts: np.ndarray, answers: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, structure.Observed]:
        """Per line: the prompt's signature and the answer's key (conflicts), and what the
        answers look like (structure); ``rows`` are the lines with a prompt and answer."""
        keys = np.zeros(line_count, dtype="<u8")
        keys[rows] = conflicts.answer_keys(answers)
        prompt_signatures = np.full((line_count, dedup.NUM_BINS), dedup.EMPTY_BIN, np.uint16)
        prompt_signatures[rows] = prompts
        order = np.argsort(rows, kind="stable")
        lines = (rows[order] + self.first_line).tolist()
        observed = structure.observe(lines, [self.answers[i] for i in order.tolist()])
        return prompt_signatures, keys, observed

    def _count_tokens_exactly(self) -> None:
        assert self.token_texts is not None and self.settings.tokenizer_file is not None
        counter = BpeTokenCounter(self.settings.tokenizer_file)
        counts = iter(counter.count([text for texts in self.token_texts for text in texts]))
        for index, texts in enumerate(self.token_texts):
            if texts:
                chat = self.formats[index] in _MESSAGE_CODES
                markers = TOKENS_PER_MESSAGE * len(texts) if chat else 0
                self.tokens[index] = sum(next(counts) for _ in texts) + markers


def _split_segments(
    segments: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From the signatures of MinHash segments (one or two an example, ``counts``): each
    example's signature (the bin-wise minimum of its segments), the examples hashed as two
    segments, and their prompts' and answers' signatures."""
    if counts.size and bool((counts == 2).all()):  # every example a prompt and an answer
        pairs = segments.reshape(-1, 2, segments.shape[1])
        prompts, answers = pairs[:, 0], pairs[:, 1]
        return np.minimum(prompts, answers), np.arange(counts.size), prompts, answers
    firsts = np.cumsum(counts) - counts
    example = segments[firsts]
    split = np.flatnonzero(counts == 2)
    prompts = example[split]
    answers = segments[firsts[split] + 1]
    example[split] = np.minimum(prompts, answers)
    return example, split, prompts, answers


def _preference_shingle_text(example: PreferenceExample, contents: list[str]) -> str:
    """What MinHash sees of a preference example: its non-system input turns and both
    outputs, a newline between them (the same separator as chat turns)."""
    systems = [type(message) is SystemMessage for message in example.input.messages]
    return "\n".join(
        content
        for content, system in zip(contents, [*systems, False, False], strict=True)
        if not system
    )


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
    scanner.scan_all(lines, prefer, chunk_pii)
    return scanner.result(len(lines))
