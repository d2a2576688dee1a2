"""RFC 6962 Merkle tree against the transparency-dev/merkle reference vectors
(testonly/constants.go and proof/verify_test.go)."""

from __future__ import annotations

import random

import pytest

from audit.hashing import EMPTY_ROOT, leaf_hash, node_hash
from audit.merkle import (
    InclusionProofError,
    frontier_append,
    frontier_of,
    frontier_root,
    inclusion_proof,
    levels,
    pack_frontier,
    prefix_frontier,
    root,
    root_from_inclusion_proof,
    unpack_frontier,
    verify_inclusion,
)

H = bytes.fromhex
LEAF_INPUTS = [
    H(x)
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
LEAVES = [leaf_hash(x) for x in LEAF_INPUTS]
ROOTS = [EMPTY_ROOT] + [
    H(x)
    for x in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
NODES = [
    [
        H(x)
        for x in (
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        )
    ],
    [
        H(x)
        for x in (
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        )
    ],
    [
        H(x)
        for x in (
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        )
    ],
    [H("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
N = NODES
COMPACT = [
    [],
    [N[0][0]],
    [N[1][0]],
    [N[1][0], N[0][2]],
    [N[2][0]],
    [N[2][0], N[0][4]],
    [N[2][0], N[1][2]],
    [N[2][0], N[1][2], N[0][6]],
    [N[3][0]],
]
# (1-based leaf, tree size, proof)
INCLUSION = [
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
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (3, 3, [H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        2,
        5,
        [
            H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
SOME_HASH = H("abacaba000000000000000000000000000000000000000000060061e00123456")


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1, recursive."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


class TestRoots:
    @pytest.mark.parametrize("size", range(9))
    def test_reference_roots(self, size):
        assert root(LEAVES[:size]) == ROOTS[size]
        assert reference_root(LEAVES[:size]) == ROOTS[size]

    def test_leaf_hashes_are_the_reference_level_zero(self):
        assert NODES[0] == LEAVES

    def test_levels_are_the_reference_node_hashes(self):
        assert levels(LEAVES) == NODES

    @pytest.mark.parametrize("size", range(9))
    def test_frontier_is_the_reference_compact_range(self, size):
        frontier = frontier_of(LEAVES[:size])
        assert frontier == COMPACT[size]
        assert frontier_root(frontier) == ROOTS[size]
        assert prefix_frontier(levels(LEAVES), size) == COMPACT[size]
        assert unpack_frontier(pack_frontier(frontier), size) == frontier

    def test_frontier_reports_completed_subtrees(self):
        seen, frontier = [], []
        for size, leaf in enumerate(LEAVES):
            frontier_append(frontier, size, leaf, lambda *node: seen.append(node))
        assert sorted(seen) == sorted(
            (level, index, NODES[level][index])
            for level in (1, 2, 3)
            for index in range(len(NODES[level]))
        )

    def test_unpack_refuses_a_frontier_of_the_wrong_length(self):
        with pytest.raises(ValueError, match="needs 64 bytes"):
            unpack_frontier(bytes(32), 3)

    @pytest.mark.parametrize("size", [1, 2, 3, 255, 256, 257, 1000, 1023, 1024, 1025])
    def test_random_sizes_agree_with_the_recursive_definition(self, size):
        leaves = [leaf_hash(random.randbytes(8)) for _ in range(size)]
        assert root(leaves) == reference_root(leaves)
        tree = levels(leaves)
        for prefix in {0, 1, size // 3, size // 2, size - 1, size}:
            assert frontier_root(prefix_frontier(tree, prefix)) == reference_root(leaves[:prefix])


class TestInclusion:
    @pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
    def test_reference_proofs(self, leaf, size, proof):
        assert inclusion_proof(LEAVES, leaf - 1, size) == proof
        verify_inclusion(LEAVES[leaf - 1], leaf - 1, size, proof, ROOTS[size])

    @pytest.mark.parametrize("size", range(1, 9))
    def test_every_leaf_of_every_reference_tree(self, size):
        for index in range(size):
            proof = inclusion_proof(LEAVES, index, size)
            assert root_from_inclusion_proof(index, size, LEAVES[index], proof) == ROOTS[size]

    @pytest.mark.parametrize(("leaf", "size", "proof"), [p for p in INCLUSION if p[2]])
    def test_corrupted_proofs_fail(self, leaf, size, proof):
        """The probes of transparency-dev's corruptInclusionProof."""
        index, leaf_h, good_root = leaf - 1, LEAVES[leaf - 1], ROOTS[size]
        probes = [
            (index - 1, size, good_root, leaf_h, proof),
            (index + 1, size, good_root, leaf_h, proof),
            (index ^ 2, size, good_root, leaf_h, proof),
            (index, size * 2, good_root, leaf_h, proof),
            (index, size // 2, good_root, leaf_h, proof),
            (index, size, good_root, b"WrongLeaf", proof),
            (index, size, EMPTY_ROOT, leaf_h, proof),
            (index, size, SOME_HASH, leaf_h, proof),
            (index, size, good_root, leaf_h, [*proof, b""]),
            (index, size, good_root, leaf_h, [*proof, good_root]),
            (index, size, good_root, leaf_h, [b"", *proof]),
            (index, size, good_root, leaf_h, [good_root, *proof]),
            (index, size, good_root, leaf_h, proof[:-1]),
            (index, size, good_root, leaf_h, [proof[0], SOME_HASH, *proof[1:]]),
        ]
        for i in range(len(proof)):
            flipped = list(proof)
            flipped[i] = bytes([proof[i][0] ^ 8]) + proof[i][1:]
            probes.append((index, size, good_root, leaf_h, flipped))
        for p_index, p_size, p_root, p_leaf, p_proof in probes:
            with pytest.raises(InclusionProofError):
                verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root)

    def test_wrong_leaf_names_expected_and_found_roots(self):
        _, size, proof = INCLUSION[2]
        wrong = leaf_hash(b"not the leaf")
        with pytest.raises(InclusionProofError) as caught:
            verify_inclusion(wrong, 5, size, proof, ROOTS[size])
        found = root_from_inclusion_proof(5, size, wrong, proof)
        assert caught.value.what == "root hash"
        assert caught.value.expected == ROOTS[size] and caught.value.found == found
        assert f"expected {ROOTS[size].hex()}, found {found.hex()}" in str(caught.value)

    def test_wrong_root_names_it(self):
        _, size, proof = INCLUSION[1]
        with pytest.raises(InclusionProofError) as caught:
            verify_inclusion(LEAVES[0], 0, size, proof, SOME_HASH)
        assert caught.value.expected == SOME_HASH and caught.value.found == ROOTS[size]

    def test_wrong_index_names_expected_and_found(self):
        _, size, proof = INCLUSION[2]  # leaf 6 of 8
        with pytest.raises(InclusionProofError) as caught:
            verify_inclusion(LEAVES[5], 4, size, proof, ROOTS[size])
        assert caught.value.expected == ROOTS[size] and caught.value.found != ROOTS[size]
        with pytest.raises(
            InclusionProofError, match=r"leaf index within tree size: expected < 8, found 8"
        ):
            verify_inclusion(LEAVES[5], 8, size, proof, ROOTS[size])

    def test_wrong_proof_length_names_both_counts(self):
        with pytest.raises(InclusionProofError, match="expected 3, found 2") as caught:
            verify_inclusion(LEAVES[0], 0, 8, INCLUSION[1][2][:2], ROOTS[8])
        assert (caught.value.expected, caught.value.found) == (3, 2)

    def test_single_leaf_tree(self):
        verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])
        with pytest.raises(InclusionProofError):
            verify_inclusion(LEAVES[0], 0, 1, [], b"")
        with pytest.raises(InclusionProofError):
            verify_inclusion(b"", 0, 1, [], LEAVES[0])

    @pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1)])
    def test_impossible_positions(self, index, size):
        with pytest.raises(InclusionProofError):
            verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
