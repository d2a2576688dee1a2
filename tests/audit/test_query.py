from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlmodel import Session

from audit.checkpoints import Signer
from audit.encoding import canonical_json
from audit.hashing import leaf_hash
from audit.merkle import inclusion_proof as reference_proof
from audit.merkle import root
from audit.offline import verify_proof
from audit.query import (
    export_jsonl,
    get_event,
    inclusion_proof,
    latest_checkpoint,
    list_events,
)
from tests.audit.conftest import SEED_EVENTS, append_seeded, seed_event


def bodies(engine) -> list[bytes]:
    with engine.connect() as connection:
        return [
            bytes(b)
            for b in connection.execute(
                text("SELECT body FROM audit_events ORDER BY seq")
            ).scalars()
        ]


class TestListEvents:
    def test_filters(self, chain_engine):
        with Session(chain_engine) as session:

            def seqs(**filters):
                return [e["seq"] for e in list_events(session, **filters).events]

            events = [seed_event(i) for i in range(SEED_EVENTS)]
            assert seqs(actor="bob") == [i + 1 for i, e in enumerate(events) if e["actor"] == "bob"]
            assert seqs(action="audit.read", decision="error") == [3, 6, 9, 12]
            assert seqs(tenant="default") == [1, 4, 7, 10]
            assert seqs(resource="ds:7") == [8]
            assert seqs(since="2026-11-28T12:00:03Z", until="2026-11-28T12:00:05.000005Z") == [4, 5]
            assert seqs(since="2026-11-28T13:00:04+01:00") == list(range(5, SEED_EVENTS + 1))
            assert seqs(actor="nobody") == []

    def test_events_carry_their_fields_and_hashes(self, chain_engine):
        with Session(chain_engine) as session:
            event = list_events(session, limit=1).events[0]
            assert event == get_event(session, 1)
            assert get_event(session, 999) is None
        expected = seed_event(0)
        assert {k: event[k] for k in expected} == expected
        assert event["seq"] == 1 and event["prev_hash"] == "00" * 32 and len(event["hash"]) == 64

    def test_cursor_pagination(self, chain_engine):
        seen, after = [], 0
        with Session(chain_engine) as session:
            while after is not None:
                page = list_events(session, after=after, limit=5)
                seen += [e["seq"] for e in page.events]
                after = page.next_after
            assert list_events(session, actor="alice", limit=1).next_after == 1
            assert list_events(session, actor="alice", after=1, limit=1).events[0]["seq"] == 5
            assert list_events(session, after=12).events == []
        assert seen == list(range(1, SEED_EVENTS + 1))

    @pytest.mark.parametrize(
        "bad", [{"limit": 0}, {"limit": 1001}, {"after": -1}, {"since": "yesterday"}]
    )
    def test_refuses_bad_arguments(self, chain_engine, bad):
        with Session(chain_engine) as session, pytest.raises(ValueError):
            list_events(session, **bad)


class TestExport:
    def test_jsonl_lines_give_back_the_exact_bodies(self, chain_engine):
        with Session(chain_engine) as session:
            chunks = list(export_jsonl(session, chunk_size=5))
        assert len(chunks) == 3  # 5 + 5 + 2, streamed chunk by chunk
        lines = b"".join(chunks).splitlines()
        assert len(lines) == SEED_EVENTS
        prev = "00" * 32
        for line, body in zip(lines, bodies(chain_engine), strict=True):
            event = json.loads(line)
            assert event["prev_hash"] == prev
            prev = event.pop("hash")
            event.pop("prev_hash")
            assert canonical_json(event) == body

    def test_filtered(self, chain_engine):
        with Session(chain_engine) as session:
            lines = b"".join(export_jsonl(session, decision="deny")).splitlines()
        assert [json.loads(x)["seq"] for x in lines] == [2, 5, 8, 11]


class TestInclusionProofs:
    def test_every_event_against_every_size(self, chain_engine, signer):
        leaves = [leaf_hash(b) for b in bodies(chain_engine)]
        with Session(chain_engine) as session:
            for size in range(1, SEED_EVENTS + 1):
                for seq in range(1, size + 1):
                    proof = inclusion_proof(session, seq, size)
                    assert [bytes.fromhex(h) for h in proof["hashes"]] == reference_proof(
                        leaves, seq - 1, size
                    )
                    assert proof["root_hash"] == root(leaves[:size]).hex()
                    assert proof["leaf_hash"] == leaves[seq - 1].hex()

    def test_offline_verification_with_the_latest_checkpoint(self, chain_engine, signer):
        with Session(chain_engine) as session:
            append_seeded(chain_engine, 1, None, start=50)  # the newest checkpoint is now behind
            checkpoint = latest_checkpoint(session, signer)
            session.commit()
            assert checkpoint.tree_size == SEED_EVENTS + 1
            proof = inclusion_proof(session, 6)
        doc, pem = checkpoint.to_json(), signer.public_key_pem()
        verdict = verify_proof(json.dumps(proof), json.dumps(doc).encode(), pem.decode())
        assert verdict.ok and verdict.code == "ok", verdict

    def test_offline_verification_says_why_not(self, chain_engine, signer):
        with Session(chain_engine) as session:
            checkpoint = latest_checkpoint(session, signer)
            assert checkpoint.tree_size == SEED_EVENTS  # signed at 12 already: reused
            proof = inclusion_proof(session, 6)
            older = inclusion_proof(session, 6, 8)
        doc, pem = checkpoint.to_json(), signer.public_key_pem()
        assert verify_proof(proof, doc, pem).ok

        def check(proof_doc, code, *, checkpoint_doc=doc, key=pem):
            verdict = verify_proof(proof_doc, checkpoint_doc, key)
            assert (verdict.ok, verdict.code) == (False, code), verdict
            return verdict.message

        body = json.loads(proof["body"])
        forged_body = canonical_json({**body, "actor": "mallory"}).decode()
        message = check(
            {**proof, "body": forged_body, "leaf_hash": leaf_hash(forged_body.encode()).hex()},
            "inclusion",
        )
        assert f"expected {checkpoint.root_hash.hex()}, found " in message
        check({**proof, "body": forged_body}, "leaf")
        check({**proof, "seq": 7, "leaf_index": 6}, "leaf")
        check({**proof, "hashes": proof["hashes"][::-1]}, "inclusion")
        check({**proof, "hashes": proof["hashes"][:-1]}, "inclusion")
        check(older, "tree_size")
        check({**proof, "hashes": ["zz"]}, "malformed")
        check("not json", "malformed")
        signature = bytearray(base64.b64decode(doc["signature"]))
        signature[0] ^= 1
        tampered = base64.b64encode(bytes(signature)).decode()
        check(proof, "signature", checkpoint_doc={**doc, "signature": tampered})
        bad_root = {**doc, "root_hash": "00" * 32}
        bad_root.pop("note")
        check(proof, "signature", checkpoint_doc=bad_root)
        other = Signer(Ed25519PrivateKey.generate())
        check(proof, "key_id", key=other.public_key_pem())

    def test_out_of_range(self, chain_engine):
        with Session(chain_engine) as session:
            for seq, size in [(0, None), (13, None), (5, 4), (1, 13), (1, 0)]:
                with pytest.raises(LookupError):
                    inclusion_proof(session, seq, size)


class TestProofsUseStoredSubtrees:
    def test_large_tree(self, fresh_engine, signer):
        engine = fresh_engine()
        count = 1000
        append_seeded(engine, count, None)
        leaves = [leaf_hash(b) for b in bodies(engine)]
        statements = []
        from sqlalchemy import event as sa_event

        @sa_event.listens_for(engine, "before_cursor_execute")
        def count_statements(conn, cursor, statement, *args):
            statements.append(statement)

        with Session(engine) as session:
            checkpoint = latest_checkpoint(session, signer)
            session.commit()
            for seq, size in [
                (1, 1000),
                (300, 1000),
                (777, 1000),
                (1000, 1000),
                (513, 600),
                (1, 256),
            ]:
                statements.clear()
                proof = inclusion_proof(session, seq, size)
                assert [bytes.fromhex(h) for h in proof["hashes"]] == reference_proof(
                    leaves, seq - 1, size
                )
                # a few node look-ups and at most two blocks of bodies, never the whole log
                assert len(statements) <= 12, statements
        with Session(engine) as session:
            proof = inclusion_proof(session, 777)
        assert verify_proof(proof, checkpoint.to_json(), signer.public_key_pem()).ok
