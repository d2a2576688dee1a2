"""Conflicting answers: examples whose prompts are the same or nearly the same but whose
answers differ. Pure: it reads a prompt fingerprint and returns counts and line numbers.

The prompt fingerprint is a ``dedup`` artifact written at upload beside the file's own
(and removed after the datasheet is made): its rows are the MinHash signatures of each
example's prompt (the non-system turns before the final assistant answer), and its
"exact" column holds a key of the answer (``answer_keys``: a hash of the answer's own
MinHash signature, so answers equal once normalised share it), 0 where the line has no
prompt and answer. Candidate pairs come from the same
16 x 4 LSH bands as near-duplicates and are verified on all 64 bins; prompts at or above
the threshold join one group (connected components). A group whose members give more than
one answer is a conflict. When one answer is given by more than half of the group's lines
(and by at least two), it is the majority and the other lines are suspect.

``conflict_rate`` = lines in conflict groups / examples with a prompt and an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from ingest import dedup

DEFAULT_THRESHOLD: Final = 0.9  # prompts this alike ask the same thing
SHOWN_GROUPS: Final = 100
SHOWN_LINES: Final = 20  # per group


_MIX = np.uint64(0xBF58476D1CE4E5B9)
_S31 = np.uint64(31)


def answer_keys(answer_signatures: np.ndarray) -> np.ndarray:
    """uint64 per answer from its MinHash signature (uint16[n, NUM_BINS], the answer
    segment's, computed anyway), never 0 (0 is "no answer"). Answers equal once normalised
    as MinHash sees them (Unicode NFKC, case, punctuation, whitespace) have equal
    signatures and so equal keys; different answers collide with negligible probability
    (all occupied bins equal)."""
    words = np.ascontiguousarray(answer_signatures).view("<u8")
    keys = np.zeros(len(words), dtype=np.uint64)
    for column in range(words.shape[1]):
        keys ^= words[:, column]
        keys *= _MIX
        keys ^= keys >> _S31
    keys[keys == 0] = 1
    return keys


def answer_keys_of(answers: Sequence[str]) -> np.ndarray:
    """``answer_keys`` of answer texts (tests, small inputs)."""
    return answer_keys(dedup.signatures([answer.encode() for answer in answers]))


@dataclass(frozen=True)
class ConflictGroup:
    lines: list[int]  # 1-based, sorted, the first SHOWN_LINES
    size: int
    answers: int  # distinct answers
    similarity: float  # the lowest verified prompt similarity that joined the group
    majority_lines: int  # lines giving the majority answer, 0 when there is none
    suspect_lines: list[int]  # lines not giving the majority answer (first SHOWN_LINES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "size": self.size,
            "answers": self.answers,
            "similarity": self.similarity,
            "majority_lines": self.majority_lines,
            "suspect_lines": self.suspect_lines,
        }


@dataclass(frozen=True)
class Conflicts:
    threshold: float
    examples: int  # examples with a prompt and an answer
    groups: int
    lines: int  # lines in conflict groups
    suspects: int
    shown: list[ConflictGroup] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return round(self.lines / self.examples, 6) if self.examples else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "examples": self.examples,
            "groups": self.groups,
            "lines": self.lines,
            "rate": self.rate,
            "suspect_lines": self.suspects,
            "shown": [group.to_dict() for group in self.shown],
        }


def _components(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Label of each row's connected component (its smallest row): roots hooked onto the
    smaller label of each pair, then pointer jumping, until nothing changes."""
    label = np.arange(count, dtype=np.int64)
    while left.size:
        low = np.minimum(label[left], label[right])
        new = label.copy()
        for side in (left, right):
            np.minimum.at(new, label[side], low)
            np.minimum.at(new, side, low)
        while not np.array_equal(jumped := new[new], new):
            new = jumped
        if np.array_equal(new, label):
            break
        label = new
    return label


def find(
    fingerprint: dedup.FingerprintReader, *, threshold: float = DEFAULT_THRESHOLD
) -> Conflicts:
    answers = fingerprint.exact()
    considered = answers != 0
    count = fingerprint.count
    examples = int(considered.sum())

    def candidates_in(band: int) -> np.ndarray:
        keys = fingerprint.band(band)
        rows = np.flatnonzero(considered & (keys != dedup.EMPTY_BAND))
        keys = keys[rows]
        order = np.argsort(keys)  # the order inside a bucket does not change the groups
        keys, rows = keys[order], rows[order]
        same = keys[1:] == keys[:-1]
        if not same.any():
            return rows[:0]
        positions = np.arange(rows.size)
        run_first = np.maximum.accumulate(np.where(np.r_[True, ~same], positions, 0))
        follower = np.flatnonzero(np.r_[False, same])
        one = np.concatenate([rows[follower - 1], rows[run_first[follower]]])
        other = np.concatenate([rows[follower], rows[follower]])
        return np.maximum(one, other) * count + np.minimum(one, other)

    candidates = [ids for ids in dedup._per_band(candidates_in) if ids.size]
    if not candidates:
        return Conflicts(threshold, examples, 0, 0, 0)
    # A pair found in several bands is verified once, on all 64 bins.
    pair_ids = dedup.unique_sorted(np.concatenate(candidates))
    later, earlier = pair_ids // count, pair_ids % count
    left, right, score = dedup._verified(fingerprint, fingerprint, later, earlier, threshold)
    label = _components(count, left, right)
    members = np.flatnonzero(considered)
    members = members[np.bincount(label[members], minlength=count)[label[members]] > 1]
    if not members.size:
        return Conflicts(threshold, examples, 0, 0, 0)
    order = np.lexsort((members, label[members]))
    members = members[order]
    group_of = label[members]
    starts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
    ends = np.r_[starts[1:], members.size]
    lowest = np.ones(count)
    np.minimum.at(lowest, label[left], score)
    groups: list[ConflictGroup] = []
    lines = suspects = total = 0
    # Groups whose members all give one answer are no conflict: skipped without a loop.
    group_answers = answers[members]
    differ = np.minimum.reduceat(group_answers, starts) != np.maximum.reduceat(
        group_answers, starts
    )
    for start, end in zip(starts[differ].tolist(), ends[differ].tolist(), strict=True):
        rows = members[start:end]
        keys, inverse, tally = np.unique(answers[rows], return_inverse=True, return_counts=True)
        if keys.size < 2:
            continue
        total += 1
        lines += rows.size
        top = int(tally.max())
        majority = top * 2 > rows.size and top >= 2 and int((tally == top).sum()) == 1
        suspect = rows[inverse != int(tally.argmax())] if majority else rows[:0]
        suspects += int(suspect.size)
        if len(groups) < SHOWN_GROUPS:
            groups.append(
                ConflictGroup(
                    lines=(rows[:SHOWN_LINES] + 1).tolist(),
                    size=int(rows.size),
                    answers=int(keys.size),
                    similarity=round(float(lowest[group_of[start]]), 3),
                    majority_lines=top if majority else 0,
                    suspect_lines=(suspect[:SHOWN_LINES] + 1).tolist(),
                )
            )
    return Conflicts(threshold, examples, total, lines, suspects, groups)


def conflicts_of_prompts(
    prompts: Sequence[bytes],
    answers: Sequence[str],
    directory: Any,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> Conflicts:
    """``find`` over in-memory prompts and answers (tests, small files): writes a temporary
    prompt fingerprint in ``directory``."""
    writer = dedup.FingerprintWriter(directory)
    writer.append(answer_keys_of(answers), dedup.signatures(prompts))
    path = writer.finish(directory / ".prompts.fingerprint")
    try:
        return find(dedup.Fingerprint(path), threshold=threshold)
    finally:
        path.unlink(missing_ok=True)
