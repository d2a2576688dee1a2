"""The fast paths of the upload checks give what their plain definitions give: MinHash
against a per-word Python version of the hash, the vectorised byte folding against the
table ``dedup._FOLD``, unnormalised Latin-1 text against normalised text, the in-memory
prompt fingerprint against the file, and the counting helpers against numpy's."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from ingest import conflicts, dedup, structure

_MASK64 = (1 << 64) - 1
# What ``dedup._non_ascii_fold`` makes spaces: Latin-1, General and CJK punctuation.
_UNICODE_PUNCTUATION = re.compile("[\u00a1-\u00bf\u2000-\u207f\u3000-\u303f]")


def _mix(value: int) -> int:
    return value & _MASK64


def reference_signature(text: str, words: int) -> np.ndarray:
    """One text's MinHash straight from its definition (dedup's module docstring)."""
    spaced = _UNICODE_PUNCTUATION.sub(" ", dedup.normalise(text) if not text.isascii() else text)
    tokens = [t for t in re.split(rb"[\x00-\x20]+", spaced.encode().translate(dedup._FOLD)) if t]
    hashes = []
    for token in tokens:
        size = len(token)
        word = _mix(int.from_bytes(token[:8], "little") * int(dedup._K1))
        if size > 8:
            word = _mix(word + int.from_bytes(token[-8:], "little"))
        word ^= size
        word ^= word >> 32
        hashes.append(_mix(word * int(dedup._K2)))
    signature = np.full(dedup.NUM_BINS, dedup.EMPTY_BIN, dtype=np.uint16)
    for first in range(len(hashes)):
        mixed = hashes[first]
        for step in range(1, words):
            following = hashes[first + step] if first + step < len(hashes) else 0
            mixed = _mix(mixed * int(dedup._K1) + following)
            mixed ^= mixed >> 29
        mixed = _mix(mixed * int(dedup._K2))
        mixed ^= mixed >> 32
        slot, value = mixed >> 58, min(mixed & 0xFFFF, dedup.EMPTY_BIN - 1)
        signature[slot] = min(int(signature[slot]), value)
    return signature


_ALPHABET = (
    list("aAbBzZ09 .,;!?-_'\"\n\t\x01\x7f")
    + list("éÉüÜßÀÞþ×÷ÿµ½²\u00a0¿«»")
    + list("東京ΣσςİＦﬁ\u0301\u2014\u201c\u3001\U0001f600")
)


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = [
            "".join(rng.choice(_ALPHABET) for _ in range(rng.choice([1, 2, 3, 5, 8, 9, 14])))
            for _ in range(rng.randint(0, 12))
        ]
        texts.append(" ".join(words))
    return texts


@pytest.mark.parametrize("words", [1, 2, 3])
def test_minhash_is_its_definition_at_every_shingle_size(
    words: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dedup, "SHINGLE_WORDS", words)
    texts = random_texts(400, seed=words)
    computed = dedup.signatures([text.encode() for text in texts])
    for text, row in zip(texts, computed, strict=True):
        assert np.array_equal(row, reference_signature(text, words)), text


def test_vectorised_folding_is_the_fold_table() -> None:
    raw = np.arange(256, dtype=np.uint8)
    space, folded = dedup._fold(raw)
    table = np.frombuffer(bytes(range(256)).translate(dedup._FOLD), dtype=np.uint8)
    assert np.array_equal(space, table <= 32)
    assert np.array_equal(folded[~space], table[~space])  # a separator's value is unused


def test_latin1_texts_hash_as_is_exactly_as_normalised() -> None:
    texts = [t for t in random_texts(3000, seed=11) if not t.isascii()]
    encoded = [text.encode() for text in texts]
    ends = np.cumsum([len(e) for e in encoded])
    normalised = dedup.needs_normalising(b"".join(encoded), ends)
    assert 0 < normalised.sum() < len(texts)  # both kinds occur
    for text, needed in zip(texts, normalised, strict=True):
        assert needed == (max(text) > "\xff" or bool(set(text) & set("ßµ½²\u00a0")))
    as_is = [
        e if not n else dedup.normalise(t).encode()
        for t, e, n in zip(texts, encoded, normalised, strict=True)
    ]
    full = [dedup.normalise(text).encode() for text in texts]
    assert [len(a) for a in as_is] == [len(f) for f in full]
    lengths = np.array([len(a) for a in as_is])
    assert np.array_equal(
        dedup.padded_signatures(dedup.PAD + dedup.PAD.join(as_is) + dedup.PAD, lengths),
        dedup.padded_signatures(dedup.PAD + dedup.PAD.join(full) + dedup.PAD, lengths),
    )


def test_similarity_and_unique_are_the_plain_numpy_ones() -> None:
    rng = np.random.default_rng(5)
    left = rng.integers(0, 4, (500, dedup.NUM_BINS)).astype(np.uint16)
    right = rng.integers(0, 4, (500, dedup.NUM_BINS)).astype(np.uint16)
    left[rng.random(left.shape) < 0.4] = dedup.EMPTY_BIN
    right[rng.random(right.shape) < 0.4] = dedup.EMPTY_BIN
    left[:3] = right[:3] = dedup.EMPTY_BIN  # empty on both sides: similarity 0
    left_empty, right_empty = left == dedup.EMPTY_BIN, right == dedup.EMPTY_BIN
    matches = ((left == right) & ~left_empty).sum(axis=1)
    union = (~(left_empty & right_empty)).sum(axis=1)
    expected = np.where(union > 0, matches / np.maximum(union, 1), 0.0)
    assert np.array_equal(dedup.similarity(left, right), expected)
    for values in (np.zeros(0, np.int64), np.array([7]), rng.integers(0, 50, 1000)):
        assert np.array_equal(dedup.unique_sorted(values), np.unique(values))


def _prompt_rows(count: int) -> tuple[np.ndarray, np.ndarray]:
    prompts = [f"how do I reset the password of account {i % 40}".encode() for i in range(count)]
    answers = [f"open settings, step {i % 3}" for i in range(count)]
    keys = conflicts.answer_keys_of(answers)
    keys[::9] = 0  # lines without a prompt and an answer
    return keys, dedup.signatures(prompts)


def test_prompt_fingerprint_in_memory_or_spilled_finds_the_same_groups(tmp_path: Path) -> None:
    keys, rows = _prompt_rows(300)
    found = []
    for memory_rows in (1 << 15, 100):  # all in memory; spilled to a file after 100 rows
        held = dedup.TemporaryFingerprint(tmp_path, memory_rows=memory_rows)
        for first in range(0, 300, 64):
            held.append(keys[first : first + 64], rows[first : first + 64])
        reader = held.open()
        assert isinstance(reader, dedup.MemoryFingerprint) == (memory_rows > 300)
        found.append(conflicts.find(reader).to_dict())
        held.discard()
        assert list(tmp_path.iterdir()) == []  # nothing left behind
    assert found[0] == found[1] and found[0]["groups"] > 0


def test_memory_fingerprint_reads_like_the_file(tmp_path: Path) -> None:
    keys, rows = _prompt_rows(50)
    writer = dedup.FingerprintWriter(tmp_path)
    writer.append(keys, rows)
    on_disk = dedup.Fingerprint(writer.finish(tmp_path / "p.fingerprint"))
    in_memory = dedup.MemoryFingerprint(keys, rows)
    picked = np.array([4, 0, 49, 4])
    assert np.array_equal(in_memory.exact(), on_disk.exact())
    assert np.array_equal(in_memory.signatures(picked), on_disk.signatures(picked))
    for band in range(dedup.BANDS):
        assert np.array_equal(in_memory.band(band), on_disk.band(band))


def test_answers_opening_after_whitespace_are_decoded() -> None:
    answers = ['  {"a": 1}', '\u2003{"a": 1}', "no", '{"a": 2}', "\n{", " x"]
    seen = structure.observe([10, 11, 12, 13, 14, 15], answers)
    # U+2003 is whitespace to str.lstrip but not to JSON; "{" alone is no object either.
    assert (seen.answers, seen.not_json, seen.not_json_lines) == (6, 4, [11, 12, 14, 15])
    assert seen.shapes == {(("a", "integer"),): [2, [10, 13]]}
