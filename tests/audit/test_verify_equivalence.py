"""The fast verifier (audit.verify_fast, what production runs) returns exactly what the
row-by-row reference (audit.verify.reference_verify) returns, every field of the result,
at every chunk size; and the reference names the row that a single tampering of a row hit.

Chains are small and held in memory (verify_rows), so that hypothesis can try many: up to
10 events of varied text (quotes, backslashes, control and non-ASCII characters, null
policy versions), checkpoints signed every 1 to 4 events or none, a head frontier or none.
Three tests: untampered chains; one or two random tamperings of any chain (the rows, the
checkpoints, the head; the way someone with write access to the tables could); and each
row tampering on chains of plain text, which the batch check passes whole but for the
tampered row.
"""

from __future__ import annotations

import dataclasses
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checkpoints import Signer
from audit.event import encode_details, event_body
from audit.hashing import GENESIS_HASH, chain_hash, leaf_hash
from audit.merkle import frontier_of, pack_frontier, root
from audit.verify import DEFAULT_CHUNK, verify_rows, verify_rows_reference
from tests.audit.conftest import FIXED_KEY

SIGNER = Signer(Ed25519PrivateKey.from_private_bytes(FIXED_KEY))
PUBLIC_KEY = SIGNER.public_key_pem()
FAST = {size: partial(verify_rows, chunk_size=size) for size in (1, 2, 4, DEFAULT_CHUNK)}
COLUMN_NAMES = ("ts", "actor", "tenant", "action", "resource", "decision", "policy_version")
TEXT_COLUMNS = range(1, 8)  # the indexed columns, COLUMN_NAMES

# Plain text (the batch check's good path, non-ASCII included), and text with characters
# that canonical JSON escapes (the path of the row-by-row walk).
PLAIN = st.text(st.sampled_from("ab-:é\u2028"), min_size=1, max_size=5)
ESCAPED = st.text(st.sampled_from('ab"\\\n\t\x01'), min_size=1, max_size=5)
CONTROL = st.text(st.sampled_from("ab\n\t\x01"), min_size=1, max_size=5)  # raw in a bad body
texts = PLAIN | ESCAPED


@dataclasses.dataclass
class Chain:
    """What verify_rows takes: the rows (EVENT_COLUMNS order) and what the head says."""

    rows: list[tuple]
    head_seq: int
    head_hash: bytes
    head_frontier: bytes | None
    checkpoints: list


def event(seq: int, fields: dict, details: dict) -> tuple:
    body = event_body(seq=seq, details_json=encode_details(details), **fields)
    return (seq, *fields.values(), body)


@st.composite
def chains(draw, plain: bool = False) -> Chain:
    count = draw(st.integers(0, 10))
    every = draw(st.sampled_from([None, 1, 2, 3, 4]))
    text = PLAIN if plain else draw(st.sampled_from([PLAIN, PLAIN, texts]))  # or a mix
    rows, prev = [], GENESIS_HASH
    for seq in range(1, count + 1):
        fields = {
            "ts": f"2026-11-28T12:00:{seq:02d}.000000Z",
            "actor": draw(text),
            "tenant": draw(text),
            "action": draw(text),
            "resource": draw(text),
            "decision": draw(text),
            "policy_version": draw(st.none() | text),
        }
        *columns, body = event(seq, fields, {"n": draw(st.integers(0, 9))})
        digest = chain_hash(prev, body)
        rows.append((*columns, body, prev, digest))
        prev = digest
    leaves = [leaf_hash(row[8]) for row in rows]
    checkpoints = [
        SIGNER.sign(size, root(leaves[:size]), rows[size - 1][1])
        for size in (range(every, count + 1, every) if every else ())
    ]
    frontier = pack_frontier(frontier_of(leaves)) if draw(st.booleans()) else None
    return Chain(rows, count, prev, frontier, checkpoints)


# --- tamperings: each a function of (chain, draw) that changes the chain in place -----------


def flip(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at % len(changed)] ^= 1 << (at % 8)
    return bytes(changed)


def set_cell(chain: Chain, i: int, column: int, value: object) -> None:
    row = chain.rows[i]
    chain.rows[i] = (*row[:column], value, *row[column + 1 :])


def flip_body(chain, draw) -> int | None:
    """A byte anywhere in a body, or (the columns still match then) in its details."""
    if not chain.rows or draw(st.booleans()):
        return _flip_cell(chain, draw, 8)
    i = draw(st.integers(0, len(chain.rows) - 1))
    body = chain.rows[i][8]
    start, end = body.find(b'"details":') + len(b'"details":'), body.rfind(b',"policy_v')
    if not 10 <= start < end:  # an earlier flip hit the frame
        return _flip_cell(chain, draw, 8)
    at = draw(st.integers(start, end - 1))
    set_cell(chain, i, 8, body[:at] + flip(body[at : at + 1], at) + body[at + 1 :])
    return chain.rows[i][0]


def flip_hash(chain, draw) -> int | None:
    return _flip_cell(chain, draw, 10)


def flip_prev_hash(chain, draw) -> int | None:
    return _flip_cell(chain, draw, 9)


def _flip_cell(chain, draw, column: int) -> int | None:
    if not chain.rows:
        return None
    i = draw(st.integers(0, len(chain.rows) - 1))
    set_cell(chain, i, column, flip(chain.rows[i][column], draw(st.integers(0, 1000))))
    return chain.rows[i][0]


def relink(chain, draw) -> int | None:
    """Point an event at another previous hash, and recompute its own hash from it."""
    if not chain.rows:
        return None
    i = draw(st.integers(0, len(chain.rows) - 1))
    prev = flip(chain.rows[i][9], draw(st.integers(0, 1000)))
    chain.rows[i] = (*chain.rows[i][:9], prev, chain_hash(prev, chain.rows[i][8]))
    return chain.rows[i][0]


def change_column(chain, draw) -> int | None:
    """Another value in an indexed column: other text, null, or (as SQLite allows) another
    type. Returns the seq only when the value did change."""
    if not chain.rows:
        return None
    i = draw(st.integers(0, len(chain.rows) - 1))
    column = draw(st.sampled_from(TEXT_COLUMNS))
    others = [ESCAPED, st.none(), st.integers(0, 9), st.binary(min_size=1, max_size=3)]
    value = draw(st.sampled_from([PLAIN, PLAIN, PLAIN, *others]).flatmap(lambda values: values))
    changed = value != chain.rows[i][column] or type(value) is not type(chain.rows[i][column])
    set_cell(chain, i, column, value)
    return chain.rows[i][0] if changed else None


def change_seq(chain, draw) -> None:
    """A row moves to another seq, perhaps outside 1..H; rows stay in seq order, as the
    database returns them."""
    if chain.rows:
        i = draw(st.integers(0, len(chain.rows) - 1))
        set_cell(chain, i, 0, draw(st.integers(-2, chain.head_seq + 3)))
        chain.rows.sort(key=lambda row: row[0])


def drop_row(chain, draw) -> int | None:
    if not chain.rows:
        return None
    return chain.rows.pop(draw(st.integers(0, len(chain.rows) - 1)))[0]


def duplicate_row(chain, draw) -> int | None:
    if not chain.rows:
        return None
    i = draw(st.integers(0, len(chain.rows) - 1))
    chain.rows.insert(i, chain.rows[i])
    return chain.rows[i][0] + 1


def rewrite_from(chain, draw) -> None:
    """Change one indexed column of an event and its body alike (the body perhaps with raw
    control characters: not JSON), then rechain every hash after it and the head: only the
    signed checkpoints (or that body) can tell."""
    if not _whole(chain):
        return
    i = draw(st.integers(0, len(chain.rows) - 1))
    fields = dict(zip(COLUMN_NAMES, chain.rows[i][1:8], strict=True))
    nullable = {"policy_version"}
    if not all(isinstance(v, str) or (v is None and k in nullable) for k, v in fields.items()):
        return  # another tampering left a value that no event can hold
    name = draw(st.sampled_from(COLUMN_NAMES))
    fields[name] = draw(CONTROL | ESCAPED | PLAIN)
    set_cell(chain, i, 1 + COLUMN_NAMES.index(name), fields[name])
    body = event(i + 1, fields, {"n": 0})[-1]
    if draw(st.booleans()):
        body = body.replace(b"\\n", b"\n").replace(b"\\t", b"\t").replace(b"\\u0001", b"\x01")
    set_cell(chain, i, 8, body)
    prev = chain.rows[i][9]
    for j in range(i, len(chain.rows)):
        digest = chain_hash(prev, chain.rows[j][8])
        chain.rows[j] = (*chain.rows[j][:9], prev, digest)
        prev = digest
    _move_head(chain, len(chain.rows))


def truncate(chain, draw) -> None:
    """Drop the last events and move the head back to match: only checkpoints beyond the
    new head can tell."""
    if _whole(chain):
        del chain.rows[len(chain.rows) - draw(st.integers(1, len(chain.rows))) :]
        _move_head(chain, len(chain.rows))


def _whole(chain: Chain) -> bool:
    """The rows are events 1..n in order, with no row moved, dropped or repeated."""
    return bool(chain.rows) and all(row[0] == i + 1 for i, row in enumerate(chain.rows))


def _move_head(chain: Chain, size: int) -> None:
    chain.head_seq = size
    chain.head_hash = chain.rows[size - 1][10] if size else GENESIS_HASH
    if chain.head_frontier is not None:
        chain.head_frontier = pack_frontier(frontier_of([leaf_hash(r[8]) for r in chain.rows]))


def tamper_checkpoint(chain, draw) -> None:
    if chain.checkpoints:
        k = draw(st.integers(0, len(chain.checkpoints) - 1))
        cp = chain.checkpoints[k]
        at = draw(st.integers(0, 1000))
        field = draw(st.sampled_from(["signature", "root_hash", "ts"]))
        value = cp.ts[:-2] + "1Z" if field == "ts" else flip(getattr(cp, field), at)
        chain.checkpoints[k] = dataclasses.replace(cp, **{field: value})


def tamper_head(chain, draw) -> None:
    what = draw(st.sampled_from(["hash", "frontier", "seq"]))
    if what == "hash":
        chain.head_hash = flip(chain.head_hash, draw(st.integers(0, 1000)))
    elif what == "frontier" and chain.head_frontier:
        chain.head_frontier = draw(
            st.sampled_from([chain.head_frontier[:-1], flip(chain.head_frontier, 7)])
        )
    elif what == "seq":
        chain.head_seq = max(0, chain.head_seq + draw(st.sampled_from([-2, -1, 1])))


ROW_TAMPERINGS = [
    flip_body,
    flip_hash,
    flip_prev_hash,
    relink,
    change_column,
    drop_row,
    duplicate_row,
]
TAMPERINGS = [*ROW_TAMPERINGS, change_seq, rewrite_from, truncate, tamper_checkpoint, tamper_head]


def verify_both(chain: Chain, with_key: bool, deep: bool):
    """The reference's result, once the fast path gave the same at every chunk size."""
    kwargs = {
        "head_seq": chain.head_seq,
        "head_hash": chain.head_hash,
        "head_frontier": chain.head_frontier,
        "checkpoints": chain.checkpoints,
        "public_key_pem": PUBLIC_KEY if with_key else None,
        "deep": deep,
    }
    expected = verify_rows_reference(chain.rows, **kwargs)
    for size, fast in FAST.items():
        assert fast(chain.rows, **kwargs) == expected, f"chunk_size {size}"
    return expected


@settings(max_examples=50, deadline=None, database=None)
@given(chain=chains(), with_key=st.booleans(), deep=st.booleans())
def test_untampered_chains_pass_both(chain, with_key, deep):
    result = verify_both(chain, with_key, deep)
    assert result.ok and result.length == chain.head_seq, result
    assert result.checkpoints_checked == len(chain.checkpoints), result


@settings(max_examples=400, deadline=None, database=None)
@given(
    chain=chains(),
    tamperings=st.lists(st.sampled_from(TAMPERINGS), min_size=1, max_size=2),
    with_key=st.booleans(),
    deep=st.booleans(),
    data=st.data(),
)
def test_tampered_chains_get_the_same_result_from_both(chain, tamperings, with_key, deep, data):
    hit = [tampering(chain, data.draw) for tampering in tamperings]
    result = verify_both(chain, with_key, deep)
    if len(tamperings) == 1 and tamperings[0] in ROW_TAMPERINGS and hit[0] is not None:
        assert (result.ok, result.first_bad_seq) == (False, hit[0]), result


@settings(max_examples=200, deadline=None, database=None)
@given(chain=chains(plain=True), data=st.data())
def test_each_tampering_of_plain_rows_gets_the_same_result_from_both(chain, data):
    """The batch check's own ground: rows that it passes whole, but for the one tampered
    (among the tamperings, an event rewritten, column and body alike, perhaps with raw
    control characters in its body). Every tampering, each on a copy of the chain."""
    for tampering in [*ROW_TAMPERINGS, rewrite_from]:
        copy = dataclasses.replace(chain, rows=list(chain.rows))
        hit = tampering(copy, data.draw)
        result = verify_both(copy, with_key=False, deep=False)
        if tampering in ROW_TAMPERINGS and hit is not None:
            assert (result.ok, result.first_bad_seq) == (False, hit), (tampering, result)
