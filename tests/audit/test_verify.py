# ruff: noqa: S608  (test SQL names fixed tables and columns; values go in as parameters)
"""verify_chain names the first bad seq, whatever was changed or removed.

Each test drops the append-only triggers (as an attacker with DDL rights could), changes
the seeded 12-event chain, and verifies; the fixture restores the chain afterwards. Every
tamper runs three ways: the fast path in one process, the fast path in 2 worker processes over
chunks of 4 events, and the row-by-row reference (audit.verify.verify_chain_reference)."""

from __future__ import annotations

import threading
from functools import partial

import pytest
from sqlalchemy import text
from sqlmodel import Session

from audit.chain import append
from audit.event import event_body
from audit.hashing import GENESIS_HASH, chain_hash, leaf_hash
from audit.merkle import frontier_of, pack_frontier
from audit.verify import (
    EVENT_COLUMNS,
    verify_chain,
    verify_chain_reference,
    verify_rows,
    verify_rows_reference,
)
from tests.audit.conftest import SEED_EVENTS, drop_append_only_triggers, seed_event

MODES = {
    "serial": verify_chain,
    "parallel": partial(verify_chain, workers=2, chunk_size=4),
    "reference": verify_chain_reference,
}
TAMPERED_ROWS = [1, 6, SEED_EVENTS]


@pytest.fixture(params=list(MODES))
def verify(request):
    """verify_chain(engine, **options) as each mode runs it."""
    return MODES[request.param]


@pytest.fixture(params=["serial", "reference"])
def verify_here(request):
    """The modes that run in this process (the tests of the head and the checkpoints)."""
    return MODES[request.param]


def flip(value: object, column: str) -> object:
    """The same value with one byte (blobs, integers) or one character (text) changed."""
    if column == "seq":
        return value ^ (1 << 32)
    if isinstance(value, bytes | memoryview):
        data = bytearray(value)
        data[len(data) // 2] ^= 0x01
        return bytes(data)
    i = len(value) // 2
    return value[:i] + chr(ord(value[i]) ^ 0x01) + value[i + 1 :]


def tamper(engine, sql: str, **params) -> None:
    drop_append_only_triggers(engine)
    with engine.begin() as connection:
        assert connection.execute(text(sql), params).rowcount >= 1


def cell(engine, column: str, seq: int):
    with engine.connect() as connection:
        return connection.execute(
            text(f"SELECT {column} FROM audit_events WHERE seq = :seq"), {"seq": seq}
        ).scalar()


def assert_bad(result, seq: int | None, *codes: str) -> None:
    assert not result.ok, result
    assert result.first_bad_seq == seq, result
    if codes:
        assert result.reason.code in codes, result


class TestCleanChain:
    def test_ok(self, chain_engine, signer, verify):
        result = verify(chain_engine, public_key_pem=signer.public_key_pem())
        assert result.ok, result
        assert (result.length, result.first_bad_seq, result.reason) == (SEED_EVENTS, None, None)
        assert result.checkpoints_checked == 3
        with chain_engine.connect() as connection:
            head = connection.execute(text("SELECT hash FROM audit_chain_head")).scalar()
        assert result.head == bytes(head).hex()
        assert result.to_dict()["ok"] is True

    def test_deep_parses_every_body(self, chain_engine, verify_here):
        assert verify_here(chain_engine, deep=True).ok

    def test_empty_chain(self, fresh_engine, verify_here):
        result = verify_here(fresh_engine())
        assert result.ok and result.length == 0 and result.head == "00" * 32

    def test_appends_during_verification_are_not_faults(self, chain_engine, verify):
        stop = threading.Event()

        def writer():
            i = 100
            while not stop.is_set():
                with Session(chain_engine) as session:
                    append(session, **seed_event(i))
                    session.commit()
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            results = [verify(chain_engine) for _ in range(5)]
        finally:
            stop.set()
            thread.join()
        assert all(r.ok for r in results), results


class TestTamperedColumns:
    @pytest.mark.parametrize("seq", TAMPERED_ROWS)
    @pytest.mark.parametrize("column", EVENT_COLUMNS)
    def test_one_byte_of_any_column_of_any_row(self, chain_engine, verify, column, seq):
        value = flip(cell(chain_engine, column, seq), column)
        tamper(
            chain_engine,
            f"UPDATE audit_events SET {column} = :v WHERE seq = :seq",
            v=value,
            seq=seq,
        )
        assert_bad(verify(chain_engine), seq)

    @pytest.mark.parametrize("moved_to", [0, -6])
    def test_seq_moved_below_one(self, chain_engine, verify, moved_to):
        tamper(chain_engine, "UPDATE audit_events SET seq = :v WHERE seq = 6", v=moved_to)
        assert_bad(verify(chain_engine), 6, "seq_gap", "seq_out_of_range")

    def test_policy_version_null_to_value_and_back(self, chain_engine, verify):
        assert cell(chain_engine, "policy_version", 5) is None
        tamper(chain_engine, "UPDATE audit_events SET policy_version = 'pv0' WHERE seq = 5")
        assert_bad(verify(chain_engine), 5, "column_mismatch")
        with chain_engine.begin() as connection:
            connection.execute(text("UPDATE audit_events SET policy_version = NULL WHERE seq = 5"))
            connection.execute(text("UPDATE audit_events SET policy_version = NULL WHERE seq = 3"))
        assert_bad(verify(chain_engine), 3, "column_mismatch")

    def test_column_mismatch_names_the_column(self, chain_engine, verify_here):
        tamper(chain_engine, "UPDATE audit_events SET tenant = 'evil' WHERE seq = 2")
        result = verify_here(chain_engine)
        assert_bad(result, 2, "column_mismatch")
        assert "column tenant is 'evil', body says 'acme'" in result.reason.message

    def test_a_value_of_another_type(self, chain_engine, backend, verify_here):
        if backend != "sqlite":
            pytest.skip("PostgreSQL columns are strictly typed")
        tamper(chain_engine, "UPDATE audit_events SET actor = X'616c696365' WHERE seq = 1")
        assert_bad(verify_here(chain_engine), 1, "column_mismatch")

    def test_two_tampered_rows_name_the_first(self, chain_engine, verify):
        tamper(chain_engine, "UPDATE audit_events SET actor = 'x' WHERE seq IN (3, 9)")
        assert_bad(verify(chain_engine), 3)


class TestDeletedRows:
    @pytest.mark.parametrize("seq", TAMPERED_ROWS)
    def test_delete_a_row(self, chain_engine, verify, seq):
        tamper(chain_engine, "DELETE FROM audit_events WHERE seq = :seq", seq=seq)
        assert_bad(verify(chain_engine), seq, "seq_gap")

    def test_delete_the_tail_and_roll_back_the_head(self, chain_engine, verify):
        """Consistent except for the signed checkpoint of 12 events."""
        with chain_engine.connect() as connection:
            rows = connection.execute(
                text("SELECT body, hash FROM audit_events ORDER BY seq")
            ).all()
        tamper(chain_engine, "DELETE FROM audit_events WHERE seq > 8")
        frontier = frontier_of([leaf_hash(bytes(r.body)) for r in rows[:8]])
        with chain_engine.begin() as connection:
            connection.execute(
                text("UPDATE audit_chain_head SET seq = 8, hash = :h, frontier = :f"),
                {"h": bytes(rows[7].hash), "f": pack_frontier(frontier)},
            )
        assert_bad(verify(chain_engine), 9, "checkpoint_beyond_head")
        assert verify(chain_engine, check_checkpoints=False).ok


class TestHead:
    def test_head_hash(self, chain_engine, verify_here):
        with chain_engine.begin() as connection:
            connection.execute(text("UPDATE audit_chain_head SET hash = :h"), {"h": bytes(32)})
        assert_bad(verify_here(chain_engine), SEED_EVENTS, "head_mismatch")

    def test_head_behind_the_rows(self, chain_engine, verify_here):
        with chain_engine.begin() as connection:
            connection.execute(text("UPDATE audit_chain_head SET seq = 10"))
        assert_bad(verify_here(chain_engine), 11, "rows_beyond_head")

    def test_head_frontier(self, chain_engine, verify_here):
        with chain_engine.begin() as connection:
            frontier = connection.execute(text("SELECT frontier FROM audit_chain_head")).scalar()
            connection.execute(
                text("UPDATE audit_chain_head SET frontier = :f"), {"f": flip(bytes(frontier), "f")}
            )
        assert_bad(verify_here(chain_engine), None, "frontier_mismatch")
        assert verify_here(chain_engine, check_checkpoints=False).ok

    def test_head_row_missing(self, chain_engine, verify_here):
        with chain_engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_chain_head"))
        assert_bad(verify_here(chain_engine), None, "head_missing")


class TestCheckpoints:
    def test_rewritten_chain_is_caught_by_the_signed_roots(self, chain_engine, verify):
        """Change event 6 and recompute every hash after it, head included: the chain is
        self-consistent again, but no longer gives the root signed at 8 events."""
        with chain_engine.connect() as connection:
            rows = connection.execute(
                text("SELECT seq, body, hash FROM audit_events ORDER BY seq")
            ).all()
        bodies = [bytes(r.body) for r in rows]
        bodies[5] = bodies[5].replace(b'"actor":"bob"', b'"actor":"eve"')
        drop_append_only_triggers(chain_engine)
        prev = bytes(rows[4].hash)
        with chain_engine.begin() as connection:
            for seq in range(6, SEED_EVENTS + 1):
                digest = chain_hash(prev, bodies[seq - 1])
                connection.execute(
                    text(
                        "UPDATE audit_events SET body = :b, prev_hash = :p, hash = :h, "
                        "actor = CASE WHEN seq = 6 THEN 'eve' ELSE actor END WHERE seq = :s"
                    ),
                    {"b": bodies[seq - 1], "p": prev, "h": digest, "s": seq},
                )
                prev = digest
            connection.execute(
                text("UPDATE audit_chain_head SET hash = :h, frontier = :f"),
                {"h": prev, "f": pack_frontier(frontier_of([leaf_hash(b) for b in bodies]))},
            )
        assert verify(chain_engine, check_checkpoints=False).ok
        result = verify(chain_engine)
        assert_bad(result, 5, "checkpoint_root_mismatch")  # somewhere in 5..8
        assert "events 5..8" in result.reason.message

    @pytest.mark.parametrize("column", ["signature", "root_hash", "tree_size", "ts"])
    def test_tampered_checkpoint(self, chain_engine, signer, column, verify_here):
        with chain_engine.connect() as connection:
            value = connection.execute(
                text(f"SELECT {column} FROM audit_checkpoints WHERE tree_size = 8")
            ).scalar()
        changed = {"tree_size": 7}.get(column) or flip(value if column != "ts" else value, column)
        drop_append_only_triggers(chain_engine)
        with chain_engine.begin() as connection:
            connection.execute(
                text(f"UPDATE audit_checkpoints SET {column} = :v WHERE tree_size = 8"),
                {"v": changed},
            )
        result = verify_here(chain_engine, public_key_pem=signer.public_key_pem())
        assert not result.ok, result
        if column in ("signature", "ts"):
            assert result.reason.code == "checkpoint_signature" and result.first_bad_seq is None
        else:  # the root no longer matches the tree at that size: found before signatures
            assert result.reason.code == "checkpoint_root_mismatch"
            assert result.first_bad_seq == 5

    def test_signatures_are_only_checked_with_a_key(self, chain_engine, verify_here):
        tamper(
            chain_engine,
            "UPDATE audit_checkpoints SET signature = :s WHERE tree_size = 4",
            s=bytes(64),
        )
        assert verify_here(chain_engine).ok


IN_MEMORY = {"fast": verify_rows, "fast, chunks of 2": partial(verify_rows, chunk_size=2)}
IN_MEMORY["reference"] = verify_rows_reference


@pytest.fixture(params=list(IN_MEMORY))
def verify_memory(request):
    return IN_MEMORY[request.param]


def chained(
    values: list[str], column: str = "actor", raw_body_at: int | None = None
) -> tuple[list[tuple], bytes]:
    """Rows of a chain, one event per value of ``column``; the body of event
    ``raw_body_at`` has its ``\\n`` escapes written as raw newlines (not JSON), and is
    chained as it is."""
    rows, prev = [], GENESIS_HASH
    for seq, value in enumerate(values, start=1):
        fields = {
            "ts": f"2026-11-28T12:00:{seq:02d}.000000Z",
            "actor": "alice",
            "tenant": "acme",
            "action": "audit.read",
            "resource": f"ds:{seq}",
            "decision": "allow",
            "policy_version": None,
        } | {column: value}
        body = event_body(seq=seq, details_json="{}", **fields)
        if seq == raw_body_at:
            body = body.replace(b"\\n", b"\n")
        digest = chain_hash(prev, body)
        rows.append((seq, *fields.values(), body, prev, digest))
        prev = digest
    return rows, prev


class TestInMemory:
    def test_verify_rows_agrees_with_the_database(self, chain_engine, verify_memory):
        with chain_engine.connect() as connection:
            rows = [
                tuple(r)
                for r in connection.execute(
                    text(f"SELECT {', '.join(EVENT_COLUMNS)} FROM audit_events ORDER BY seq")
                )
            ]
            head = connection.execute(
                text("SELECT seq, hash, frontier FROM audit_chain_head")
            ).one()
        rows = [(*r[:8], bytes(r[8]), bytes(r[9]), bytes(r[10])) for r in rows]
        kwargs = {
            "head_seq": head.seq,
            "head_hash": bytes(head.hash),
            "head_frontier": bytes(head.frontier),
        }
        assert verify_memory(rows, **kwargs).ok
        bad = list(rows)
        bad[6] = (*bad[6][:2], "mallory", *bad[6][3:])
        assert_bad(verify_memory(bad, **kwargs), 7, "column_mismatch")
        assert_bad(verify_memory(rows[:5] + rows[6:], **kwargs), 6, "seq_gap")

    @pytest.mark.parametrize("column", ["actor", "policy_version"])
    def test_a_body_that_is_not_json_even_alone_in_its_batch(self, verify_memory, column):
        """A column with a control character and a body that holds it raw (not JSON) were
        once passed by the batch check whenever nothing else in the batch was wrong."""
        rows, head = chained(["a", "a\nb", "c"], column, raw_body_at=2)
        result = verify_memory(rows, head_seq=3, head_hash=head)
        assert_bad(result, 2, "column_mismatch")
        assert result.reason.message == "event 2: body is not a JSON object"

    def test_the_link_of_a_chunk_first_row_is_checked_first(self, verify_memory):
        """prev_hash flipped on event 1 and on event 3 (the first of a chunk of 2): the
        link is named, as on any other row, whatever the chunking."""
        rows, head = chained(["a", "b", "c", "d"])
        for seq in (1, 2, 3):
            bad = list(rows)
            bad[seq - 1] = (
                *rows[seq - 1][:9],
                flip(rows[seq - 1][9], "prev_hash"),
                rows[seq - 1][10],
            )
            assert_bad(verify_memory(bad, head_seq=4, head_hash=head), seq, "prev_hash_mismatch")

    def test_a_gap_names_the_next_row_across_chunks(self, verify_memory):
        rows, head = chained(["a", "b", "c", "d", "e"])
        result = verify_memory(rows[:1] + rows[4:], head_seq=5, head_hash=head)
        assert_bad(result, 2, "seq_gap")
        assert result.reason.message == "event 2 is missing (next row has seq 5)"
