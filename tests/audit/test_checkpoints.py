from __future__ import annotations

import base64
import os
import stat
import threading
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    Signer,
    checkpoint_note,
    key_id_of,
    load_or_create_signer,
    load_signer,
    verify_checkpoint,
)
from audit.hashing import leaf_hash

ROOT = leaf_hash(b"root")
TS = "2026-11-28T12:00:00.000000Z"


class TestNote:
    def test_fixed_text(self):
        assert checkpoint_note(8, bytes(32), TS) == (
            b"tunegate audit\n8\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
            b"2026-11-28T12:00:00.000000Z\n"
        )

    def test_fixed_signature_for_a_fixed_key(self, signer):
        # Ed25519 is deterministic: the same key and note give the same signature.
        checkpoint = signer.sign(8, bytes(32), TS)
        assert checkpoint.signature == signer.sign(8, bytes(32), TS).signature
        assert checkpoint.key_id == key_id_of(signer.public_key)
        assert len(checkpoint.key_id) == 64


class TestSignVerify:
    def test_round_trip_with_only_the_public_pem(self, signer):
        checkpoint = signer.sign(1234, ROOT, TS)
        doc = checkpoint.to_json()
        assert verify_checkpoint(doc, signer.public_key_pem()) == checkpoint
        assert verify_checkpoint(checkpoint, signer.public_key_pem().decode()) == checkpoint
        assert Checkpoint.from_json(doc) == checkpoint

    @pytest.mark.parametrize(
        "change",
        [
            {"tree_size": 1235},
            {"root_hash": leaf_hash(b"other root")},
            {"ts": "2026-11-28T12:00:00.000001Z"},
        ],
    )
    def test_changed_fields_break_the_signature(self, signer, change):
        forged = replace(signer.sign(1234, ROOT, TS), **change)
        with pytest.raises(CheckpointError) as caught:
            verify_checkpoint(forged, signer.public_key_pem())
        assert caught.value.code == "signature"

    def test_tampered_signature(self, signer):
        checkpoint = signer.sign(1234, ROOT, TS)
        signature = bytearray(checkpoint.signature)
        signature[10] ^= 1
        with pytest.raises(CheckpointError, match="signature does not verify"):
            verify_checkpoint(
                replace(checkpoint, signature=bytes(signature)), signer.public_key_pem()
            )

    def test_tampered_json_document(self, signer):
        doc = signer.sign(1234, ROOT, TS).to_json()
        doc["tree_size"] = 1235
        with pytest.raises(CheckpointError) as caught:
            verify_checkpoint(doc, signer.public_key_pem())
        assert caught.value.code == "malformed"  # the note no longer matches the fields
        del doc["note"]
        with pytest.raises(CheckpointError) as caught:
            verify_checkpoint(doc, signer.public_key_pem())
        assert caught.value.code == "signature"

    def test_another_key(self, signer):
        other = Signer(Ed25519PrivateKey.generate())
        checkpoint = signer.sign(1, ROOT, TS)
        with pytest.raises(CheckpointError) as caught:
            verify_checkpoint(checkpoint, other.public_key_pem())
        assert caught.value.code == "key_id"
        # Same key id claimed, other key's signature: still refused.
        forged = replace(other.sign(1, ROOT, TS), key_id=signer.key_id)
        with pytest.raises(CheckpointError) as caught:
            verify_checkpoint(forged, signer.public_key_pem())
        assert caught.value.code == "signature"

    @pytest.mark.parametrize(
        "doc",
        [
            [],
            {"tree_size": -1},
            {"tree_size": "8"},
            {"tree_size": 8, "root_hash": "zz", "signature": ""},
            {"tree_size": 8, "root_hash": "00" * 31, "signature": ""},
            {"tree_size": 8, "root_hash": "00" * 32, "signature": "!!", "ts": TS, "key_id": "k"},
            {"tree_size": 8, "root_hash": "00" * 32, "signature": "", "ts": "now", "key_id": "k"},
            {
                "tree_size": 8,
                "root_hash": "00" * 32,
                "signature": "",
                "ts": TS,
                "key_id": "k",
                "format": "other/v9",
            },
        ],
    )
    def test_malformed_documents(self, signer, doc):
        with pytest.raises(CheckpointError) as caught:
            verify_checkpoint(doc, signer.public_key_pem())
        assert caught.value.code == "malformed"

    def test_public_key_must_be_ed25519_pem(self, signer):
        checkpoint = signer.sign(1, ROOT, TS)
        with pytest.raises(CheckpointError, match="not PEM"):
            verify_checkpoint(checkpoint, b"not a key")


class TestKeyFiles:
    def test_load_or_create_makes_a_0600_key_once(self, tmp_path):
        path = tmp_path / "keys" / "audit.pem"
        first = load_or_create_signer(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert load_or_create_signer(path).key_id == first.key_id
        assert load_signer(path).key_id == first.key_id
        assert [p.name for p in path.parent.iterdir()] == ["audit.pem"]  # no temp left

    def test_concurrent_first_use_agrees_on_one_key(self, tmp_path):
        path = tmp_path / "audit.pem"
        ids, barrier = [], threading.Barrier(8)

        def create():
            barrier.wait()
            ids.append(load_or_create_signer(path).key_id)

        threads = [threading.Thread(target=create) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(ids)) == 1 and ids[0] == load_signer(path).key_id

    def test_load_existing_pem(self, tmp_path, signer):
        key = Ed25519PrivateKey.generate()
        path = tmp_path / "given.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        loaded = load_signer(path)
        assert loaded.key_id == key_id_of(key.public_key())
        checkpoint = loaded.sign(3, ROOT, TS)
        verify_checkpoint(checkpoint, loaded.public_key_pem())
        assert base64.b64decode(checkpoint.to_json()["signature"]) == checkpoint.signature

    def test_refuses_a_non_ed25519_key(self, tmp_path):
        from cryptography.hazmat.primitives.asymmetric import ec

        path = tmp_path / "ec.pem"
        path.write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(ValueError, match="not Ed25519"):
            load_signer(path)
