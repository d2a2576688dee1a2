"""Consistency proofs read off the stored tree (audit_tree_nodes + 256-event blocks) equal
the in-memory reference (itself checked on the transparency-dev vectors in
test_consistency_vectors.py) and stay at a handful of reads; and the offline check of a
newer checkpoint against an older one refuses a rewritten history."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlmodel import Session

from audit.checkpoints import Signer
from audit.hashing import leaf_hash
from audit.merkle import consistency_proof_from_leaves, root
from audit.note import TlogCheckpoint
from audit.offline import TrustedKeys, verify_checkpoint_consistency
from audit.query import checkpoints_after, consistency, latest_checkpoint
from tests.audit.conftest import append_seeded


def _leaves(engine) -> list[bytes]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT body FROM audit_events ORDER BY seq")).scalars()
        return [leaf_hash(bytes(body)) for body in rows]


class TestStoredTree:
    def test_proofs_match_the_reference_with_few_reads(self, fresh_engine):
        engine = fresh_engine()
        append_seeded(engine, 700, None)
        leaves = _leaves(engine)
        statements: list[str] = []

        @sa_event.listens_for(engine, "before_cursor_execute")
        def count(conn, cursor, statement, *args):
            statements.append(statement)

        with Session(engine) as session:
            for first, second in [
                (0, 700),
                (1, 700),
                (255, 700),
                (256, 700),
                (257, 513),
                (512, 700),
                (600, 699),
                (700, 700),
                (3, 4),
            ]:
                statements.clear()
                proof = consistency(session, first, second)
                assert proof["hashes"] == consistency_proof_from_leaves(leaves, first, second)
                assert proof["first_root"] == root(leaves[:first])
                assert proof["second_root"] == root(leaves[:second])
                assert len(statements) <= 40, (first, second, len(statements))
            with pytest.raises(LookupError):
                consistency(session, 10, 701)
            with pytest.raises(LookupError):
                consistency(session, 11, 10)
            assert consistency(session, 5)["second"] == 700  # default: the current size


def _note(signer: Signer, leaves: list[bytes]) -> str:
    text_ = TlogCheckpoint(signer.origin, len(leaves), root(leaves)).text()
    return signer.sign_note(text_)


class TestOfflineConsistency:
    signer = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    keys = TrustedKeys.load(signer.vkey)
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(40)]

    def test_a_newer_checkpoint_that_extends_the_old_one(self):
        old, new = _note(self.signer, self.leaves[:13]), _note(self.signer, self.leaves)
        proof = consistency_proof_from_leaves(self.leaves, 13, 40)
        verdict = verify_checkpoint_consistency(old, new, proof, self.keys)
        assert verdict.ok, verdict
        assert (verdict.old_size, verdict.new_size) == (13, 40)

    def test_a_rewritten_history_is_refused(self):
        forked = list(self.leaves)
        forked[5] = leaf_hash(b"rewritten")
        old, new = _note(self.signer, self.leaves[:13]), _note(self.signer, forked)
        for proof in (
            consistency_proof_from_leaves(forked, 13, 40),
            consistency_proof_from_leaves(self.leaves, 13, 40),
        ):
            verdict = verify_checkpoint_consistency(old, new, proof, self.keys)
            assert not verdict.ok and verdict.code == "consistency", verdict

    def test_a_checkpoint_by_another_key_is_refused(self):
        other = Signer(Ed25519PrivateKey.from_private_bytes(bytes(32)))
        old, new = _note(self.signer, self.leaves[:13]), _note(other, self.leaves)
        proof = consistency_proof_from_leaves(self.leaves, 13, 40)
        verdict = verify_checkpoint_consistency(old, new, proof, self.keys)
        assert not verdict.ok and verdict.code == "signature", verdict

    def test_other_origin_is_refused(self):
        elsewhere = self.signer.with_origin("other.example/log")
        keys = TrustedKeys.load(self.signer.vkey, elsewhere.vkey)
        old, new = _note(self.signer, self.leaves[:13]), _note(elsewhere, self.leaves)
        proof = consistency_proof_from_leaves(self.leaves, 13, 40)
        verdict = verify_checkpoint_consistency(old, new, proof, keys)
        assert not verdict.ok and verdict.code == "origin", verdict

    def test_proof_for_other_sizes_names_the_right_request(self):
        old, new = _note(self.signer, self.leaves[:13]), _note(self.signer, self.leaves)
        import json

        proof = json.dumps({"first": 12, "second": 40, "hashes": []})
        verdict = verify_checkpoint_consistency(old, new, proof, self.keys)
        assert verdict.code == "tree_size"
        assert "first=13&second=40" in verdict.message


class TestStoredNotes:
    def test_issued_notes_verify_and_a_changed_row_is_never_resigned(self, chain_engine, signer):
        from audit.checkpoints import CheckpointError
        from audit.note import open_checkpoint

        with Session(chain_engine) as session:
            stored, ids, more = checkpoints_after(session, after=0, limit=2)
            assert [c.tree_size for c in stored] == [4, 8] and more
            latest = latest_checkpoint(session, signer)
        assert latest is not None
        note = signer.checkpoint_note(latest)
        assert note == signer.checkpoint_note(latest)  # Ed25519 is deterministic
        checkpoint, _ = open_checkpoint(note, [signer.verifier], origin=signer.origin)
        assert (checkpoint.size, checkpoint.root) == (latest.tree_size, latest.root_hash)
        from dataclasses import replace

        with pytest.raises(CheckpointError):
            signer.checkpoint_note(replace(latest, root_hash=bytes(32)))
