"""A self-proving export (audit.export_proof, audit.range_proof) and verification that
reports its progress (audit.verify_progress), on the seeded chain of tests/audit."""

from __future__ import annotations

import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from audit.checkpoints import Signer
from audit.export_proof import export_with_proof, verify_export
from audit.hashing import chain_hash, leaf_hash
from audit.merkle import root, subtree_from_leaves
from audit.query import latest_checkpoint
from audit.range_proof import (
    RangeProofError,
    range_proof,
    root_from_range_proof,
    root_of_leaves,
    runs_of,
)
from audit.verify import verify_chain
from audit.verify_progress import verify_chain_reporting
from tests.audit.conftest import SEED_EVENTS
from tests.audit.test_verify import tamper


class TestRangeProof:
    @pytest.mark.parametrize("seed", range(40))
    def test_any_set_of_leaves_proves_the_root(self, seed):
        rng = random.Random(seed)
        size = rng.randint(1, 300)
        leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
        if seed % 3 == 0:  # one contiguous range, as a time-bounded export is
            start = rng.randrange(size)
            picked = list(range(start, rng.randint(start + 1, size)))
        else:
            picked = sorted(rng.sample(range(size), rng.randint(0, size)))
        runs = runs_of(picked)
        proof = range_proof(size, runs, subtree_from_leaves(leaves))

        def covered(lo: int, hi: int) -> bytes:
            return root_of_leaves(leaves[lo:hi])

        assert root_from_range_proof(size, runs, covered, proof) == root(leaves)

    def test_a_whole_tree_needs_no_hash_and_one_range_few(self):
        leaves = [leaf_hash(bytes([i])) for i in range(200)]
        assert range_proof(200, [(0, 200)], subtree_from_leaves(leaves)) == []
        assert len(range_proof(200, [(37, 150)], subtree_from_leaves(leaves))) <= 2 * 8

    def test_a_proof_of_the_wrong_length_is_refused(self):
        leaves = [leaf_hash(bytes([i])) for i in range(10)]
        proof = range_proof(10, [(2, 5)], subtree_from_leaves(leaves))
        with pytest.raises(RangeProofError):
            root_from_range_proof(10, [(2, 5)], lambda a, b: root_of_leaves(leaves[a:b]), proof[1:])
        with pytest.raises(RangeProofError):
            root_from_range_proof(
                10, [(2, 5)], lambda a, b: root_of_leaves(leaves[a:b]), [*proof, proof[0]]
            )


@pytest.fixture
def key(signer) -> bytes:
    return signer.public_key_pem()


def _export(engine, signer, **filters) -> list[bytes]:
    with Session(engine) as session:
        checkpoint = latest_checkpoint(session, signer)
        session.commit()
        lines = b"".join(export_with_proof(session, checkpoint=checkpoint, chunk_size=5, **filters))
    return lines.splitlines(keepends=True)


class TestExportProof:
    def test_a_whole_export_verifies(self, chain_engine, signer, key):
        lines = _export(chain_engine, signer)
        verdict = verify_export(lines, key)
        assert verdict.ok, verdict
        assert verdict.events == SEED_EVENTS and verdict.tree_size == SEED_EVENTS
        assert json.loads(lines[-1])["hashes"] == []

    def test_one_tenants_events_verify_though_the_chain_interleaves(
        self, chain_engine, signer, key
    ):
        lines = _export(chain_engine, signer, tenant="default")
        trailer = json.loads(lines[-1])
        assert 0 < trailer["events"] < SEED_EVENTS and trailer["hashes"]
        assert verify_export(lines, key).ok

    def test_an_edited_line_is_named_by_its_seq(self, chain_engine, signer, key):
        lines = _export(chain_engine, signer)
        lines[4] = lines[4].replace(b'"route":', b'"routE":')
        verdict = verify_export(lines, key)
        assert not verdict.ok and verdict.code == "hash" and verdict.first_bad_seq == 5

    def test_an_edited_line_with_a_fixed_hash_breaks_the_next_link(self, chain_engine, signer, key):
        lines = _export(chain_engine, signer)
        event = json.loads(lines[4])
        prev, _ = event.pop("prev_hash"), event.pop("hash")
        event["actor"] = "mallory"
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        digest = chain_hash(bytes.fromhex(prev), body)
        lines[4] = b'{"hash":"%s","prev_hash":"%s",%s\n' % (
            digest.hex().encode(),
            prev.encode(),
            body[1:],
        )
        verdict = verify_export(lines, key)
        assert not verdict.ok and verdict.code == "link" and verdict.first_bad_seq == 6

    def test_a_left_out_event_or_a_cut_file_fails(self, chain_engine, signer, key):
        lines = _export(chain_engine, signer, tenant="default")
        verdict = verify_export(lines[:2] + lines[3:], key)
        assert not verdict.ok and verdict.code in ("count", "inclusion")
        assert verify_export(lines[:-1], key).code == "no_proof"

    def test_another_key_is_refused(self, chain_engine, signer):
        other = Signer(Ed25519PrivateKey.generate()).public_key_pem()
        assert verify_export(_export(chain_engine, signer), other).code == "key_id"


class TestVerifyProgress:
    def test_reports_from_zero_to_the_end_and_agrees_with_verify(self, chain_engine, key):
        reports: list[tuple[int, int]] = []
        result = verify_chain_reporting(
            chain_engine, report=lambda c, t: reports.append((c, t)), public_key_pem=key
        )
        assert result == verify_chain(chain_engine, public_key_pem=key)
        assert reports[0] == (0, SEED_EVENTS) and reports[-1] == (SEED_EVENTS, SEED_EVENTS)

    def test_names_the_same_first_bad_seq(self, chain_engine, key):
        tamper(chain_engine, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 7")
        result = verify_chain_reporting(chain_engine, report=lambda c, t: None, public_key_pem=key)
        assert result == verify_chain(chain_engine, public_key_pem=key)
        assert result.first_bad_seq == 7


def test_the_database_writes_the_lines_export_jsonl_writes(chain_engine, signer):
    from audit.query import export_jsonl

    proven = _export(chain_engine, signer)[:-1]
    with Session(chain_engine) as session:
        plain = b"".join(export_jsonl(session)).splitlines(keepends=True)
    assert proven == plain
