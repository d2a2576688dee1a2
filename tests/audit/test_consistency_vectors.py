"""RFC 6962 / RFC 9162 consistency proofs against the transparency-dev/merkle reference
vectors (proof/verify_test.go: consistencyProofs, roots and leaves, copied verbatim), and
its corruption probes (corruptConsistencyProof) that must all fail."""

from __future__ import annotations

import pytest

from audit.hashing import EMPTY_ROOT, leaf_hash
from audit.merkle import (
    ConsistencyProofError,
    consistency_proof,
    consistency_proof_from_leaves,
    root,
    subtree_from_leaves,
    verify_consistency,
)

H = bytes.fromhex
LEAVES = [
    leaf_hash(H(x))
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    H("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    H("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    H("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    H("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    H("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = H("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_roots_are_the_reference_roots():
    assert [root(LEAVES[:n]) for n in range(1, 9)] == ROOTS


@pytest.mark.parametrize(("first", "second", "proof"), VECTORS)
def test_proofs_are_the_reference_proofs(first, second, proof):
    assert consistency_proof_from_leaves(LEAVES, first, second) == proof
    assert consistency_proof(first, second, subtree_from_leaves(LEAVES[:second])) == proof


@pytest.mark.parametrize(("first", "second", "proof"), VECTORS)
def test_reference_proofs_verify(first, second, proof):
    verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], proof)


def _probes(first, second, root1, root2, proof):
    """transparency-dev corruptConsistencyProof, probe for probe."""
    wrong = b"WrongRoot".ljust(32, b"\0")
    probes = [
        (first - 1, second, root1, root2, proof),
        (first + 1, second, root1, root2, proof),
        (first ^ 2, second, root1, root2, proof),
        (first, second * 2, root1, root2, proof),
        (first, second // 2, root1, root2, proof),
        (first, second, wrong, root2, proof),
        (first, second, root1, wrong, proof),
        (first, second, root2, root1, proof),
        (first, second, root1, root2, []),
        (first, second, root1, root2, [*proof, b""]),
        (first, second, root1, root2, [*proof, root1]),
        (first, second, root1, root2, [*proof, root2]),
        (first, second, root1, root2, [b"", *proof]),
        (first, second, root1, root2, [root1, *proof]),
        (first, second, root1, root2, [root2, *proof]),
        (first, second, root1, root2, [proof[0], *proof]),
        (first, second, root1, root2, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((first, second, root1, root2, flipped))
    return probes


@pytest.mark.parametrize(("first", "second", "proof"), [v for v in VECTORS if v[2]])
def test_every_corruption_is_refused(first, second, proof):
    for probe in _probes(first, second, ROOTS[first - 1], ROOTS[second - 1], proof):
        with pytest.raises(ConsistencyProofError):
            verify_consistency(*probe)


def test_error_names_what_and_both_values():
    first, second, proof = VECTORS[2]
    with pytest.raises(ConsistencyProofError) as caught:
        verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 2], proof)
    error = caught.value
    assert error.what == "second root"
    assert error.expected == ROOTS[second - 2]
    assert error.found == ROOTS[second - 1]
    assert ROOTS[second - 2].hex() in str(error)


@pytest.mark.parametrize(
    ("first", "second", "root1", "root2", "proof", "ok"),
    [  # transparency-dev TestVerifyConsistency edge cases (EMPTY_ROOT for "don't care")
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 1, EMPTY_ROOT, SOME_HASH, [], True),
        (1, 1, SOME_HASH, SOME_HASH, [], True),
        (1, 1, EMPTY_ROOT, SOME_HASH, [], False),
        (1, 0, EMPTY_ROOT, SOME_HASH, [], False),
        (2, 1, EMPTY_ROOT, SOME_HASH, [], False),
        (1, 2, EMPTY_ROOT, SOME_HASH, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
    ],
)
def test_edge_cases(first, second, root1, root2, proof, ok):
    if ok:
        verify_consistency(first, second, root1, root2, proof)
    else:
        with pytest.raises(ConsistencyProofError):
            verify_consistency(first, second, root1, root2, proof)


def test_all_pairs_of_a_larger_tree():
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(70)]
    roots = [root(leaves[:n]) for n in range(71)]
    for second in range(71):
        for first in range(second + 1):
            proof = consistency_proof_from_leaves(leaves, first, second)
            verify_consistency(first, second, roots[first], roots[second], proof)
            if proof:
                with pytest.raises(ConsistencyProofError):
                    verify_consistency(first, second, roots[first], roots[second], proof[1:])
