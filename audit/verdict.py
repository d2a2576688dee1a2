"""What a verification of the audit trail finds, in the words both verifiers use.

The reference verifier (audit.verify) and the fast path (audit.verify_fast) must name the
same first bad seq for the same reason, message included; so the result types, the check
of one row, and every fault and its message are written here, once. Rows are DB-API tuples
in EVENT_COLUMNS order; their values are untrusted (anyone with DDL rights may have put
anything there), so every use of one is guarded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checkpoints import Checkpoint, CheckpointError, verify_checkpoint
from audit.encoding import CanonicalEncodingError, canonical_json, quote
from audit.event import BODY_HEAD, BODY_TAIL, EVENT_KEYS
from audit.hashing import CHAIN_PREFIX
from audit.merkle import unpack_frontier

EVENT_COLUMNS = (
    "seq",
    "ts",
    "actor",
    "tenant",
    "action",
    "resource",
    "decision",
    "policy_version",
    "body",
    "prev_hash",
    "hash",
)
Row = tuple[Any, ...]  # one audit_events row, EVENT_COLUMNS order, as the driver returns it


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class VerifyResult:
    """``length``: events in the chain (the head's seq); ``head``: the head hash (hex);
    ``pending``: events queued and not yet chained, in the same snapshot."""

    ok: bool
    length: int
    head: str | None
    first_bad_seq: int | None = None
    reason: Reason | None = None
    checkpoints_checked: int = 0
    pending: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "length": self.length,
            "head": self.head,
            "first_bad_seq": self.first_bad_seq,
            "reason": None
            if self.reason is None
            else {"code": self.reason.code, "message": self.reason.message},
            "checkpoints_checked": self.checkpoints_checked,
            "pending": self.pending,
        }


class Fault(NamedTuple):
    """The first thing found wrong: the seq it names (None: no one event), and why."""

    seq: int | None
    code: str
    message: str


@dataclass
class Snapshot:
    """What one read saw besides the rows 1..H: the head, rows outside 1..H as (seq, body),
    the checkpoints in tree-size order, and the events queued but not yet chained."""

    head_seq: int
    head_hash: bytes | None
    head_frontier: bytes | None
    strays: list[tuple[Any, Any]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    pending: int = 0

    @classmethod
    def of_rows(
        cls,
        rows: Sequence[Row],
        *,
        head_seq: int,
        head_hash: bytes,
        head_frontier: bytes | None,
        checkpoints: Sequence[Checkpoint],
    ) -> tuple[Snapshot, list[Row]]:
        """Rows held in memory: the snapshot, and the rows of seq 1..head_seq."""
        in_range = [row for row in rows if _in_chain(row[0], head_seq)]
        strays = [(row[0], row[8]) for row in rows if not _in_chain(row[0], head_seq)]
        return cls(head_seq, head_hash, head_frontier, strays, list(checkpoints)), in_range

    def failed(self, fault: Fault, checked: int = 0) -> VerifyResult:
        return VerifyResult(
            ok=False,
            length=self.head_seq,
            head=None if self.head_hash is None else self.head_hash.hex(),
            first_bad_seq=fault.seq,
            reason=Reason(fault.code, fault.message),
            checkpoints_checked=checked,
            pending=self.pending,
        )

    def passed(self, checked: int) -> VerifyResult:
        assert self.head_hash is not None  # head_fault() said so
        return VerifyResult(
            ok=True,
            length=self.head_seq,
            head=self.head_hash.hex(),
            checkpoints_checked=checked,
            pending=self.pending,
        )


def _in_chain(seq: object, head_seq: int) -> bool:
    return isinstance(seq, int) and 1 <= seq <= head_seq


# --- one row --------------------------------------------------------------------------------


def row_fault(row: Row, expected: int, last: bytes | None, deep: bool) -> Fault | None:
    """What is wrong with ``row`` as event ``expected``, following an event whose hash is
    ``last`` (None: the caller checks this row's link itself); None when nothing is.
    In this order: its seq, its link, its hash, its columns against its body."""
    seq, _, _, _, _, _, _, _, body, prev, digest = row
    if seq != expected:
        return gap_fault(expected, seq)
    if last is not None and prev != last:
        return link_fault(seq, last, prev)
    if not hash_recomputes(prev, body, digest):
        return Fault(seq, "hash_mismatch", f"event {seq}: hash does not recompute")
    if not columns_match(row) or (deep and not is_canonical_body(body)):
        return Fault(seq, "column_mismatch", column_message(row))
    return None


def hash_recomputes(prev: Any, body: Any, digest: Any) -> bool:
    """``digest == sha256(0x02 || prev || body)``, the chain link of audit.hashing."""
    try:
        return bool(sha256(CHAIN_PREFIX + prev + body).digest() == digest)
    except TypeError:  # a value of another type than the column's: not this hash
        return False


def columns_match(row: Row) -> bool:
    """The indexed columns, re-encoded into the body's fixed text frame (audit.event), are
    the body's first and last bytes; so the columns say what the hashed body says."""
    seq, ts, actor, tenant, action, resource, decision, version, body = row[:9]
    try:
        head = BODY_HEAD % (quote(action), quote(actor), quote(decision))
        version_json = "null" if version is None else quote(version)
        tail = BODY_TAIL % (version_json, quote(resource), seq, quote(tenant), quote(ts))
        return bool(body.startswith(head.encode()) and body.endswith(tail.encode()))
    except (TypeError, UnicodeEncodeError):
        return False


def body_fields(body: object) -> dict[str, Any] | None:
    if not isinstance(body, str | bytes | bytearray):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def is_canonical_body(body: object) -> bool:
    parsed = body_fields(body)
    if parsed is None or set(parsed) != set(EVENT_KEYS):
        return False
    try:
        return canonical_json(parsed) == body
    except CanonicalEncodingError:
        return False


# --- faults and their messages ----------------------------------------------------------------


def gap_fault(expected: int, found: object | None) -> Fault:
    """Event ``expected`` is not there; ``found``: the seq of the row in its place, if any."""
    message = f"event {expected} is missing"
    if isinstance(found, int) and found > expected:
        message += f" (next row has seq {found})"
    elif found is not None:
        message += f" (found a row with seq {found!r})"
    return Fault(expected, "seq_gap", message)


def link_fault(seq: int, expected: bytes, found: object) -> Fault:
    shown = found.hex() if isinstance(found, bytes) else repr(found)
    return Fault(
        seq,
        "prev_hash_mismatch",
        f"event {seq}: prev_hash is {shown}, event {seq - 1} has hash {expected.hex()}",
    )


def column_message(row: Row) -> str:
    seq, body = row[0], row[8]
    parsed = body_fields(body)
    if parsed is None:
        return f"event {seq}: body is not a JSON object"
    for name, value in zip(EVENT_COLUMNS[:8], row[:8], strict=True):
        if parsed.get(name, object()) != value:
            return f"event {seq}: column {name} is {value!r}, body says {parsed.get(name)!r}"
    return f"event {seq}: body is not in canonical form"


def stray_fault(stray_seq: object, body: object, size: int) -> Fault:
    """A row outside 1..size, named by the seq its body claims when that lies in 1..size."""
    claimed = (body_fields(body) or {}).get("seq")
    bad = claimed if isinstance(claimed, int) and 1 <= claimed <= size else size + 1
    if isinstance(stray_seq, int) and stray_seq > size:
        return Fault(
            bad, "rows_beyond_head", f"a row has seq {stray_seq} but the head is at {size}"
        )
    return Fault(bad, "seq_out_of_range", f"a row has seq {stray_seq!r}")


def first_fault(faults: Sequence[Fault | None]) -> Fault | None:
    """The fault of the lowest seq; of equals, the first listed. (Faults of events and of
    stray rows, the ones compared here, always name a seq.)"""
    found = [fault for fault in faults if fault is not None]
    return min(found, key=lambda fault: fault.seq or 0) if found else None


def head_fault(snapshot: Snapshot, last_hash: bytes) -> Fault | None:
    """The head row must exist and name the hash of event H, ``last_hash``."""
    if snapshot.head_hash is None:
        return Fault(None, "head_missing", "audit_chain_head has no row 1")
    if last_hash != snapshot.head_hash:
        size = snapshot.head_seq
        return Fault(
            size,
            "head_mismatch",
            f"head hash {snapshot.head_hash.hex()} is not event {size}'s ({last_hash.hex()})",
        )
    return None


def root_fault(previous_size: int, checkpoint: Checkpoint, computed: bytes) -> Fault:
    """The events after the last good checkpoint do not give ``checkpoint``'s root."""
    if checkpoint.tree_size == 0:
        return Fault(1, "checkpoint_root_mismatch", "checkpoint of size 0 has a wrong root")
    return Fault(
        previous_size + 1,
        "checkpoint_root_mismatch",
        f"events {previous_size + 1}..{checkpoint.tree_size} do not give the signed root of "
        f"checkpoint {checkpoint.tree_size} ({checkpoint.root_hash.hex()}; computed "
        f"{computed.hex()})",
    )


def beyond_head_fault(checkpoint: Checkpoint, size: int) -> Fault:
    return Fault(
        size + 1,
        "checkpoint_beyond_head",
        f"a checkpoint signs {checkpoint.tree_size} events but the chain has {size}",
    )


def frontier_fault(snapshot: Snapshot, frontier: list[bytes]) -> Fault | None:
    """The head's stored Merkle frontier must be the one of the events' tree."""
    if snapshot.head_frontier is None:
        return None
    try:
        stored = unpack_frontier(snapshot.head_frontier, snapshot.head_seq)
    except ValueError:
        stored = None
    if stored == frontier:
        return None
    return Fault(None, "frontier_mismatch", "the head's Merkle frontier does not match the events")


def signature_fault(checkpoints: Sequence[Checkpoint], key: Ed25519PublicKey) -> Fault | None:
    """Each checkpoint's signature under ``key``."""
    for checkpoint in checkpoints:
        try:
            verify_checkpoint(checkpoint, key)
        except CheckpointError as exc:
            return Fault(
                None, f"checkpoint_{exc.code}", f"checkpoint {checkpoint.tree_size}: {exc}"
            )
    return None
