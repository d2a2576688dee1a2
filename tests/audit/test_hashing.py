"""Fixed byte vectors for every hash. The RFC 6962 ones come from transparency-dev/merkle
(rfc6962/rfc6962_test.go); the chain-link ones are pinned here (sha256 of the preimage
spelled out in the comment), so any change to the chain's hashing fails loudly."""

from __future__ import annotations

import pytest

from audit.hashing import (
    CHAIN_PREFIX,
    EMPTY_ROOT,
    GENESIS_HASH,
    LEAF_PREFIX,
    NODE_PREFIX,
    chain_hash,
    leaf_hash,
    node_hash,
)

H = bytes.fromhex


@pytest.mark.parametrize(
    ("got", "want"),
    [
        # echo -n | sha256sum
        (EMPTY_ROOT, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        # echo -n 00 | xxd -r -p | sha256sum
        (leaf_hash(b""), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        # echo -n 004C313233343536 | xxd -r -p | sha256sum
        (leaf_hash(b"L123456"), "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"),
        # echo -n 014E3132334E343536 | xxd -r -p | sha256sum
        (
            node_hash(b"N123", b"N456"),
            "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb",
        ),
        # printf '\x02' ; 32 zero bytes ; '{}'  | sha256sum
        (
            chain_hash(GENESIS_HASH, b"{}"),
            "dce01aae181972848437ad3899f966450ea3a22899bcbe5a9eaf5e60dc5f5426",
        ),
        # printf '\x02' ; leaf_hash("") ; 'L123456' | sha256sum
        (
            chain_hash(
                H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"), b"L123456"
            ),
            "63c401d06d9ffe1143a152dfa760d39d8b2cf07e882ec854f79eac92431a69cb",
        ),
    ],
)
def test_fixed_vectors(got, want):
    assert got.hex() == want


def test_domains_are_distinct():
    assert len({LEAF_PREFIX, NODE_PREFIX, CHAIN_PREFIX}) == 3
    left, right = leaf_hash(b"Hello"), leaf_hash(b"World")
    # A node is not the leaf of its children's concatenation (second preimage, RFC 6962).
    assert node_hash(left, right) != leaf_hash(left + right)
    assert node_hash(left, right) != node_hash(right, left)
    # A chain link is neither a node nor a leaf over the same bytes.
    assert chain_hash(left, right) != node_hash(left, right)
    assert chain_hash(left, right) != leaf_hash(left + right)


def test_genesis_is_32_zero_bytes():
    assert bytes(32) == GENESIS_HASH
