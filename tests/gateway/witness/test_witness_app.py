"""The witness process's HTTP app under a real uvicorn: the spec's statuses, and the
atomic check-and-save under concurrent add-checkpoint calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.cosignature import cosigner_vkey, parse_cosigner_vkey, verify_line
from audit.hashing import leaf_hash
from audit.merkle import consistency_proof_from_leaves, root
from audit.note import TlogCheckpoint, ed25519_vkey, sign_note
from audit.witness import format_add_checkpoint

ORIGIN = "tunegate.test/audit/global"
LEAVES = [leaf_hash(b"e%d" % i) for i in range(64)]


@pytest.fixture
def log_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def witness(witness_server, log_key):
    url, app = witness_server([ed25519_vkey(ORIGIN, log_key.public_key())])
    vkey = cosigner_vkey(app.state.witness.name, app.state.witness.public_key)
    return url, app, vkey


def body(log_key, old: int, new: int, leaves=LEAVES) -> bytes:
    text = TlogCheckpoint(ORIGIN, new, root(leaves[:new])).text()
    proof = consistency_proof_from_leaves(leaves, old, new) if 0 < old < new else []
    return format_add_checkpoint(old, proof, sign_note(text, name=ORIGIN, private_key=log_key))


class TestAddCheckpoint:
    def test_cosigns_and_follows_growth(self, witness, log_key):
        url, _app, vkey = witness
        with httpx.Client(base_url=url) as http:
            first = http.post("/add-checkpoint", content=body(log_key, 0, 8))
            assert first.status_code == 200
            text = TlogCheckpoint(ORIGIN, 8, root(LEAVES[:8])).text()
            verify_line(text, first.text, parse_cosigner_vkey(vkey))
            assert http.post("/add-checkpoint", content=body(log_key, 8, 20)).status_code == 200
            stale = http.post("/add-checkpoint", content=body(log_key, 8, 30))
            assert stale.status_code == 409
            assert stale.headers["content-type"].startswith("text/x.tlog.size")
            assert stale.text == "20\n"
            assert http.get("/vkey").text == vkey + "\n"

    def test_statuses(self, witness, log_key):
        url, _app, _vkey = witness
        with httpx.Client(base_url=url) as http:
            assert http.post("/add-checkpoint", content=b"nonsense").status_code == 400
            assert http.post("/add-checkpoint", content=b"x" * (1 << 17)).status_code == 413
            stranger = Ed25519PrivateKey.generate()
            assert http.post("/add-checkpoint", content=body(stranger, 0, 4)).status_code == 403
            assert http.post("/add-checkpoint", content=body(log_key, 0, 16)).status_code == 200
            fork = LEAVES[:4] + [leaf_hash(b"x%d" % i) for i in range(60)]
            assert (
                http.post("/add-checkpoint", content=body(log_key, 16, 40, fork)).status_code == 422
            )

    def test_concurrent_calls_cannot_both_win(self, witness, log_key):
        """Sixteen requests from the same old size with different new sizes at once:
        exactly one is cosigned, every other gets 409 naming the winner's size."""
        url, app, _vkey = witness
        with httpx.Client(base_url=url) as http:
            assert http.post("/add-checkpoint", content=body(log_key, 0, 4)).status_code == 200
        bodies = [body(log_key, 4, new) for new in range(10, 58, 3)]

        def post(content: bytes) -> httpx.Response:
            with httpx.Client(base_url=url) as http:
                return http.post("/add-checkpoint", content=content)

        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            responses = list(pool.map(post, bodies))
        winners = [r for r in responses if r.status_code == 200]
        assert len(winners) == 1
        stored = app.state.store.get(ORIGIN)
        assert {r.status_code for r in responses if r is not winners[0]} == {409}
        assert {r.text for r in responses if r.status_code == 409} == {f"{stored.size}\n"}
        assert stored.root == root(LEAVES[: stored.size])


def test_concurrent_calls_for_many_logs_are_all_cosigned(witness_server):
    """Eight logs pushing at once, each its next checkpoint once the last is answered: every
    call is cosigned (the store commits them together), each log ends at its last size."""
    keys = {f"log{i}.test/audit": Ed25519PrivateKey.generate() for i in range(8)}
    url, app = witness_server([ed25519_vkey(o, k.public_key()) for o, k in keys.items()])
    witness_key = parse_cosigner_vkey(
        cosigner_vkey(app.state.witness.name, app.state.witness.public_key)
    )

    def push(origin: str) -> list[int]:
        statuses, old = [], 0
        with httpx.Client(base_url=url) as http:
            for new in (3, 9, 20, 41, 64):
                text = TlogCheckpoint(origin, new, root(LEAVES[:new])).text()
                proof = consistency_proof_from_leaves(LEAVES, old, new) if old else []
                note = sign_note(text, name=origin, private_key=keys[origin])
                answer = http.post(
                    "/add-checkpoint", content=format_add_checkpoint(old, proof, note)
                )
                statuses.append(answer.status_code)
                verify_line(text, answer.text, witness_key)
                old = new
        return statuses

    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        results = list(pool.map(push, keys))
    assert results == [[200] * 5] * len(keys)
    assert {app.state.store.get(origin).size for origin in keys} == {64}
