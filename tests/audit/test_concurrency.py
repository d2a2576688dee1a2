"""32 writers x 200 events, each event its own committed transaction: one linear chain,
whether appended directly or enqueued and chained by concurrent sequencers."""

from __future__ import annotations

import threading

from sqlalchemy import text
from sqlmodel import Session

from audit.chain import append, enqueue, read_head
from audit.hashing import GENESIS_HASH, chain_hash
from audit.sequencer import AuditSequencer
from audit.verify import verify_chain

WRITERS = 32
EACH = 200


def test_concurrent_appends_form_one_linear_chain(fresh_engine, signer):
    engine = fresh_engine(pool_size=WRITERS, max_overflow=0)
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            barrier.wait()
            for i in range(EACH):
                with Session(engine) as session:
                    append(
                        session,
                        actor=f"writer-{w}",
                        tenant="default",
                        action="test.append",
                        resource=f"r:{w}:{i}",
                        decision="allow",
                        details={"writer": w, "i": i},
                        signer=signer,
                        checkpoint_every=500,
                    )
                    session.commit()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]

    total = WRITERS * EACH
    with engine.connect() as connection:
        events = connection.execute(
            text("SELECT seq, resource, body, prev_hash, hash FROM audit_events ORDER BY seq")
        ).all()
    assert [e.seq for e in events] == list(range(1, total + 1))  # gapless from 1
    prev = GENESIS_HASH
    for e in events:  # linear: each links to the one before, no fork
        assert bytes(e.prev_hash) == prev and bytes(e.hash) == chain_hash(prev, bytes(e.body))
        prev = bytes(e.hash)
    assert len({e.resource for e in events}) == total  # every append landed exactly once
    for w in range(WRITERS):  # each writer's own events stay in its order
        mine = [int(e.resource.split(":")[2]) for e in events if e.resource.startswith(f"r:{w}:")]
        assert mine == list(range(EACH))
    with Session(engine) as session:
        head = read_head(session)
    assert (head.seq, head.hash) == (total, prev)
    result = verify_chain(engine, public_key_pem=signer.public_key_pem())
    assert result.ok, result
    assert result.checkpoints_checked == total // 500


SEQUENCERS = 3


def test_concurrent_enqueues_with_sequencers_form_one_linear_chain(fresh_engine, signer):
    """Each enqueue its own committed transaction while several sequencer threads chain
    the queue: every event chained exactly once, in one gapless linear chain."""
    engine = fresh_engine(pool_size=WRITERS + SEQUENCERS, max_overflow=0)
    sequencers = [
        AuditSequencer(
            engine, signer=signer, checkpoint_every=500, interval=0.02, max_batch=64
        ).start()
        for _ in range(SEQUENCERS)
    ]
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            barrier.wait()
            for i in range(EACH):
                with Session(engine) as session:
                    enqueue(
                        session,
                        actor=f"writer-{w}",
                        tenant="default",
                        action="test.enqueue",
                        resource=f"r:{w}:{i}",
                        decision="allow",
                        details={"writer": w, "i": i},
                    )
                    session.commit()
                sequencers[(w + i) % SEQUENCERS].notify()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sequencer in sequencers:
        sequencer.stop()
    assert not errors, errors[:3]

    total = WRITERS * EACH
    assert sum(s.failures for s in sequencers) == 0
    assert sum(s.chained for s in sequencers) == total  # no row chained twice
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_queue")).scalar() == 0
        events = connection.execute(
            text("SELECT seq, resource, body, prev_hash, hash FROM audit_events ORDER BY seq")
        ).all()
    assert [e.seq for e in events] == list(range(1, total + 1))  # gapless from 1
    prev = GENESIS_HASH
    for e in events:  # linear: each links to the one before, no fork
        assert bytes(e.prev_hash) == prev and bytes(e.hash) == chain_hash(prev, bytes(e.body))
        prev = bytes(e.hash)
    assert len({e.resource for e in events}) == total  # every enqueue landed exactly once
    for w in range(WRITERS):  # each writer's own events stay in its commit order
        mine = [int(e.resource.split(":")[2]) for e in events if e.resource.startswith(f"r:{w}:")]
        assert mine == list(range(EACH))
    result = verify_chain(engine, public_key_pem=signer.public_key_pem())
    assert (result.ok, result.length, result.pending) == (True, total, 0), result
    assert result.checkpoints_checked == total // 500
