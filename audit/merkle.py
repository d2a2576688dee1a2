"""RFC 6962 Merkle tree: roots, compact ranges, inclusion proofs and their verification.

Pure functions over 32-byte hashes; no database. Leaves are 0-based here (event ``seq`` is
leaf ``seq - 1``). The *frontier* (transparency-dev calls it a compact range) of a tree of
``size`` leaves is the list of roots of its perfect subtrees, left to right: one per set
bit of ``size``, largest first. Appending a leaf touches O(log n) of it, and folding it
from the right gives the RFC 6962 root, because RFC 6962 splits a tree at the largest
power of two below its size exactly as the frontier does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha256
from operator import add

from audit.hashing import EMPTY_ROOT, HASH_SIZE, NODE_PREFIX, node_hash

_digest = type(sha256()).digest


class InclusionProofError(ValueError):
    """An inclusion proof does not hold. ``what`` names the check; ``expected`` and
    ``found`` are what it wanted and what it got (hashes as bytes, counts as ints)."""

    def __init__(self, what: str, expected: object, found: object) -> None:
        self.what = what
        self.expected = expected
        self.found = found
        super().__init__(f"{what}: expected {_show(expected)}, found {_show(found)}")


def _show(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2): RFC 6962's split."""
    return 1 << ((n - 1).bit_length() - 1)


# --- frontier (compact range of [0, size)) -------------------------------------------------


def frontier_append(
    frontier: list[bytes],
    size: int,
    leaf: bytes,
    on_node: Callable[[int, int, bytes], None] | None = None,
) -> None:
    """Append ``leaf`` as leaf number ``size`` to ``frontier`` (in place). ``on_node(level,
    index, hash)`` hears of every perfect subtree the append completes (level >= 1)."""
    node, index, level = leaf, size, 0
    while size & 1:
        node = node_hash(frontier.pop(), node)
        size >>= 1
        index >>= 1
        level += 1
        if on_node is not None:
            on_node(level, index, node)
    frontier.append(node)


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The RFC 6962 root of the tree whose frontier this is."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for left in reversed(frontier[:-1]):
        root = node_hash(left, root)
    return root


def pack_frontier(frontier: Sequence[bytes]) -> bytes:
    return b"".join(frontier)


def unpack_frontier(data: bytes, size: int) -> list[bytes]:
    """The frontier stored as concatenated hashes; its length must fit ``size``."""
    expected = size.bit_count() * HASH_SIZE
    if len(data) != expected:
        raise ValueError(f"frontier of size {size} needs {expected} bytes, has {len(data)}")
    return [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def frontier_of(leaves: Sequence[bytes]) -> list[bytes]:
    frontier: list[bytes] = []
    for size, leaf in enumerate(leaves):
        frontier_append(frontier, size, leaf)
    return frontier


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 over leaf hashes."""
    return frontier_root(frontier_of(leaves))


def levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every perfect subtree hash over ``leaves`` (which start at a position aligned to
    ``len(leaves)`` rounded up to a power of two): ``levels[h][i]`` covers leaves
    ``[i * 2**h, (i + 1) * 2**h)``. An odd last node of a level has no parent."""
    out = [list(leaves)]
    level = out[0]
    while len(level) > 1:
        # node_hash over each pair, as C-level map chains (this runs for every leaf)
        pairs = map(add, map(NODE_PREFIX.__add__, level[0::2]), level[1::2])
        level = list(map(_digest, map(sha256, pairs)))
        out.append(level)
    return out


def prefix_frontier(tree_levels: Sequence[Sequence[bytes]], size: int) -> list[bytes]:
    """The frontier of the first ``size`` leaves, read off ``levels()``."""
    frontier, offset = [], 0
    for height in range(size.bit_length() - 1, -1, -1):
        if size >> height & 1:
            frontier.append(tree_levels[height][offset >> height])
            offset += 1 << height
    return frontier


# --- inclusion proofs -------------------------------------------------------------------


def inclusion_path(index: int, size: int, subtree: Callable[[int, int], bytes]) -> list[bytes]:
    """RFC 6962 PATH(index, D[size]): the sibling subtree hashes from the leaf upwards.
    ``subtree(start, end)`` returns MTH(D[start:end]); every range asked for is aligned
    the way RFC 6962 aligns subtrees (a perfect one starts at a multiple of its size)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    siblings: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if index < lo + k:
            siblings.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            siblings.append(subtree(lo, lo + k))
            lo += k
    siblings.reverse()
    return siblings


def subtree_from_leaves(leaves: Sequence[bytes]) -> Callable[[int, int], bytes]:
    """A ``subtree(start, end)`` for inclusion_path over leaf hashes held in memory."""
    return lambda start, end: root(leaves[start:end])


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    size = len(leaves) if size is None else size
    return inclusion_path(index, size, subtree_from_leaves(leaves[:size]))


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from ``leaf`` at ``index`` in a tree of ``size``.
    Raises InclusionProofError when the proof cannot be one for that position."""
    if not 0 <= index < size:
        raise InclusionProofError("leaf index within tree size", f"< {size}", index)
    if len(leaf) != HASH_SIZE:
        raise InclusionProofError("leaf hash length", HASH_SIZE, len(leaf))
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    if len(proof) != inner + border:
        raise InclusionProofError(
            f"proof length for leaf {index} of {size}", inner + border, len(proof)
        )
    node = leaf
    for i, sibling in enumerate(proof):
        if len(sibling) != HASH_SIZE:
            raise InclusionProofError(f"proof[{i}] length", HASH_SIZE, len(sibling))
        if i >= inner or index >> i & 1:
            node = node_hash(sibling, node)
        else:
            node = node_hash(node, sibling)
    return node


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise InclusionProofError unless ``proof`` shows ``leaf`` at ``index`` of the tree
    of ``size`` leaves whose root is ``expected_root``."""
    if len(expected_root) != HASH_SIZE:
        raise InclusionProofError("root hash length", HASH_SIZE, len(expected_root))
    calculated = root_from_inclusion_proof(index, size, leaf, proof)
    if calculated != expected_root:
        raise InclusionProofError("root hash", expected_root, calculated)


# --- consistency proofs (RFC 6962 §2.1.2, RFC 9162 §2.1.4) --------------------------------


class ConsistencyProofError(ValueError):
    """A consistency proof does not hold. ``what`` names the check; ``expected`` and
    ``found`` are what it wanted and what it got (hashes as bytes, counts as ints)."""

    def __init__(self, what: str, expected: object, found: object) -> None:
        self.what = what
        self.expected = expected
        self.found = found
        super().__init__(f"{what}: expected {_show(expected)}, found {_show(found)}")


def consistency_proof(first: int, second: int, subtree: Callable[[int, int], bytes]) -> list[bytes]:
    """RFC 6962 PROOF(first, D[second]): the hashes that show the tree of ``first`` leaves
    is a prefix of the tree of ``second``. ``subtree(start, end)`` returns MTH(D[start:end])
    of an RFC 6962-aligned range (as for inclusion_path), so a stored tree answers it
    without reading every leaf. Empty when first is 0 or equals second."""
    if not 0 <= first <= second:
        raise ValueError(f"sizes {first} and {second} must satisfy 0 <= first <= second")
    if first == 0 or first == second:
        return []
    # SUBPROOF(m, D[lo:hi], b), unrolled: the hashes come out leaf-side first.
    proof: list[bytes] = []
    m, lo, hi, whole = first, 0, second, True
    while m != hi - lo:
        k = largest_power_of_two_below(hi - lo)
        if m <= k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        proof.append(subtree(lo, hi))
    proof.reverse()
    return proof


def consistency_proof_from_leaves(leaves: Sequence[bytes], first: int, second: int) -> list[bytes]:
    """consistency_proof over leaf hashes held in memory (``second <= len(leaves)``)."""
    if second > len(leaves):
        raise ValueError(f"tree size {second} is more than the {len(leaves)} leaves given")
    return consistency_proof(first, second, subtree_from_leaves(leaves[:second]))


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ConsistencyProofError unless ``proof`` shows the tree of ``first`` leaves with
    root ``first_root`` to be a prefix of the tree of ``second`` leaves with root
    ``second_root`` (RFC 9162 §2.1.4.2)."""
    if first < 0 or second < 0:
        raise ConsistencyProofError("tree sizes are >= 0", ">= 0", min(first, second))
    if first > second:
        raise ConsistencyProofError("first tree size <= second", f"<= {second}", first)
    for what, value in (("first root", first_root), ("second root", second_root)):
        if len(value) != HASH_SIZE:
            raise ConsistencyProofError(f"{what} length", HASH_SIZE, len(value))
    for i, node in enumerate(proof):
        if len(node) != HASH_SIZE:
            raise ConsistencyProofError(f"proof[{i}] length", HASH_SIZE, len(node))
    if first == second:
        if proof:
            raise ConsistencyProofError("proof length for equal sizes", 0, len(proof))
        if first_root != second_root:
            raise ConsistencyProofError("roots of equal tree sizes", first_root, second_root)
        return
    if first == 0:
        if proof:
            raise ConsistencyProofError("proof length from the empty tree", 0, len(proof))
        return
    # The proof's length is fixed by the sizes: check it before hashing anything.
    # (transparency-dev/merkle's count: the inclusion path of leaf first-1 in the second
    # tree, less the levels that first's last perfect subtree spans, plus that subtree's
    # own hash unless it is the whole first tree.)
    inner = ((first - 1) ^ (second - 1)).bit_length()
    shift = (first & -first).bit_length() - 1  # trailing zero bits of first
    expected = inner - shift + ((first - 1) >> inner).bit_count()
    if first & (first - 1) != 0:
        expected += 1
    if len(proof) != expected:
        raise ConsistencyProofError(f"proof length from {first} to {second}", expected, len(proof))
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the old root is the first subtree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ConsistencyProofError(
                f"proof length from {first} to {second}", "fewer", len(proof)
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ConsistencyProofError(f"proof length from {first} to {second}", "more", len(proof))
    if fr != first_root:
        raise ConsistencyProofError("first root", first_root, fr)
    if sr != second_root:
        raise ConsistencyProofError("second root", second_root, sr)
