"""Exact and near duplicates, inside one file and across two, from a compact fingerprint.

Exact: an example's key is the first 8 bytes of BLAKE2b over its canonical JSON encoding.

Near: MinHash by one-permutation hashing (Li, Owen & Zhang 2012), vectorised with numpy
over a whole chunk of examples at once (``datasketch`` hashes each shingle in Python and
ran at 2.5 MB/s here, far below the upload budget). The example's user and assistant text
(system prompts are shared by whole files and would make every pair look alike) is
normalised first: Unicode NFKC, case folded, punctuation and whitespace collapsed to one
space, digits kept. A shingle is ``SHINGLE_WORDS`` consecutive words (a word is hashed
from its first and last 8 bytes and its length); the measurements in
tests/ingest/test_near_duplicates.py chose two. Each shingle is hashed once; the top 6
bits pick one of 64 bins and the low 16 bits are the value kept when it is the bin's
minimum. Similarity is estimated as matching non-empty
bins over bins non-empty in either (the OPH estimator). Bins are banded 16 x 4 for
locality-sensitive hashing: a band key is four 16-bit bins packed into one uint64, so two
examples become a candidate pair when any band matches (about 50% similarity), and every
candidate is then verified against the threshold on all 64 bins.

The fingerprint artifact (``<sha256>.fingerprint`` beside the file) holds, for every line,
the exact key and the 16 band keys, stored band-major so a band is one contiguous read:

    header (64 bytes) | exact: uint64[n] | band 0: uint64[n] | ... | band 15: uint64[n]

136 bytes a line. Overlap at job time reads two artifacts and never rescans either file.
Invalid lines have exact key 0 and empty bands.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import numpy as np

NUM_BINS: Final = 64
BANDS: Final = 16
ROWS_PER_BAND: Final = NUM_BINS // BANDS
SHINGLE_BYTES: Final = 16  # the padding between texts (>= 8: word reads stay inside)
SHINGLE_WORDS: Final = 2  # words a shingle (tests/ingest/test_near_duplicates.py chose it)
EMPTY_BIN: Final = 0xFFFF
EMPTY_BAND: Final = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
DEFAULT_THRESHOLD: Final = 0.8
SHOWN: Final = 100

MAGIC: Final = b"TGFP"
FORMAT_VERSION: Final = 1
_HEADER = struct.Struct("<4sHHHHHxxQ")  # magic, version, bins, bands, shingle words, hash id, n
HEADER_BYTES: Final = 64
HASH_ID: Final = 2  # the mixing below; a change of hash must change this id
# 1: 16-byte shingles of ASCII-lowered text. 2: normalised text, word shingles.

_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_S29, _S32, _S58 = np.uint64(29), np.uint64(32), np.uint64(58)
_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)  # low n bytes
PAD: Final = b"\x00" * SHINGLE_BYTES  # between texts: no shingle spans two
# ASCII upper -> lower, punctuation and control whitespace -> space (words are runs of the
# rest, so runs of spaces count as one): shingles ignore case, punctuation and layout.
# Digits are kept. Non-ASCII text is normalised first (``normalise``). The table defines
# the folding; ``_fold`` computes the same with numpy (tests/ingest/test_fast_paths.py).
_PUNCTUATION = bytes(c for c in range(33, 127) if not chr(c).isalnum())
_FOLD = bytes.maketrans(
    bytes(range(65, 91)) + b"\t\n\r\x0b\x0c" + _PUNCTUATION,
    bytes(range(97, 123)) + b" " * (5 + len(_PUNCTUATION)),
)
_NOT_AN_EXAMPLE_KEY = bytes(8)
_CANDIDATES_PER_KEY: Final = 8
_VERIFY_BLOCK: Final = 1 << 16
_BLOCK_BYTES: Final = 1 << 17


def fingerprint_path(data_path: Path) -> Path:
    return data_path.with_name(data_path.name + ".fingerprint")


def exact_key(canonical: bytes) -> bytes:
    """8 bytes; the all-zero key is reserved for lines that are not examples."""
    digest = hashlib.blake2b(canonical, digest_size=8).digest()
    return digest if digest != _NOT_AN_EXAMPLE_KEY else b"\x00" * 7 + b"\x01"


def exact_keys_array(keys: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(keys), dtype="<u8").copy() if keys else np.zeros(0, "<u8")


def normalise(text: str) -> str:
    """What MinHash sees of a non-ASCII text: Unicode NFKC, case folded. Punctuation and
    whitespace are folded inside the hashing, on the bytes of every text at once: ASCII
    as the byte table ``_FOLD`` says, and the punctuation of Latin-1 (U+00A1-00BF), General
    Punctuation (U+2000-206F) and CJK punctuation (U+3000-303F) by ``_non_ascii_fold``
    (a regular expression per text cost 15% of the scan)."""
    return unicodedata.normalize("NFKC", text).casefold()


def _latin1_as_is() -> np.ndarray:
    """Per character U+0080-00FF: True where NFKC keeps it and case folding keeps it or,
    for a capital letter, lowers it to the character 0x20 above (which the hashing does
    itself, ``_non_ascii_fold``); False for the few that change otherwise (a no-break
    space, superscripts, fractions, spacing accents, ordinals, the micro sign, sharp s)."""
    kept = np.zeros(128, dtype=bool)
    for code in range(0x80, 0x100):
        lowered = chr(code).casefold()
        capital = lowered == chr(code + 0x20)
        kept[code - 0x80] = unicodedata.normalize("NFKC", chr(code)) == chr(code) and (
            lowered == chr(code) or capital
        )
    return kept


_LATIN1_AS_IS: Final = _latin1_as_is()


def needs_normalising(utf8: bytes, ends: np.ndarray) -> np.ndarray:
    """Per text of ``utf8`` (texts back to back, ``ends`` where each ends): whether MinHash
    must see it ``normalise``d, or its own bytes hash the same (ASCII and the Latin-1
    characters of ``_latin1_as_is``: NFKC keeps such a text and case folding only lowers
    letters, which the hashing does itself). Checked for all texts at once, per character."""
    raw = np.frombuffer(utf8, dtype=np.uint8)
    lead = np.flatnonzero(raw >= 0xC0)  # the first byte of each non-ASCII character
    first = raw[lead]
    latin1 = first <= 0xC3  # U+0080-00FF (C0 and C1 never start a character)
    as_is = latin1.copy()
    code = (first[latin1] & 0x03).astype(np.int64) << 6 | (raw[lead[latin1] + 1] & 0x3F)
    as_is[latin1] = _LATIN1_AS_IS[code - 0x80]
    normalised = np.zeros(len(ends), dtype=bool)
    normalised[np.searchsorted(ends, lead[~as_is], side="right")] = True
    return normalised


def _non_ascii_fold(raw: np.ndarray) -> np.ndarray:
    """``raw`` (UTF-8) with the punctuation blocks named in ``normalise`` made spaces and
    the Latin-1 capitals (U+00C0-00DE but U+00D7) lowered, as case folding does: texts
    that are not ``normalise``d are ASCII or the Latin-1 of ``needs_normalising``, and
    normalised texts hold no capitals."""
    lead = np.flatnonzero(raw[:-2] >= 0xC2)  # the first byte of each non-ASCII character
    if not lead.size:
        return raw
    first, second = raw[lead], raw[lead + 1]
    three = lead[
        ((first == 0xE2) & ((second == 0x80) | (second == 0x81)))
        | ((first == 0xE3) & (second == 0x80))
    ]
    two = lead[(first == 0xC2) & (second >= 0xA1) & (second <= 0xBF)]
    capitals = lead[(first == 0xC3) & (second <= 0x9E) & (second != 0x97)]
    if not (three.size or two.size or capitals.size):
        return raw
    raw = raw.copy()
    for width, starts in ((3, three), (2, two)):
        for offset in range(width):
            raw[starts + offset] = 32
    raw[capitals + 1] += 0x20
    return raw


def normalised_bytes(text: bytes) -> bytes:
    return text if text.isascii() else normalise(text.decode()).encode()


def signatures(texts: Sequence[bytes]) -> np.ndarray:
    """One-permutation MinHash of each UTF-8 text: uint16[len(texts), NUM_BINS]."""
    texts = [normalised_bytes(text) for text in texts]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    return padded_signatures(PAD + PAD.join(texts) + PAD, lengths)


def padded_signatures(padded: bytes, lengths: np.ndarray) -> np.ndarray:
    """``signatures`` of texts laid out as ``PAD + text + PAD + text + ... + PAD``, the
    layout a caller can build in one join; ``lengths`` are the texts' byte lengths.

    Works through blocks of about ``_BLOCK_BYTES``: the temporaries of a whole chunk (tens
    of MB) cost more in page faults and cache misses than the arithmetic on them."""
    count = len(lengths)
    result = np.full((count, NUM_BINS), EMPTY_BIN, dtype=np.uint16)
    offsets = np.cumsum(lengths + SHINGLE_BYTES)  # where each text's padding ends
    first = 0
    while first < count:
        start = int(offsets[first - 1]) if first else 0
        last = max(first + 1, int(np.searchsorted(offsets, start + _BLOCK_BYTES, "right")))
        last = min(last, count)
        end = int(offsets[last - 1]) + SHINGLE_BYTES
        _block_signatures(padded[start:end], lengths[first:last], result[first:last])
        first = last
    return result


def _block_signatures(padded: bytes, lengths: np.ndarray, result: np.ndarray) -> None:
    count = len(lengths)
    raw = np.frombuffer(padded, dtype=np.uint8)
    if not padded.isascii():
        raw = _non_ascii_fold(raw)
    space, folded = _fold(raw)
    # The block starts and ends with padding, so word edges alternate: start, end, ...
    edges = np.flatnonzero(space[1:] != space[:-1])
    if not edges.size:
        return
    edges += 1
    starts, ends = edges[0::2], edges[1::2]  # ends: one past each word's last byte
    word, scratch = _word_hashes(folded, starts, ends)
    # A shingle is SHINGLE_WORDS consecutive words of one text (fewer at a text's end).
    text_ends = np.cumsum(lengths + SHINGLE_BYTES)  # where each text's padding ends
    per_text = np.diff(np.searchsorted(starts, text_ends), prepend=0)
    text_last = (np.cumsum(per_text) - 1)[per_text > 0]  # each text's last word
    mixed = _shingle_hashes(word, text_last, scratch)
    mixed *= _K2
    np.right_shift(mixed, _S32, out=scratch)
    mixed ^= scratch
    slots = np.right_shift(mixed, _S58, out=scratch).view(np.int64)
    slots += np.repeat(np.arange(0, count * NUM_BINS, NUM_BINS, dtype=np.int64), per_text)
    values = mixed.astype(np.uint16)
    np.minimum(values, EMPTY_BIN - 1, out=values)
    np.minimum.at(result.reshape(-1), slots, values)


def _fold(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per byte of UTF-8 ``raw``: whether it separates words (anything but an ASCII letter
    or digit, DEL, or a byte of a non-ASCII character), and the bytes with ASCII letters
    lowered. A separator's own value is never hashed. The same words and bytes as the
    byte table ``_FOLD`` gives, in a few vectorised passes instead of a lookup a byte."""
    scratch = raw | np.uint8(32)  # ASCII letters lowered (other bytes changed too)
    np.subtract(scratch, np.uint8(97), out=scratch)
    space = np.greater_equal(scratch, 26)  # not a letter
    np.subtract(raw, np.uint8(48), out=scratch)
    space &= np.greater_equal(scratch, 10)  # nor a digit
    space &= raw < 127  # nor DEL, nor a byte of a non-ASCII character
    # raw | 32 below 128 (lowers letters, keeps digits and DEL), raw itself from 128 up
    np.bitwise_and(raw, np.uint8(0x80), out=scratch)
    np.right_shift(scratch, np.uint8(2), out=scratch)
    np.bitwise_xor(scratch, np.uint8(32), out=scratch)
    np.bitwise_or(raw, scratch, out=scratch)
    return space, scratch


def _word_hashes(
    folded: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A hash of each word from its first and last 8 bytes and its length, and a scratch
    array of the same size."""
    # Overlapping uint64 views at a stride of one byte: a word's first and last 8 bytes are
    # read straight from the buffer without copying it (the padding keeps reads inside).
    words = np.ndarray((len(folded) - 7,), dtype="<u8", buffer=folded, strides=(1,))
    size = ends - starts
    word = words[starts]
    word &= _MASKS.take(size, mode="clip")  # the low min(size, 8) bytes
    word *= _K1
    long = np.flatnonzero(size > 8)
    word[long] += words[ends[long] - 8]  # the text's leading padding keeps this inside
    word ^= size.view(np.uint64)
    scratch = np.empty_like(word)
    np.right_shift(word, _S32, out=scratch)
    word ^= scratch
    word *= _K2
    return word, scratch


def _shingle_hashes(word: np.ndarray, text_last: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Each word's hash mixed with those of the SHINGLE_WORDS - 1 words after it in its
    text (none past the text's last word): ``mixed * K1 + following``, where a following
    word of another text counts as 0. It is added everywhere, then taken off again where
    it crossed a text's end (uint64 arithmetic wraps, so that is exact)."""
    words = SHINGLE_WORDS
    if words == 1:
        return word
    n = word.size
    mixed = word * _K1
    for step in range(1, words):
        if step > 1:
            mixed *= _K1
        mixed[:-step] += word[step:]
        crossed = text_last if step == 1 else unique_sorted(text_last - np.arange(step)[:, None])
        crossed = crossed[(crossed >= 0) & (crossed < n - step)]
        mixed[crossed] -= word[crossed + step]
        np.right_shift(mixed, _S29, out=scratch)
        mixed ^= scratch
    return mixed


def similarity(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of row pairs of two uint16[m, NUM_BINS] signatures."""
    equal = left == right
    both_empty = equal & (left == EMPTY_BIN)
    equal ^= both_empty  # equal and not empty
    matches = _true_per_row(equal)
    union = NUM_BINS - _true_per_row(both_empty)
    return np.where(union > 0, matches / np.maximum(union, 1), 0.0)


_BYTE_SUM = np.uint64(0x0101_0101_0101_0101)  # times it, the top byte sums all eight


def _true_per_row(mask: np.ndarray) -> np.ndarray:
    """int64 count of True per row of a C-contiguous bool[m, NUM_BINS]: eight bools are
    one uint64 of 0/1 bytes; the row's eight words are added (bytes <= 8, no carry), then
    the bytes summed by a multiply (<= 64 fits the top byte). A reduction along the rows'
    64 elements costs several times more."""
    words = mask.view(np.uint64)
    total = words[:, 0].copy()
    for column in range(1, NUM_BINS // 8):
        total += words[:, column]
    total *= _BYTE_SUM
    total >>= np.uint64(56)
    return total.astype(np.int64)


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by sorting: numpy's default hash table took 36 ms for 50,000
    int64 pair ids here, a sort 0.2 ms."""
    ordered = np.sort(values, axis=None)
    if ordered.size < 2:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


# --- the artifact --------------------------------------------------------------------------


class FingerprintWriter:
    """Streams rows to a temporary file; ``finish`` lays them out band-major and renames."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        # Open for the writer's lifetime (appended per chunk); finish/discard close them.
        self._exact = tempfile.NamedTemporaryFile(  # noqa: SIM115
            dir=directory, prefix=".fp-exact-", delete=False
        )
        self._rows = tempfile.NamedTemporaryFile(  # noqa: SIM115
            dir=directory, prefix=".fp-rows-", delete=False
        )
        self.count = 0

    def append(self, exact: np.ndarray, rows: np.ndarray) -> None:
        assert len(exact) == len(rows)
        self._exact.write(np.ascontiguousarray(exact, dtype="<u8").tobytes())
        self._rows.write(np.ascontiguousarray(rows, dtype="<u2").tobytes())
        self.count += len(exact)

    def finish(self, path: Path, *, durable: bool = True) -> Path:
        """Lay the rows out at ``path``; ``durable=False`` skips the fsync (an artifact
        removed once read)."""
        self._exact.close()
        self._rows.close()
        count = self.count
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".fp-")
        try:
            header = _HEADER.pack(
                MAGIC, FORMAT_VERSION, NUM_BINS, BANDS, SHINGLE_WORDS, HASH_ID, count
            )
            os.pwrite(fd, header.ljust(HEADER_BYTES, b"\x00"), 0)
            with open(self._exact.name, "rb") as exact:
                offset = HEADER_BYTES
                while block := exact.read(1 << 22):
                    os.pwrite(fd, block, offset)
                    offset += len(block)
            band_base = HEADER_BYTES + 8 * count
            block_rows = 1 << 15
            with open(self._rows.name, "rb") as rows:
                for first in range(0, count, block_rows):
                    read = np.fromfile(
                        rows, dtype="<u8", count=min(block_rows, count - first) * BANDS
                    )
                    bands = read.reshape(-1, BANDS)
                    for band in range(BANDS):
                        os.pwrite(
                            fd,
                            np.ascontiguousarray(bands[:, band]).tobytes(),
                            band_base + 8 * (band * count + first),
                        )
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.close(fd)
        os.replace(temporary, path)
        self._remove_temporaries()
        return path

    def discard(self) -> None:
        self._exact.close()
        self._rows.close()
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        for name in (self._exact.name, self._rows.name):
            Path(name).unlink(missing_ok=True)


class FingerprintError(ValueError):
    code = "invalid_fingerprint"


class Fingerprint:
    """A fingerprint artifact opened for reading; columns are read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            header = handle.read(HEADER_BYTES)
        try:
            magic, version, bins, bands, shingle, hash_id, count = _HEADER.unpack_from(header)
        except struct.error as exc:
            raise FingerprintError("not a fingerprint artifact") from exc
        if (magic, version, bins, bands, shingle, hash_id) != (
            MAGIC,
            FORMAT_VERSION,
            NUM_BINS,
            BANDS,
            SHINGLE_WORDS,
            HASH_ID,
        ):
            raise FingerprintError("fingerprint made with other settings; recompute it")
        if self.path.stat().st_size != HEADER_BYTES + 8 * count * (1 + BANDS):
            raise FingerprintError("fingerprint artifact is truncated")
        self.count = count

    def exact(self) -> np.ndarray:
        return np.fromfile(self.path, dtype="<u8", count=self.count, offset=HEADER_BYTES)

    def band(self, band: int) -> np.ndarray:
        offset = HEADER_BYTES + 8 * self.count * (1 + band)
        return np.fromfile(self.path, dtype="<u8", count=self.count, offset=offset)

    def signatures(self, rows: np.ndarray) -> np.ndarray:
        """uint16[len(rows), NUM_BINS] for the given row indices (random reads only)."""
        table = np.memmap(
            self.path, dtype="<u8", mode="r", offset=HEADER_BYTES, shape=(1 + BANDS, self.count)
        )
        try:
            picked = np.stack([table[1 + band][rows] for band in range(BANDS)], axis=1)
        finally:
            del table
        return np.ascontiguousarray(picked).view(np.uint16)


class FingerprintReader(Protocol):
    """What the findings read of a fingerprint: a ``Fingerprint`` or a ``MemoryFingerprint``."""

    count: int

    def exact(self) -> np.ndarray: ...

    def band(self, band: int) -> np.ndarray: ...

    def signatures(self, rows: np.ndarray) -> np.ndarray: ...


class MemoryFingerprint:
    """``Fingerprint``'s reading side over rows held in memory (read-only arrays)."""

    def __init__(self, exact: np.ndarray, rows: np.ndarray) -> None:
        assert len(exact) == len(rows) and rows.shape[1:] == (NUM_BINS,)
        self.count = len(exact)
        self._exact = np.ascontiguousarray(exact, dtype="<u8")
        self._rows = np.ascontiguousarray(rows, dtype="<u2")
        self._exact.flags.writeable = self._rows.flags.writeable = False
        self._bands = self._rows.view("<u8")  # [count, BANDS]: a band key is 4 bins

    def exact(self) -> np.ndarray:
        return self._exact

    def band(self, band: int) -> np.ndarray:
        return self._bands[:, band]

    def signatures(self, rows: np.ndarray) -> np.ndarray:
        return np.take(self._rows, rows, axis=0)  # several times faster than rows[...]


class TemporaryFingerprint:
    """Rows of a fingerprint needed only while an upload is processed (the prompts that
    conflicts read): in memory up to ``memory_rows`` rows, beyond that streamed to a
    ``FingerprintWriter`` in ``directory``, so memory stays flat however large the file.
    ``open()`` gives the reader; ``discard()`` removes whatever was written."""

    def __init__(self, directory: Path, *, memory_rows: int = 1 << 15) -> None:
        self.directory = Path(directory)
        self.memory_rows = memory_rows
        self.count = 0
        self._exact: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._writer: FingerprintWriter | None = None
        self._path: Path | None = None

    def append(self, exact: np.ndarray, rows: np.ndarray) -> None:
        assert len(exact) == len(rows)
        if self._writer is None and self.count + len(exact) > self.memory_rows:
            self._writer = FingerprintWriter(self.directory)
            for held_exact, held_rows in zip(self._exact, self._rows, strict=True):
                self._writer.append(held_exact, held_rows)
            self._exact, self._rows = [], []
        if self._writer is None:
            self._exact.append(np.asarray(exact, dtype="<u8"))
            self._rows.append(np.asarray(rows, dtype="<u2"))
        else:
            self._writer.append(exact, rows)
        self.count += len(exact)

    def open(self) -> FingerprintReader:
        if self._writer is None:
            if not self._exact:
                return MemoryFingerprint(np.zeros(0, "<u8"), np.zeros((0, NUM_BINS), "<u2"))
            return MemoryFingerprint(np.concatenate(self._exact), np.concatenate(self._rows))
        fd, name = tempfile.mkstemp(dir=self.directory, prefix=".fp-temporary-")
        os.close(fd)
        self._path = Path(name)
        return Fingerprint(self._writer.finish(self._path, durable=False))

    def discard(self) -> None:
        self._exact, self._rows = [], []
        if self._writer is not None:
            self._writer.discard()
        if self._path is not None:
            self._path.unlink(missing_ok=True)


# --- findings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicatePairs:
    """Lines that repeat an earlier line (or a line of another file): (line, of_line,
    similarity) for the first ``SHOWN`` and the total count. Lines are 1-based."""

    count: int
    pairs: list[tuple[int, int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "pairs": [
                {"line": a, "of_line": b, "similarity": round(s, 3)} for a, b, s in self.pairs
            ],
        }


def _first_partner(later: np.ndarray, earlier: np.ndarray, scores: np.ndarray) -> DuplicatePairs:
    """For each distinct ``later`` row, its smallest ``earlier`` partner."""
    if later.size == 0:
        return DuplicatePairs(0)
    order = np.lexsort((earlier, later))
    later, earlier, scores = later[order], earlier[order], scores[order]
    first = np.r_[True, later[1:] != later[:-1]]
    later, earlier, scores = later[first], earlier[first], scores[first]
    shown = [
        (int(a) + 1, int(b) + 1, float(s))
        for a, b, s in zip(later[:SHOWN], earlier[:SHOWN], scores[:SHOWN], strict=True)
    ]
    return DuplicatePairs(int(later.size), shown)


def exact_duplicates(exact: np.ndarray) -> DuplicatePairs:
    """Rows whose key equals an earlier row's (invalid rows, key 0, excluded)."""
    rows = np.flatnonzero(exact != 0)
    if rows.size < 2:
        return DuplicatePairs(0)
    keys = exact[rows]
    order = np.argsort(keys, kind="stable")
    keys, rows = keys[order], rows[order]
    repeat = np.r_[False, keys[1:] == keys[:-1]]
    run_first = np.maximum.accumulate(np.where(~repeat, np.arange(rows.size), 0))
    later, earlier = rows[repeat], rows[run_first[repeat]]
    return _first_partner(later, earlier, np.ones(later.size))


def _verified(
    left_fp: FingerprintReader,
    right_fp: FingerprintReader,
    left: np.ndarray,
    right: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep_left, keep_right, keep_scores = [], [], []
    for first in range(0, left.size, _VERIFY_BLOCK):
        a, b = left[first : first + _VERIFY_BLOCK], right[first : first + _VERIFY_BLOCK]
        scores = similarity(left_fp.signatures(a), right_fp.signatures(b))
        passed = scores >= threshold
        keep_left.append(a[passed])
        keep_right.append(b[passed])
        keep_scores.append(scores[passed])
    if not keep_left:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    return np.concatenate(keep_left), np.concatenate(keep_right), np.concatenate(keep_scores)


def near_duplicates(
    fingerprint: Fingerprint, *, threshold: float = DEFAULT_THRESHOLD
) -> DuplicatePairs:
    """Lines similar (>= threshold, estimated) to an earlier line but not equal to one."""
    exact = fingerprint.exact()
    considered = exact != 0
    repeats = exact_duplicates(exact)
    if repeats.count:
        rows = np.flatnonzero(exact != 0)
        _, first_index = np.unique(exact[rows], return_index=True)
        considered[:] = False
        considered[rows[first_index]] = True

    def candidates_in(band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = fingerprint.band(band)
        rows = np.flatnonzero(considered & (keys != EMPTY_BAND))
        keys = keys[rows]
        order = np.argsort(keys)
        keys, rows = keys[order], rows[order]
        same = keys[1:] == keys[:-1]
        if not same.any():
            return _NO_PAIRS
        # Within a bucket, each member is paired with its neighbour and with the bucket's
        # first member: linear in the bucket's size, however large it grows.
        positions = np.arange(rows.size)
        run_first = np.maximum.accumulate(np.where(np.r_[True, ~same], positions, 0))
        follower = np.flatnonzero(np.r_[False, same])
        one = np.concatenate([rows[follower - 1], rows[run_first[follower]]])
        other = np.concatenate([rows[follower], rows[follower]])
        earlier, later = np.minimum(one, other), np.maximum(one, other)
        pair_ids = unique_sorted(later.astype(np.int64) * fingerprint.count + earlier)
        later, earlier = pair_ids // fingerprint.count, pair_ids % fingerprint.count
        return _verified(fingerprint, fingerprint, later, earlier, threshold)

    return _first_partner(*_gather(_per_band(candidates_in)))


_Result = TypeVar("_Result")
_NO_PAIRS = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))


def _per_band(work: Callable[[int], _Result]) -> list[_Result]:
    """Bands are independent and numpy sorts without the GIL: two threads, two cores."""
    with ThreadPoolExecutor(max_workers=2) as threads:
        return list(threads.map(work, range(BANDS)))


def _gather(parts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))  # type: ignore[return-value]


@dataclass(frozen=True)
class Overlap:
    """Lines of one file (``probe``) that repeat lines of another (``reference``)."""

    exact: DuplicatePairs
    near: DuplicatePairs
    threshold: float
    probe_examples: int

    @property
    def lines(self) -> int:
        return self.exact.count + self.near.count

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "probe_examples": self.probe_examples,
            "exact": self.exact.to_dict(),
            "near": self.near.to_dict(),
        }


def overlap(
    reference: Fingerprint, probe: Fingerprint, *, threshold: float = DEFAULT_THRESHOLD
) -> Overlap:
    """Which probe lines (e.g. validation) repeat reference lines (e.g. training), exactly or
    nearly. A probe line in a band bucket is checked against up to eight reference lines of
    that bucket, in file order, in each of the 16 bands."""
    reference_exact, probe_exact = reference.exact(), probe.exact()
    probe_valid = probe_exact != 0
    ref_valid_keys = unique_sorted(reference_exact[reference_exact != 0])
    found = probe_valid & np.isin(probe_exact, ref_valid_keys)
    probe_rows = np.flatnonzero(found)
    ref_sorted_order = np.argsort(reference_exact, kind="stable")
    ref_sorted = reference_exact[ref_sorted_order]
    partner = ref_sorted_order[np.searchsorted(ref_sorted, probe_exact[probe_rows])]
    exact = _first_partner(probe_rows, partner, np.ones(probe_rows.size))

    near_probe = probe_valid & ~found
    reference_valid = reference_exact != 0

    def candidates_in(band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ref_keys = reference.band(band)
        ref_rows = np.flatnonzero((ref_keys != EMPTY_BAND) & reference_valid)
        ref_keys = ref_keys[ref_rows]
        order = np.argsort(ref_keys, kind="stable")
        ref_keys, ref_rows = ref_keys[order], ref_rows[order]
        probe_keys = probe.band(band)
        rows = np.flatnonzero(near_probe & (probe_keys != EMPTY_BAND))
        if rows.size == 0 or ref_keys.size == 0:
            return _NO_PAIRS
        keys = probe_keys[rows]
        lo = np.searchsorted(ref_keys, keys, side="left")
        hi = np.searchsorted(ref_keys, keys, side="right")
        counts = np.minimum(hi - lo, _CANDIDATES_PER_KEY)
        if not counts.any():
            return _NO_PAIRS
        probe_side = np.repeat(rows, counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        ref_side = ref_rows[np.repeat(lo, counts) + offsets]
        return _verified(probe, reference, probe_side, ref_side, threshold)

    near = _first_partner(*_gather(_per_band(candidates_in)))
    return Overlap(exact, near, threshold, int(probe_valid.sum()))
