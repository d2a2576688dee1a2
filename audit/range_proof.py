"""Proof that a set of leaves lies in an RFC 6962 tree: one proof for many leaves.

The leaves are given as *runs*: sorted, disjoint half-open ranges ``[start, end)`` of leaf
indices (0-based; event ``seq`` is leaf ``seq - 1``). The proof is the list of hashes of
the largest subtrees that hold none of the leaves, met left to right while RFC 6962 splits
the tree (at the largest power of two below a range's size). Whoever holds the leaves'
hashes rebuilds every other subtree, so the proof plus the leaves give the root, and the
root a signed checkpoint states proves every leaf at once.

One contiguous run needs at most two hashes per tree level (those left and right of it);
a run that starts at leaf 0 and ends at the tree's size needs none. Pure functions: no
database, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence

from audit.hashing import EMPTY_ROOT
from audit.merkle import (
    frontier_root,
    largest_power_of_two_below,
    levels,
    node_hash,
    prefix_frontier,
)

Run = tuple[int, int]
Subtree = Callable[[int, int], bytes]

_NONE, _PARTIAL, _FULL = 0, 1, 2


class RangeProofError(ValueError):
    """The proof does not fit the tree and the leaves (too few or too many hashes)."""


def runs_of(indices: Iterable[int]) -> list[Run]:
    """Ascending leaf indices as runs; raises ValueError when they do not ascend."""
    runs: list[list[int]] = []
    previous = -1
    for index in indices:
        if index <= previous:
            raise ValueError(f"leaf index {index} does not follow {previous}")
        if runs and runs[-1][1] == index:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
        previous = index
    return [(start, end) for start, end in runs]


class _Coverage:
    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = runs
        self.starts = [start for start, _ in runs]

    def of(self, lo: int, hi: int) -> int:
        """How much of [lo, hi) the runs cover: none, part of it, or all of it."""
        i = bisect_right(self.starts, lo) - 1
        if i >= 0 and self.runs[i][1] >= hi:
            return _FULL
        j = bisect_left(self.starts, hi)  # the runs that start before hi
        if j and self.runs[j - 1][1] > lo:
            return _PARTIAL
        return _NONE


def _walk(size: int, runs: Sequence[Run]) -> Iterator[tuple[int, int, int]]:
    """(lo, hi, coverage) of each range RFC 6962's split reaches that is wholly covered or
    wholly uncovered, left to right."""
    coverage = _Coverage(runs)
    stack = [(0, size)]
    while stack:
        lo, hi = stack.pop()
        covered = coverage.of(lo, hi)
        if covered != _PARTIAL:
            yield lo, hi, covered
            continue
        k = largest_power_of_two_below(hi - lo)
        stack.append((lo + k, hi))
        stack.append((lo, lo + k))


def range_proof(size: int, runs: Sequence[Run], subtree: Subtree) -> list[bytes]:
    """The hashes that prove ``runs`` in the tree of ``size`` leaves; ``subtree(lo, hi)``
    gives MTH(D[lo:hi]) of a range that holds none of them."""
    _check_runs(size, runs)
    if size == 0:
        return []
    return [subtree(lo, hi) for lo, hi, covered in _walk(size, runs) if covered == _NONE]


def root_from_range_proof(
    size: int, runs: Sequence[Run], covered_root: Subtree, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` and the leaves lead to; ``covered_root(lo, hi)`` gives the
    root of a range that lies inside one run (from the leaves the caller holds). Raises
    RangeProofError when the proof has too few or too many hashes."""
    _check_runs(size, runs)
    if size == 0:
        if proof:
            raise RangeProofError("a proof for an empty tree has no hashes")
        return EMPTY_ROOT
    given = iter(proof)
    parts: dict[tuple[int, int], bytes] = {}
    for lo, hi, covered in _walk(size, runs):
        if covered == _FULL:
            parts[lo, hi] = covered_root(lo, hi)
        else:
            found = next(given, None)
            if found is None:
                raise RangeProofError("the proof has too few hashes for these leaves")
            parts[lo, hi] = found
    if next(given, None) is not None:
        raise RangeProofError("the proof has more hashes than these leaves need")
    return _fold(0, size, parts)


def _fold(lo: int, hi: int, parts: dict[tuple[int, int], bytes]) -> bytes:
    if (lo, hi) in parts:
        return parts[lo, hi]
    k = largest_power_of_two_below(hi - lo)
    return node_hash(_fold(lo, lo + k, parts), _fold(lo + k, hi, parts))


def _check_runs(size: int, runs: Sequence[Run]) -> None:
    previous = 0
    for start, end in runs:
        if not previous <= start < end <= size:
            raise ValueError(f"run [{start}, {end}) is not sorted, disjoint and inside {size}")
        previous = end


def root_of_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, hashed level by level in C-level batches."""
    if not leaves:
        return EMPTY_ROOT
    return frontier_root(prefix_frontier(levels(leaves), len(leaves)))
