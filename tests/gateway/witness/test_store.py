"""The witness store's atomic, group-committed check-and-save on each backend: of many
concurrent saves from the same state exactly one wins; a batch is decided in its order
(a later request for a log sees the earlier one's new state) in one transaction; what
was answered survives a new store on the same database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.hashing import leaf_hash
from audit.merkle import consistency_proof_from_leaves, root
from audit.note import TlogCheckpoint, Verifier, sign_note
from audit.witness import LogState, Witness, WitnessRefusal, format_add_checkpoint
from gateway.witness.store import SqlStore

LEAVES = [leaf_hash(b"event %d" % i) for i in range(64)]
FORK = LEAVES[:8] + [leaf_hash(b"other %d" % i) for i in range(8, 64)]
ORIGINS = ["log.test/a", "log.test/b"]


@pytest.fixture(scope="module")
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def witness(log_key) -> Witness:
    keys = {o: [Verifier.ed25519(o, log_key.public_key())] for o in ORIGINS}
    return Witness(name="witness.test/w1", private_key=Ed25519PrivateKey.generate(), log_keys=keys)


@pytest.fixture
def store(fresh_engine):
    made = SqlStore(fresh_engine(migrate=False, pool_size=4, max_overflow=16))
    yield made
    made.close()


def verified(witness, log_key, old: int, new: int, *, leaves=LEAVES, origin=ORIGINS[0]):
    text = TlogCheckpoint(origin, new, root(leaves[:new])).text()
    proof = consistency_proof_from_leaves(leaves, old, new) if 0 < old < new else []
    note = sign_note(text, name=origin, private_key=log_key)
    return witness.verify(format_add_checkpoint(old, proof, note))


def test_one_concurrent_save_wins(store, witness, log_key):
    first = store.save(verified(witness, log_key, 0, 10))
    assert first == LogState(ORIGINS[0], 10, root(LEAVES[:10]), first.note)
    again = verified(witness, log_key, 0, 10)
    with pytest.raises(WitnessRefusal) as caught:  # first sight is over
        store.save(again)
    assert (caught.value.status, caught.value.stored_size) == (409, 10)
    candidates = [verified(witness, log_key, 10, 10 + i) for i in range(1, 17)]

    def save(candidate):
        try:
            return store.save(candidate)
        except WitnessRefusal as refusal:
            return refusal

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(save, candidates))
    won = [o for o in outcomes if isinstance(o, LogState)]
    assert len(won) == 1
    assert store.get(ORIGINS[0]) == won[0]
    lost = [o for o in outcomes if isinstance(o, WitnessRefusal)]
    assert {(o.status, o.stored_size) for o in lost} == {(409, won[0].size)}
    assert store.get(ORIGINS[1]) is None


def test_a_batch_is_decided_in_order_in_one_transaction(store, witness, log_key):
    batches = store.batches
    outcomes = store.save_all(
        [
            verified(witness, log_key, 0, 8),
            verified(witness, log_key, 8, 20),  # sees the size the first one saved
            verified(witness, log_key, 8, 30),  # stale: the log is at 20 now
            verified(witness, log_key, 20, 40, leaves=FORK),  # a fork: its proof fails
            verified(witness, log_key, 0, 5, origin=ORIGINS[1]),  # another log, same commit
            verified(witness, log_key, 20, 33),
        ]
    )
    assert store.batches == batches + 1
    kinds = [o.size if isinstance(o, LogState) else (o.status, o.stored_size) for o in outcomes]
    assert kinds == [8, 20, (409, 20), (422, None), 5, 33]
    assert store.get(ORIGINS[0]) == outcomes[5]
    assert store.get(ORIGINS[0]).root == root(LEAVES[:33])
    assert store.get(ORIGINS[1]) == outcomes[4]


def test_what_was_answered_is_what_a_new_store_reads(fresh_engine, witness, log_key):
    engine = fresh_engine(migrate=False)
    store = SqlStore(engine)
    saved = store.save(verified(witness, log_key, 0, 12))
    store.close()  # disposes the engine's connections; the database stays
    reopened = SqlStore(engine)
    try:
        assert reopened.get(ORIGINS[0]) == saved
        with pytest.raises(WitnessRefusal) as caught:
            reopened.save(verified(witness, log_key, 0, 12, leaves=FORK))
        assert caught.value.stored_size == 12
    finally:
        reopened.close()


def test_a_closed_store_refuses(store, witness, log_key):
    store.close()
    with pytest.raises(WitnessRefusal) as caught:
        store.save(verified(witness, log_key, 0, 3))
    assert caught.value.status == 503


def test_two_witness_processes_on_one_database_cannot_both_win(fresh_engine, witness, log_key):
    """Two stores (as two witness processes would have) over one database, each offered
    first sights of the same log at once: one size is saved, every other call is a 409."""
    from gateway.db import make_engine

    engine = fresh_engine(migrate=False)
    other_engine = make_engine(engine.url.render_as_string(hide_password=False))
    stores = [SqlStore(engine), SqlStore(other_engine)]
    candidates = [verified(witness, log_key, 0, 2 + i) for i in range(16)]

    def save(i: int):
        try:
            return stores[i % 2].save(candidates[i])
        except WitnessRefusal as refusal:
            return refusal

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(pool.map(save, range(16)))
        won = [o for o in outcomes if isinstance(o, LogState)]
        assert len(won) == 1
        lost = [o for o in outcomes if isinstance(o, WitnessRefusal)]
        assert {(o.status, o.stored_size) for o in lost} == {(409, won[0].size)}
        assert stores[1].get(ORIGINS[0]) == won[0]
    finally:
        for each in stores:
            each.close()
