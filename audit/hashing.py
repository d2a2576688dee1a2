"""The three hashes of the audit trail, each with its own one-byte domain prefix.

- ``leaf_hash(body)   = sha256(0x00 || body)``          RFC 6962 Merkle leaf
- ``node_hash(l, r)   = sha256(0x01 || l || r)``        RFC 6962 Merkle interior node
- ``chain_hash(p, b)  = sha256(0x02 || p || b)``          hash-chain link

The chain link has a prefix of its own, so no chain hash input is ever also the input of
a leaf or a node hash. ``GENESIS_HASH`` (32 zero bytes) is the ``prev_hash`` of event 1.
"""

from __future__ import annotations

from hashlib import sha256

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
CHAIN_PREFIX = b"\x02"
HASH_SIZE = 32
GENESIS_HASH = bytes(HASH_SIZE)
EMPTY_ROOT = sha256(b"").digest()  # RFC 6962: the root of the empty tree


def leaf_hash(data: bytes) -> bytes:
    return sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(NODE_PREFIX + left + right).digest()


def chain_hash(prev_hash: bytes, body: bytes) -> bytes:
    return sha256(CHAIN_PREFIX + prev_hash + body).digest()
