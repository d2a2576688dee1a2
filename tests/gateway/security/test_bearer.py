"""The Authorization header and the token's outer form: scheme, size, JOSE header, and the
challenge a refusal carries."""

from __future__ import annotations

import re
from typing import Any

import jwt
import pytest

from gateway.security import (
    AuthenticationError,
    Reason,
    TokenVerifier,
    bearer_challenge,
    mint_dev_token,
)
from tests.gateway.security.tokens import (
    DROP,
    SECRET,
    b64json,
    b64url,
    bearer,
    claims,
    compact,
    hs256,
    hs256_signer,
    hs_settings,
    refused,
)


class TestBearerHeader:
    @pytest.mark.parametrize(
        "value", [None, "", "   ", "Bearer", "Bearer   ", "Basic YWxpY2U6cHc="]
    )
    def test_no_bearer_token_is_token_missing(self, value: str | None) -> None:
        refused(TokenVerifier(hs_settings()), value, Reason.MISSING)

    def test_another_scheme_carrying_a_valid_token_is_token_missing(self) -> None:
        token = mint_dev_token(hs_settings(), sub="alice", roles=[])
        refused(TokenVerifier(hs_settings()), f"Token {token}", Reason.MISSING)

    @pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
    def test_scheme_is_case_insensitive(self, scheme: str) -> None:
        token = mint_dev_token(hs_settings(), sub="alice", roles=[])
        assert TokenVerifier(hs_settings()).verify(f"{scheme} {token}").sub == "alice"

    @pytest.mark.parametrize(
        "token", ["abc", "a.b", "a.b.c.d", "a*b.c.d", "é.b.c", "....", "a b.c.d"]
    )
    def test_not_a_compact_jws_is_malformed(self, token: str) -> None:
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.MALFORMED)

    @pytest.mark.parametrize(
        "header_segment", [b64url(b"not json"), b64json(["alg", "HS256"]), "!!", "A"]
    )
    def test_header_that_is_not_a_json_object_is_malformed(self, header_segment: str) -> None:
        token = f"{header_segment}.{b64json(claims())}.c2ln"
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.MALFORMED)

    @pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'"alice"'])
    def test_signed_payload_that_is_not_a_json_object_is_malformed(self, payload: bytes) -> None:
        signing_input = f"{b64json({'alg': 'HS256'})}.{b64url(payload)}"
        signature = hs256_signer(SECRET.encode())(signing_input.encode())
        token = f"{signing_input}.{b64url(signature)}"
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.MALFORMED)


class TestTokenSize:
    def test_token_over_8_kib_is_refused(self) -> None:
        settings = hs_settings()
        assert settings.max_token_bytes == 8192
        token = hs256(claims(padding="x" * 8192))
        assert len(token) > 8192
        refused(TokenVerifier(settings), bearer(token), Reason.TOO_LARGE)

    @pytest.mark.parametrize("junk", ["a" * 9000, "*" * 9000, "é" * 9000, " " * 20_000 + "x"])
    def test_oversized_value_is_refused_before_parsing(self, junk: str) -> None:
        refused(TokenVerifier(hs_settings()), bearer(junk), Reason.TOO_LARGE)

    def test_limit_is_inclusive_and_follows_settings(self) -> None:
        settings = hs_settings(max_token_bytes=1024)
        verifier = TokenVerifier(settings)
        tokens = [hs256(claims(padding="x" * size)) for size in range(600, 900)]
        largest_fitting = max((t for t in tokens if len(t) <= 1024), key=len)
        smallest_over = min((t for t in tokens if len(t) > 1024), key=len)
        assert verifier.verify(bearer(largest_fitting)).sub == "alice"
        refused(verifier, bearer(smallest_over), Reason.TOO_LARGE)


class TestHeader:
    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    def test_alg_none_is_refused(self, alg: str) -> None:
        unsigned = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims())}."
        verifier = TokenVerifier(hs_settings())
        refused(verifier, bearer(unsigned), Reason.ALGORITHM_REFUSED)
        with_signature = compact({"alg": alg}, claims(), hs256_signer(SECRET.encode()))
        refused(verifier, bearer(with_signature), Reason.ALGORITHM_REFUSED)

    @pytest.mark.parametrize("alg", ["HS512", "HS384", "RS256", "ES256", "PS256", "EdDSA"])
    def test_algorithms_other_than_hs256_are_refused_for_the_shared_secret(self, alg: str) -> None:
        token = compact({"alg": alg}, claims(), hs256_signer(SECRET.encode()))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.ALGORITHM_REFUSED)

    def test_hs512_with_the_right_secret_is_refused(self) -> None:
        token = jwt.encode(claims(), SECRET + "-padded-to-64-bytes-for-hs512-" + "x" * 32, "HS512")
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.ALGORITHM_REFUSED)

    @pytest.mark.parametrize("alg", [DROP, None, "", 256, ["HS256"]])
    def test_missing_or_non_string_alg_is_refused(self, alg: Any) -> None:
        header = {"typ": "JWT"} if alg is DROP else {"alg": alg}
        token = compact(header, claims(), hs256_signer(SECRET.encode()))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.HEADER_INVALID)

    @pytest.mark.parametrize(
        "extra",
        [
            {"crit": ["exp"], "exp": 1},
            {"crit": ["https://example.com/ext"], "https://example.com/ext": True},
            {"crit": ["unknown"]},
            {"crit": []},
            {"crit": "exp"},
            {"crit": ["b64"], "b64": False},
            {"crit": ["b64"], "b64": True},
        ],
    )
    def test_critical_extensions_are_refused(self, extra: dict[str, Any]) -> None:
        token = hs256(claims(), **extra)
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.HEADER_INVALID)

    def test_b64_without_crit_is_refused(self) -> None:
        token = hs256(claims(), b64=True)
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.HEADER_INVALID)

    @pytest.mark.parametrize("kid", [7, "", "has space", "k" * 129, ["a"], "semi;colon"])
    def test_malformed_kid_is_refused(self, kid: Any) -> None:
        token = hs256(claims(), kid=kid)
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.HEADER_INVALID)

    def test_kid_is_ignored_without_a_jwks(self) -> None:
        token = hs256(claims(), kid="some-key")
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"


class TestBearerChallenge:
    def test_missing_token_carries_no_error_code(self) -> None:
        challenge = bearer_challenge(AuthenticationError(Reason.MISSING, "no token"))
        assert challenge == 'Bearer realm="tunegate"'

    def test_invalid_token_names_the_error(self) -> None:
        error = AuthenticationError(Reason.EXPIRED, "the token has expired")
        assert bearer_challenge(error) == (
            'Bearer realm="tunegate", error="invalid_token", '
            'error_description="the token has expired"'
        )

    def test_description_keeps_to_the_rfc_6750_character_set(self) -> None:
        error = AuthenticationError(Reason.MALFORMED, 'a "quoted"\\ line\r\nbreak é')
        challenge = bearer_challenge(error)
        description = re.fullmatch(r'.*error_description="(.*)"', challenge).group(1)
        assert re.fullmatch(r"[\x20-\x21\x23-\x5b\x5d-\x7e]*", description)

    def test_every_refusal_of_the_verifier_fits(self) -> None:
        verifier = TokenVerifier(hs_settings())
        for value in [bearer("a.b"), bearer(hs256(claims(roles=["bad role"])))]:
            with pytest.raises(AuthenticationError) as caught:
                verifier.verify(value)
            assert caught.value.message in bearer_challenge(caught.value)
