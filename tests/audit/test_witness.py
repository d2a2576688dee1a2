"""C2SP tlog-witness add-checkpoint: the request format and every refusal the spec names,
over real Ed25519 keys and real RFC 6962 trees held in memory; and the K-of-N rule."""

from __future__ import annotations

import base64
from hashlib import sha256

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.cosignature import CosignerKey, cosign, parse_line
from audit.hashing import leaf_hash
from audit.merkle import consistency_proof_from_leaves, root
from audit.note import TlogCheckpoint, Verifier, add_signature_lines, sign_note
from audit.witness import (
    AddCheckpoint,
    LogState,
    QuorumError,
    Verified,
    Witness,
    WitnessRefusal,
    check_against,
    format_add_checkpoint,
    parse_add_checkpoint,
    require_cosignatures,
)

ORIGIN = "tunegate.test/audit/global"
LEAVES = [leaf_hash(b"event %d" % i) for i in range(40)]
FORK = LEAVES[:10] + [leaf_hash(b"rewritten %d" % i) for i in range(10, 40)]


class MemoryStore:
    """audit.witness.Store in a dict (one thread at a time, so trivially atomic)."""

    def __init__(self) -> None:
        self.rows: dict[str, LogState] = {}

    def get(self, origin: str) -> LogState | None:
        return self.rows.get(origin)

    def save(self, verified: Verified) -> LogState:
        state = check_against(verified, self.rows.get(verified.origin))
        self.rows[verified.origin] = state
        return state


@pytest.fixture(scope="module")
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def witness(log_key) -> Witness:
    verifier = Verifier.ed25519(ORIGIN, log_key.public_key())
    return Witness(
        name="witness.test/w1",
        private_key=Ed25519PrivateKey.generate(),
        log_keys={ORIGIN: [verifier]},
    )


def note(key: Ed25519PrivateKey, leaves: list[bytes], size: int, origin: str = ORIGIN) -> str:
    return sign_note(
        TlogCheckpoint(origin, size, root(leaves[:size])).text(), name=origin, private_key=key
    )


def request(key, leaves, old: int, new: int, **kw) -> bytes:
    proof = consistency_proof_from_leaves(leaves, old, new) if 0 < old < new else []
    return format_add_checkpoint(old, proof, note(key, leaves, new, **kw))


def refusal(fn) -> WitnessRefusal:
    with pytest.raises(WitnessRefusal) as caught:
        fn()
    return caught.value


class TestRequestFormat:
    def test_the_specs_example_body_parses(self):
        body = (
            "old 20852014\n"
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
            "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
            "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
            "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
            "\n"
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
            "\n"
            "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
            "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
        ).encode()
        parsed = parse_add_checkpoint(body)
        assert parsed.old_size == 20852014
        assert parsed.proof[0] == base64.b64decode("PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=")
        assert len(parsed.proof) == 4
        assert parsed.note.startswith("example.com/behind-the-sofa\n20852163\n")
        assert format_add_checkpoint(parsed.old_size, parsed.proof, parsed.note) == body

    def test_old_zero_has_no_proof_lines(self):
        assert format_add_checkpoint(0, [], "n\n") == b"old 0\n\nn\n"
        assert parse_add_checkpoint(b"old 0\n\nn\n") == AddCheckpoint(0, [], "n\n")

    @pytest.mark.parametrize(
        "body",
        [
            b"old 01\n\nx",
            b"old -1\n\nx",
            b"new 1\n\nx",
            b"old 1\nnot-base64\n\nx",
            b"old 1\n",
            b"old 1\n" + b"AAAA\n" + b"\nx",
            b"old 1\n" + b"A" * 44 + b"\n\nx",
        ],
    )
    def test_malformed_bodies_are_400(self, body):
        assert refusal(lambda: parse_add_checkpoint(body)).status == 400

    def test_more_than_63_proof_lines_is_400(self):
        line = base64.b64encode(sha256(b"").digest()) + b"\n"
        assert refusal(lambda: parse_add_checkpoint(b"old 1\n" + line * 64 + b"\nx")).status == 400


class TestAddCheckpoint:
    def test_first_sight_then_growth_then_same(self, witness, log_key):
        store = MemoryStore()
        line = witness.add_checkpoint(request(log_key, LEAVES, 0, 10), store, now=1_700_000_000)
        cosignature = parse_line(line)
        assert cosignature.timestamp == 1_700_000_000
        key = CosignerKey(witness.name, witness.public_key)
        assert key.verify(TlogCheckpoint(ORIGIN, 10, root(LEAVES[:10])).text(), cosignature)
        assert store.get(ORIGIN).size == 10
        witness.add_checkpoint(request(log_key, LEAVES, 10, 40), store, now=1_700_000_001)
        assert store.get(ORIGIN).size == 40
        # the same checkpoint again: cosigned again (no proof between equal sizes)
        witness.add_checkpoint(request(log_key, LEAVES, 40, 40), store, now=1_700_000_002)
        assert store.get(ORIGIN).size == 40

    def test_unknown_origin_is_404(self, witness, log_key):
        body = request(log_key, LEAVES, 0, 5, origin="elsewhere.test/log")
        assert refusal(lambda: witness.add_checkpoint(body, MemoryStore(), now=1)).status == 404

    def test_unknown_key_is_403(self, witness):
        body = request(Ed25519PrivateKey.generate(), LEAVES, 0, 5)
        assert refusal(lambda: witness.add_checkpoint(body, MemoryStore(), now=1)).status == 403

    def test_bad_log_signature_is_403(self, witness, log_key):
        good = note(log_key, LEAVES, 5)
        text, sig = good.split("\n\n")
        blob = bytearray(base64.b64decode(sig.split()[-1]))
        blob[10] ^= 1
        forged = f"{text}\n\n— {ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
        body = format_add_checkpoint(0, [], forged)
        assert refusal(lambda: witness.add_checkpoint(body, MemoryStore(), now=1)).status == 403

    def test_old_above_new_is_400(self, witness, log_key):
        store = MemoryStore()
        witness.add_checkpoint(request(log_key, LEAVES, 0, 20), store, now=1)
        body = format_add_checkpoint(20, [], note(log_key, LEAVES, 10))
        assert refusal(lambda: witness.add_checkpoint(body, store, now=2)).status == 400

    def test_wrong_old_size_is_409_with_the_stored_size(self, witness, log_key):
        store = MemoryStore()
        witness.add_checkpoint(request(log_key, LEAVES, 0, 20), store, now=1)
        caught = refusal(
            lambda: witness.add_checkpoint(request(log_key, LEAVES, 10, 40), store, now=2)
        )
        assert (caught.status, caught.body, caught.content_type) == (
            409,
            "20\n",
            "text/x.tlog.size",
        )
        first = refusal(
            lambda: witness.add_checkpoint(request(log_key, LEAVES, 0, 40), store, now=2)
        )
        assert first.status == 409 and first.stored_size == 20

    def test_a_fork_is_422(self, witness, log_key):
        store = MemoryStore()
        witness.add_checkpoint(request(log_key, LEAVES, 0, 20), store, now=1)
        # same prefix of 10, rewritten after: its proof from 20 cannot match the stored root
        caught = refusal(
            lambda: witness.add_checkpoint(request(log_key, FORK, 20, 40), store, now=2)
        )
        assert caught.status == 422
        assert store.get(ORIGIN).size == 20

    def test_same_size_other_root_is_409(self, witness, log_key):
        store = MemoryStore()
        witness.add_checkpoint(request(log_key, LEAVES, 0, 20), store, now=1)
        caught = refusal(
            lambda: witness.add_checkpoint(request(log_key, FORK, 20, 20), store, now=2)
        )
        assert (caught.status, caught.stored_size) == (409, 20)

    def test_proof_from_zero_must_be_empty(self, witness, log_key):
        proof = consistency_proof_from_leaves(LEAVES, 10, 20)
        body = format_add_checkpoint(0, proof, note(log_key, LEAVES, 20))
        assert refusal(lambda: witness.add_checkpoint(body, MemoryStore(), now=1)).status == 422

    def test_the_decision_is_against_the_state_the_store_holds_at_save_time(self, witness, log_key):
        """Verified once (the log's signature), decided against whichever state the store
        holds when it saves: a state that moved meanwhile refuses it with the new size."""
        verified = witness.verify(request(log_key, LEAVES, 10, 20))
        at_10 = LogState(ORIGIN, 10, root(LEAVES[:10]), "n")
        assert check_against(verified, at_10).size == 20
        caught = refusal(lambda: check_against(verified, LogState(ORIGIN, 40, root(LEAVES), "n")))
        assert (caught.status, caught.stored_size) == (409, 40)

    def test_the_cosignature_is_the_libraries_own(self, witness, log_key):
        """The witness's cached key ID and message build the same line audit.cosignature
        does (the line is deterministic: Ed25519 signatures are)."""
        text = TlogCheckpoint(ORIGIN, 10, root(LEAVES[:10])).text()
        expected = cosign(text, name=witness.name, private_key=witness.private_key, timestamp=5)
        assert witness.cosign(text, now=5) == expected.line()

    def test_a_witness_name_must_be_a_key_name(self):
        with pytest.raises(ValueError):
            Witness(name="has space", private_key=Ed25519PrivateKey.generate(), log_keys={})


@pytest.fixture(scope="module")
def cosigned(log_key):
    witnesses = [Ed25519PrivateKey.generate() for _ in range(3)]
    names = [f"witness.test/w{i}" for i in range(3)]
    base = note(log_key, LEAVES, 40)
    lines = []
    for name, key in zip(names, witnesses[:2], strict=False):  # only two of three cosign
        w = Witness(name=name, private_key=key, log_keys={})
        lines.append(w.cosign(base.split("\n\n")[0] + "\n", now=1))
    keys = [CosignerKey(n, k.public_key()) for n, k in zip(names, witnesses, strict=True)]
    return add_signature_lines(base, lines), keys


class TestRequireCosignatures:
    def test_two_of_three(self, cosigned):
        full, keys = cosigned
        assert len(require_cosignatures(full, keys, 2)) == 2

    def test_three_of_three_fails(self, cosigned):
        full, keys = cosigned
        with pytest.raises(QuorumError) as caught:
            require_cosignatures(full, keys, 3)
        assert (caught.value.needed, caught.value.found) == (3, 2)

    def test_a_cosignature_on_another_checkpoint_does_not_count(self, cosigned, log_key):
        full, keys = cosigned
        other = note(log_key, LEAVES, 39)
        moved = add_signature_lines(other, full.split("\n\n")[1].splitlines()[1:])
        with pytest.raises(QuorumError):
            require_cosignatures(moved, keys, 1)

    def test_unknown_witnesses_are_ignored(self, cosigned):
        full, keys = cosigned
        stranger = CosignerKey("witness.test/w0", Ed25519PrivateKey.generate().public_key())
        with pytest.raises(QuorumError):
            require_cosignatures(full, [stranger], 1)
