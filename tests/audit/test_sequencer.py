"""audit.sequencer.AuditSequencer: the background thread that chains queued events."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import text
from sqlmodel import Session
from structlog.testing import capture_logs

from audit.chain import pending
from audit.sequencer import AuditSequencer
from audit.verify import verify_chain
from tests.audit.conftest import SEED_EVENTS, enqueue_seeded

LIVENESS_BOUND_S = 60  # how long a test waits for the thread before calling it stuck


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIVENESS_BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"sequencer never got to: {what}"
        time.sleep(0.01)


def queued(engine) -> int:
    with Session(engine) as session:
        return pending(session)


class TestAuditSequencer:
    def test_notify_chains_queued_events(self, chain_engine):
        engine = chain_engine
        sequencer = AuditSequencer(engine, interval=3600).start()
        try:
            enqueue_seeded(engine, 5, start=500)
            sequencer.notify()
            wait_for(lambda: sequencer.chained == 5, "chain 5 events after notify")
        finally:
            sequencer.stop()
        assert queued(engine) == 0
        assert verify_chain(engine).length == SEED_EVENTS + 5

    def test_interval_wakes_it_without_notify(self, chain_engine):
        engine = chain_engine
        sequencer = AuditSequencer(engine, interval=0.05).start()
        try:
            enqueue_seeded(engine, 3, start=510)
            wait_for(lambda: sequencer.chained == 3, "chain 3 events on its own")
        finally:
            sequencer.stop()
        assert queued(engine) == 0

    def test_stop_drains_once_more(self, chain_engine):
        engine = chain_engine
        sequencer = AuditSequencer(engine, interval=3600).start()
        enqueue_seeded(engine, 4, start=520)
        sequencer.stop()  # no notify: only the final drain chains them
        assert not sequencer.alive
        assert (sequencer.chained, queued(engine)) == (4, 0)

    def test_survives_a_failing_sequence(self, chain_engine):
        engine = chain_engine
        with engine.begin() as connection:  # no head row: every sequence() raises
            head = connection.execute(text("SELECT * FROM audit_chain_head")).one()
            connection.execute(text("DELETE FROM audit_chain_head"))
        enqueue_seeded(engine, 2, start=530)
        with capture_logs() as logs:
            sequencer = AuditSequencer(engine, interval=0.05).start()
            try:
                sequencer.notify()
                wait_for(lambda: sequencer.failures >= 2, "fail twice")
                assert sequencer.alive
                with engine.begin() as connection:
                    connection.execute(
                        text("INSERT INTO audit_chain_head VALUES (:id, :seq, :hash, :frontier)"),
                        head._asdict(),
                    )
                sequencer.notify()
                wait_for(lambda: sequencer.chained == 2, "chain once the head is back")
                assert sequencer.alive
            finally:
                sequencer.stop()
        events = [entry["event"] for entry in logs]
        assert "audit.sequence_failed" in events
        sequenced = [entry for entry in logs if entry["event"] == "audit.sequenced"]
        assert [entry["events"] for entry in sequenced] == [2]
        assert verify_chain(engine).ok
