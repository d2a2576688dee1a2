"""audit.note against published vectors, never against its own output alone.

Sources (copied verbatim):
- golang.org/x/mod/sumdb/note/note_test.go (TestNewVerifier, TestSign, TestOpen): the
  PeterNeumann and EnochRoot keys, their signatures over the Neumann quote, and the
  mangled-key / bad-note cases.
- A real sum.golang.org checkpoint (go.sum database tree 49189689, as quoted in the
  sigsum-go monitoring notes from `GET https://sum.golang.org/lookup/...`), checked with the
  sum.golang.org verifier key the Go toolchain ships (cmd/go/internal/modfetch/key.go).
- c2sp.org/signed-note and c2sp.org/tlog-checkpoint examples (form only: their public keys
  are not published).
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.note import (
    MAX_SIGNATURES,
    NoteError,
    NoteSignature,
    TlogCheckpoint,
    Verifier,
    add_signature_lines,
    ed25519_vkey,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
    parse_vkey,
    sign_note,
)

# --- golang.org/x/mod/sumdb/note/note_test.go ---------------------------------------------
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKv"
    "qfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGw"
    "nWLox33WWd1RvMc+QQ=\n"
)

# --- sum.golang.org -----------------------------------------------------------------------
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CHECKPOINT = (
    "go.sum database tree\n"
    "49189689\n"
    "ftjbAOzaupaIvaPo/G+Dk63nxOZ2s1OPOKIaPtXs7S4=\n"
    "\n"
    "— sum.golang.org Az3grlKZssqRoMNPpZfKt0TphbbcF+pzXqElURJKRNFKfaUAgqeI5k2AORH0QAhg/ebRwy"
    "IqD/OqP4oLtLnNumvOBAM=\n"
)

# --- c2sp.org/signed-note and c2sp.org/tlog-checkpoint examples ---------------------------
C2SP_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONr"
    "MouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
    "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)


def peter_private_key() -> Ed25519PrivateKey:
    encoded = PETER_SKEY.split("+", 4)[4]  # PRIVATE+KEY+name+hash+base64(0x01 || seed)
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(encoded)[1:])


class TestKeys:
    def test_vkey_of_the_go_signer_key_is_the_published_vkey(self):
        assert ed25519_vkey("PeterNeumann", peter_private_key().public_key()) == PETER_VKEY

    def test_key_id_is_the_published_hash(self):
        verifier = parse_vkey(PETER_VKEY)
        assert verifier.key_id == bytes.fromhex("c74f20a3")
        assert key_id("PeterNeumann", 0x01, verifier.public_key).hex() == "c74f20a3"
        assert parse_vkey(ENOCH_VKEY).key_id.hex() == "af0cfe78"
        assert parse_vkey(SUMDB_VKEY).key_id.hex() == "033de0ae"

    def test_vkey_round_trips_through_the_verifier(self):
        assert parse_vkey(PETER_VKEY).vkey == PETER_VKEY

    @pytest.mark.parametrize(
        "bad",
        [
            # note_test.go: wrong length key with adjusted hash; unknown algorithm
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3",
            "",
        ],
    )
    def test_mangled_keys_are_refused(self, bad):
        with pytest.raises(NoteError) as caught:
            parse_vkey(bad)
        assert caught.value.code == "key"

    def test_every_prefix_and_byte_bump_of_the_key_is_refused(self):
        # note_test.go TestNewVerifier: every proper substring and every one-byte change
        for i in range(len(PETER_VKEY)):
            for j in (i + 1, len(PETER_VKEY)):
                if (i, j) != (0, len(PETER_VKEY)):
                    with pytest.raises(NoteError):
                        parse_vkey(PETER_VKEY[i:j])
            bumped = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
            with pytest.raises(NoteError):
                parse_vkey(bumped)


class TestSign:
    def test_signature_is_byte_for_byte_the_go_output(self):
        note = sign_note(TEXT, name="PeterNeumann", private_key=peter_private_key())
        assert note == TEXT + "\n" + PETER_SIG

    def test_text_without_final_newline_is_refused(self):
        with pytest.raises(NoteError) as caught:
            sign_note("abc", name="PeterNeumann", private_key=peter_private_key())
        assert caught.value.code == "malformed"

    def test_bad_key_name_is_refused(self):
        with pytest.raises(NoteError) as caught:
            sign_note(TEXT, name="a+b", private_key=peter_private_key())
        assert caught.value.code == "name"

    def test_add_signature_lines_appends_cosignatures_once(self):
        note = add_signature_lines(TEXT + "\n" + PETER_SIG, [ENOCH_SIG, ENOCH_SIG, PETER_SIG])
        assert note == TEXT + "\n" + PETER_SIG + ENOCH_SIG


class TestOpen:
    peter = parse_vkey(PETER_VKEY)
    enoch = parse_vkey(ENOCH_VKEY)

    def test_one_known_key_verifies_and_the_unknown_one_is_ignored(self):
        text, sigs = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [self.peter])
        assert text == TEXT
        assert [(s.name, s.key_id.hex()) for s in sigs] == [("PeterNeumann", "c74f20a3")]

    def test_both_known_keys_verify(self):
        _, sigs = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [self.peter, self.enoch])
        assert [s.name for s in sigs] == ["PeterNeumann", "EnochRoot"]

    def test_no_known_key_is_unverified(self):
        with pytest.raises(NoteError) as caught:
            open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
        assert caught.value.code == "unverified"

    def test_a_key_with_the_same_name_but_another_id_is_ignored(self):
        other = Verifier("PeterNeumann", bytes.fromhex("c74f20a4"), 1, self.peter.public_key)
        with pytest.raises(NoteError) as caught:
            open_note(TEXT + "\n" + PETER_SIG, [other])
        assert caught.value.code == "unverified"

    def test_a_bad_signature_by_a_known_key_rejects_the_note(self):
        bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]  # note_test.go "Invalid signature"
        with pytest.raises(NoteError) as caught:
            open_note(TEXT + "\n" + bad, [self.peter])
        assert caught.value.code == "signature"
        assert "PeterNeumann+c74f20a3" in str(caught.value)

    def test_duplicates_and_bad_unknown_signatures(self):
        # note_test.go "Duplicated verified and unverified signatures"
        enoch_bad = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
        note = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_bad
        _, sigs = open_note(note, [self.peter])
        assert [s.name for s in sigs] == ["PeterNeumann"]
        assert len(parse_note(note)[1]) == 3  # peter, enoch, enoch-with-ABCD

    def test_sixteen_signatures_are_accepted_and_101_lines_are_not(self):
        keys = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in range(16)]
        lines = [
            sign_note(TEXT, name=f"w{i}.example", private_key=k)[len(TEXT) + 1 :]
            for i, k in enumerate(keys)
        ]
        note = TEXT + "\n" + PETER_SIG + "".join(lines)
        verifiers = [self.peter] + [
            Verifier.ed25519(f"w{i}.example", k.public_key()) for i, k in enumerate(keys)
        ]
        assert len(open_note(note, verifiers)[1]) == 17
        with pytest.raises(NoteError) as caught:
            open_note(TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), [self.peter])
        assert caught.value.code == "too_many_signatures"

    @pytest.mark.parametrize(
        "message",
        [  # note_test.go "Invalid encoded message syntax"
            TEXT,
            TEXT + "\n",
            TEXT + "\n" + PETER_SIG[:-1],
            "\x01" + TEXT + "\n" + PETER_SIG,
            TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC"
            "2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
            TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        ],
    )
    def test_malformed_notes(self, message):
        with pytest.raises(NoteError) as caught:
            open_note(message, [self.peter])
        assert caught.value.code == "malformed"

    def test_invalid_utf8_is_malformed(self):
        with pytest.raises(NoteError) as caught:
            open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [self.peter])
        assert caught.value.code == "malformed"


class TestCheckpoints:
    def test_a_real_sum_golang_org_checkpoint_verifies(self):
        checkpoint, sigs = open_checkpoint(SUMDB_CHECKPOINT, [parse_vkey(SUMDB_VKEY)])
        assert checkpoint.origin == "go.sum database tree"
        assert checkpoint.size == 49189689
        assert base64.b64encode(checkpoint.root).decode() == (
            "ftjbAOzaupaIvaPo/G+Dk63nxOZ2s1OPOKIaPtXs7S4="
        )
        assert sigs[0].key_id.hex() == "033de0ae"

    def test_changing_the_size_of_the_real_checkpoint_breaks_it(self):
        forged = SUMDB_CHECKPOINT.replace("49189689", "49189690")
        with pytest.raises(NoteError) as caught:
            open_checkpoint(forged, [parse_vkey(SUMDB_VKEY)])
        assert caught.value.code == "signature"

    def test_origin_check(self):
        with pytest.raises(NoteError) as caught:
            open_checkpoint(SUMDB_CHECKPOINT, [parse_vkey(SUMDB_VKEY)], origin="other/log")
        assert caught.value.expected == "other/log"
        assert caught.value.found == "go.sum database tree"

    def test_c2sp_example_parses(self):
        text, sigs = parse_note(C2SP_CHECKPOINT)
        checkpoint = TlogCheckpoint.parse(text)
        assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
        assert checkpoint.text() == text  # we write exactly the spec's form
        assert sigs == [
            NoteSignature(
                "example.com/behind-the-sofa",
                base64.b64decode(sigs[0].line.split()[-1])[:4],
                sigs[0].signature,
            )
        ]
        assert len(sigs[0].signature) == 64

    def test_signed_note_example_keeps_its_inner_blank_line_in_the_text(self):
        text, sigs = parse_note(C2SP_NOTE)
        assert text.endswith("\ned è subito sera.\n")
        assert "\n\n" in text
        assert sigs[0].name == "quasimodo.example/salvatore"

    def test_extension_lines_are_tolerated_on_parse_and_never_written(self):
        text = "example.com/log\n5\n" + "A" * 43 + "=\nextension one\n"
        checkpoint = TlogCheckpoint.parse(text)
        assert checkpoint.extensions == ("extension one",)
        with pytest.raises(NoteError):
            checkpoint.text()

    @pytest.mark.parametrize(
        "text",
        [
            "example.com/log\n05\n" + "A" * 43 + "=\n",  # leading zero
            "example.com/log\n-1\n" + "A" * 43 + "=\n",
            "example.com/log\n5\nAAAA\n",  # not 32 bytes
            "\n5\n" + "A" * 43 + "=\n",  # empty origin
            "example.com/log\n5\n",  # too few lines
            "example.com/log\n5\n" + "A" * 43 + "=\n\n",  # empty extension line
        ],
    )
    def test_malformed_checkpoints(self, text):
        with pytest.raises(NoteError) as caught:
            TlogCheckpoint.parse(text)
        assert caught.value.code == "checkpoint"

    def test_empty_tree_size_is_zero(self):
        empty = TlogCheckpoint.parse(
            "example.com/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        )
        assert empty.size == 0


# --- c2sp.org/tlog-proof example (its signatures are elided with "[...]" in the spec) -----
C2SP_TLOG_PROOF = (
    "c2sp.org/tlog-proof@v1\n"
    "extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
    "index 73894\n"
    "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
    "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
    "EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
    "RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
    "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
    "\n"
    "example.com/fancylog\n"
    "109482\n"
    "sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n"
    "\n"
    "— example.com/fancylog hI2DJw[...]1roloI=\n"
    "— witness1.example mJirIklj[...]qY9v2B/5bg==\n"
)


class TestTlogProof:
    def test_the_spec_example_parses_and_writes_back_byte_for_byte(self):
        from audit.offline import TlogProof

        proof = TlogProof.parse(C2SP_TLOG_PROOF)
        assert proof.index == 73894
        assert len(proof.hashes) == 5 and all(len(h) == 32 for h in proof.hashes)
        assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64")
        assert proof.checkpoint.startswith("example.com/fancylog\n109482\n")
        assert proof.text() == C2SP_TLOG_PROOF

    @pytest.mark.parametrize(
        "bad",
        [
            C2SP_TLOG_PROOF.replace("@v1", "@v2"),
            C2SP_TLOG_PROOF.replace("index 73894", "index 073894"),
            C2SP_TLOG_PROOF.replace("index 73894\n", ""),
            C2SP_TLOG_PROOF.replace("AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=", "AHCi"),
        ],
    )
    def test_malformed_bundles(self, bad):
        from audit.offline import TlogProof

        with pytest.raises(NoteError) as caught:
            TlogProof.parse(bad)
        assert caught.value.code == "malformed"
