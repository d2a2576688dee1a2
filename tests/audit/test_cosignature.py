"""C2SP tlog-cosignature v1 (Ed25519, type 0x04).

Vectors: the spec publishes an example cosignature line but not the witness key behind
it, so that line is checked for its structure only (key ID, the timestamp its signed-
message example shows, 64 signature bytes). The signing vector below was computed by hand
from the spec's description, with RFC 8032's test key 1 as the witness key, using
hashlib and `cryptography` directly (not this module): Ed25519 is deterministic, so the
bytes are fixed."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.cosignature import (
    CosignatureError,
    CosignerKey,
    cosign,
    cosigner_key_id,
    cosigner_vkey,
    parse_cosigner_vkey,
    parse_line,
    signed_message,
    verify_line,
)

RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
NAME = "witness.example.com/w1"
BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
TIME = 1679315147  # the spec's signed-message example
EXPECTED_KEY_ID = "7e6f4aaa"
EXPECTED_LINE = (
    "— witness.example.com/w1 fm9KqgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DLEru"
    "r7K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ==\n"
)
EXPECTED_VKEY = "witness.example.com/w1+7e6f4aaa+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
# From C2SP tlog-cosignature.md's example checkpoint (witness key not published).
SPEC_LINE = (
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJ"
    "sX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(RFC8032_SEED)


class TestVectors:
    def test_key_id_is_the_specs_formula(self):
        assert cosigner_key_id(NAME, RFC8032_PUB).hex() == EXPECTED_KEY_ID

    def test_signed_message_is_the_specs_example(self):
        assert signed_message(BODY, TIME) == (
            b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
            b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        )

    def test_cosign_gives_the_fixed_line(self, key):
        assert cosign(BODY, name=NAME, private_key=key, timestamp=TIME).line() == EXPECTED_LINE

    def test_vkey(self, key):
        assert cosigner_vkey(NAME, key.public_key()) == EXPECTED_VKEY
        assert parse_cosigner_vkey(EXPECTED_VKEY).key_id.hex() == EXPECTED_KEY_ID

    def test_the_specs_example_line_parses(self):
        cosignature = parse_line(SPEC_LINE)
        assert cosignature.name == NAME
        assert cosignature.key_id.hex() == "8d66cf3f"
        assert cosignature.timestamp == TIME
        assert len(cosignature.signature) == 64


class TestVerify:
    def test_fixed_line_verifies(self):
        verified = verify_line(BODY, EXPECTED_LINE, parse_cosigner_vkey(EXPECTED_VKEY))
        assert verified.timestamp == TIME

    def test_another_body_fails(self):
        with pytest.raises(CosignatureError) as caught:
            verify_line(
                BODY.replace("20852163", "20852164"),
                EXPECTED_LINE,
                parse_cosigner_vkey(EXPECTED_VKEY),
            )
        assert caught.value.code == "signature"

    def test_changed_timestamp_fails(self):
        blob = bytearray(base64.b64decode(EXPECTED_LINE.split()[-1]))
        blob[11] ^= 1
        line = f"— {NAME} {base64.b64encode(bytes(blob)).decode()}"
        with pytest.raises(CosignatureError) as caught:
            verify_line(BODY, line, parse_cosigner_vkey(EXPECTED_VKEY))
        assert caught.value.code == "signature"

    def test_another_witness_key_is_not_a_match(self):
        other = CosignerKey(NAME, Ed25519PrivateKey.generate().public_key())
        assert not other.verify(BODY, parse_line(EXPECTED_LINE))
        with pytest.raises(CosignatureError) as caught:
            verify_line(BODY, EXPECTED_LINE, other)
        assert caught.value.code == "key"

    def test_log_signature_line_is_not_a_cosignature(self):
        # the log's own (type 0x01) line in the spec's example: 4 + 64 bytes
        line = (
            "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
            "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8="
        )
        with pytest.raises(CosignatureError) as caught:
            parse_line(line)
        assert caught.value.code == "malformed"

    @pytest.mark.parametrize("timestamp", [-1, 2**63])
    def test_timestamp_range(self, key, timestamp):
        with pytest.raises(CosignatureError):
            cosign(BODY, name=NAME, private_key=key, timestamp=timestamp)

    def test_vkey_with_wrong_id_is_refused(self):
        with pytest.raises(CosignatureError):
            parse_cosigner_vkey(EXPECTED_VKEY.replace("7e6f4aaa", "7e6f4aab"))
