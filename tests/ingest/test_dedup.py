from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from ingest import dedup
from ingest.dedup import (
    EMPTY_BIN,
    Fingerprint,
    FingerprintError,
    FingerprintWriter,
    exact_duplicates,
    near_duplicates,
    overlap,
    signatures,
    similarity,
)

_text = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
    "pi rho sigma tau upsilon phi chi psi omega river stone cloud forest market "
    "bridge"
)
WORDS = _text.split()


def text(rng: random.Random, words: int = 120) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(words))


def edit(rng: random.Random, source: str, changes: int) -> str:
    words = source.split(" ")
    for _ in range(changes):
        words[rng.randrange(len(words))] = "changed"
    return " ".join(words)


class TestSignatures:
    def test_similarity_tracks_how_much_text_is_shared(self) -> None:
        rng = random.Random(1)
        base = text(rng)
        rows = signatures(
            [
                base.encode(),
                edit(rng, base, 2).encode(),
                edit(rng, base, 40).encode(),
                text(rng).encode(),
            ]
        )
        near, far, other = (similarity(rows[:1], rows[i : i + 1])[0] for i in (1, 2, 3))
        assert near > 0.85
        assert 0.2 < far < near
        assert other < 0.15

    def test_a_text_does_not_depend_on_its_neighbours(self) -> None:
        rng = random.Random(2)
        texts = [text(rng).encode() for _ in range(5)]
        together = signatures(texts)
        alone = np.vstack([signatures([t]) for t in texts])
        assert np.array_equal(together, alone)

    def test_case_and_layout_do_not_matter(self) -> None:
        rows = signatures([b"The Quick brown fox\njumps over", b"the quick  BROWN fox jumps\tover"])
        assert similarity(rows[:1], rows[1:])[0] > 0.5

    def test_empty_text_has_empty_bins(self) -> None:
        rows = signatures([b"", b"   "])
        assert (rows == EMPTY_BIN).all()
        assert similarity(rows[:1], rows[1:])[0] == 0.0


def write_fingerprint(directory: Path, texts: list[str], name: str) -> Fingerprint:
    writer = FingerprintWriter(directory)
    import hashlib

    exact = np.array(
        [
            int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            for t in texts
        ],
        dtype="<u8",
    )
    half = len(texts) // 2
    writer.append(exact[:half], signatures([t.encode() for t in texts[:half]]))
    writer.append(exact[half:], signatures([t.encode() for t in texts[half:]]))
    return Fingerprint(writer.finish(directory / name))


class TestFingerprint:
    def test_round_trip_and_no_temporaries_left(self, tmp_path: Path) -> None:
        rng = random.Random(3)
        texts = [text(rng) for _ in range(50)]
        fp = write_fingerprint(tmp_path, texts, "a.fingerprint")
        assert fp.count == 50
        expected = signatures([t.encode() for t in texts])
        assert np.array_equal(fp.signatures(np.arange(50)), expected)
        assert [p.name for p in tmp_path.iterdir()] == ["a.fingerprint"]
        assert fp.path.stat().st_size == dedup.HEADER_BYTES + 50 * 8 * (1 + dedup.BANDS)

    def test_truncated_or_foreign_files_are_refused(self, tmp_path: Path) -> None:
        rng = random.Random(4)
        fp = write_fingerprint(tmp_path, [text(rng) for _ in range(3)], "b.fingerprint")
        data = fp.path.read_bytes()
        (tmp_path / "short").write_bytes(data[:-8])
        (tmp_path / "foreign").write_bytes(b"PK\x03\x04" + data[4:])
        for name in ("short", "foreign"):
            with pytest.raises(FingerprintError):
                Fingerprint(tmp_path / name)


class TestDuplicatesWithinAFile:
    def test_exact_duplicates_point_at_the_first_copy(self) -> None:
        keys = np.array([5, 7, 5, 0, 0, 7, 5], dtype="<u8")
        found = exact_duplicates(keys)
        assert found.count == 3
        assert [(a, b) for a, b, _ in found.pairs] == [(3, 1), (6, 2), (7, 1)]

    def test_near_duplicates_found_and_unrelated_lines_left_alone(self, tmp_path: Path) -> None:
        rng = random.Random(5)
        texts = [text(rng) for _ in range(200)]
        texts[150] = edit(rng, texts[20], 2)
        texts[180] = texts[60]  # exact: reported as exact, not near
        fp = write_fingerprint(tmp_path, texts, "c.fingerprint")
        found = near_duplicates(fp, threshold=0.8)
        assert [(a, b) for a, b, _ in found.pairs] == [(151, 21)]
        assert found.pairs[0][2] >= 0.8


class TestOverlap:
    def test_validation_lines_repeating_training_lines(self, tmp_path: Path) -> None:
        rng = random.Random(6)
        training = [text(rng) for _ in range(300)]
        validation = [text(rng) for _ in range(40)]
        validation[5] = training[100]
        validation[9] = edit(rng, training[200], 2)
        found = overlap(
            write_fingerprint(tmp_path, training, "t.fingerprint"),
            write_fingerprint(tmp_path, validation, "v.fingerprint"),
        )
        assert [(a, b) for a, b, _ in found.exact.pairs] == [(6, 101)]
        assert [(a, b) for a, b, _ in found.near.pairs] == [(10, 201)]
        assert found.lines == 2 and found.probe_examples == 40
