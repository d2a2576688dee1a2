"""RS256/ES256 through a real JWKS endpoint on loopback: key selection, key confusion,
unusable provider keys, refresh and outage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.security import (
    AuthenticationError,
    JwksKeys,
    KeySetUnavailableError,
    Principal,
    Reason,
    TokenVerifier,
    mint_dev_token,
)
from tests.gateway.security.tokens import (
    JwksServer,
    b64url,
    bearer,
    claims,
    compact,
    ec_jwk,
    hs256_signer,
    jwks_settings,
    prod_jwks_only_settings,
    refused,
    rs256_signer,
    rsa_jwk,
    rsa_private_jwk,
    signed,
    with_payload,
)


class TestJwks:
    def test_rs256_and_es256_tokens_map_to_principals(
        self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec_key, "ec-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server, tenants=["default", "acme"]))
        rs = signed(rsa_key, "RS256", "rsa-1", claims(sub="bob", tenant="acme", roles=["admin"]))
        es = signed(ec_key, "ES256", "ec-1", claims(sub="carol", roles=["data-owner", "x.y"]))
        assert verifier.verify(bearer(rs)) == Principal("bob", "acme", ("admin",))
        assert verifier.verify(bearer(es)) == Principal("carol", "default", ("data-owner", "x.y"))
        assert jwks_server.hits == 1

    def test_hs256_tokens_still_verify_without_touching_the_jwks(
        self, jwks_server: JwksServer
    ) -> None:
        settings = jwks_settings(jwks_server)
        token = mint_dev_token(settings, sub="alice", roles=["admin"])
        assert TokenVerifier(settings).verify(bearer(token)).roles == ("admin",)
        assert jwks_server.hits == 0

    def test_jwks_only_deployment_verifies_provider_tokens(
        self, jwks_server: JwksServer, rsa_key: Any, tmp_path: Path
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        verifier = TokenVerifier(prod_jwks_only_settings(jwks_server, tmp_path))
        token = signed(rsa_key, "RS256", "rsa-1", claims())
        assert verifier.verify(bearer(token)).sub == "alice"

    def test_payload_edited_after_signing_is_refused(
        self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec_key, "ec-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server))
        for key, alg, kid in [(rsa_key, "RS256", "rsa-1"), (ec_key, "ES256", "ec-1")]:
            token = signed(key, alg, kid, claims(roles=["ml-engineer"]))
            tampered = with_payload(token, claims(roles=["admin"]))
            refused(verifier, bearer(tampered), Reason.SIGNATURE_INVALID)

    def test_token_signed_by_another_key_under_a_known_kid_is_refused(
        self, jwks_server: JwksServer, rsa_key: Any, rsa_key_2: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        token = signed(rsa_key_2, "RS256", "rsa-1", claims())
        refused(TokenVerifier(jwks_settings(jwks_server)), bearer(token), Reason.SIGNATURE_INVALID)

    def test_unknown_kid_is_refused(self, jwks_server: JwksServer, rsa_key: Any) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        token = signed(rsa_key, "RS256", "rsa-9", claims())
        message = refused(
            TokenVerifier(jwks_settings(jwks_server)), bearer(token), Reason.KEY_UNKNOWN
        )
        assert "rsa-9" in message

    def test_provider_token_without_kid_is_refused(
        self, jwks_server: JwksServer, rsa_key: Any, tmp_path: Path
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        token = signed(rsa_key, "RS256", None, claims())
        refused(TokenVerifier(jwks_settings(jwks_server)), bearer(token), Reason.ALGORITHM_REFUSED)
        jwks_only = TokenVerifier(prod_jwks_only_settings(jwks_server, tmp_path))
        refused(jwks_only, bearer(token), Reason.KEY_UNKNOWN)

    @pytest.mark.parametrize(
        ("kid", "alg"),
        [
            ("rsa-1", "ES256"),
            ("rsa-1", "RS512"),
            ("rsa-1", "PS256"),
            ("rsa-1", "HS256"),
            ("ec-1", "RS256"),
            ("ec-1", "ES384"),
            ("ec-1", "HS256"),
        ],
    )
    def test_algorithm_is_pinned_by_key_type(
        self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any, kid: str, alg: str
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec_key, "ec-1"))
        token = compact({"alg": alg, "kid": kid}, claims(), hs256_signer(b"whatever"))
        refused(TokenVerifier(jwks_settings(jwks_server)), bearer(token), Reason.ALGORITHM_REFUSED)

    def test_rs512_signed_by_the_right_key_is_refused(
        self, jwks_server: JwksServer, rsa_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        token = signed(rsa_key, "RS512", "rsa-1", claims())
        refused(TokenVerifier(jwks_settings(jwks_server)), bearer(token), Reason.ALGORITHM_REFUSED)


class TestKeyConfusion:
    """HS256 signed with the provider's RSA public key (PEM) as the HMAC secret: the
    classic attack on verifiers that take the algorithm from the token."""

    @pytest.fixture
    def forged(self, rsa_key: Any) -> Callable[..., str]:
        pem = rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

        def forge(**header: Any) -> str:
            return compact(
                {"alg": "HS256", "typ": "JWT", **header}, claims(roles=["admin"]), hs256_signer(pem)
            )

        return forge

    def test_with_the_jwks_kid_is_refused(
        self, jwks_server: JwksServer, rsa_key: Any, forged: Callable[..., str]
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server))
        refused(verifier, bearer(forged(kid="rsa-1")), Reason.ALGORITHM_REFUSED)

    def test_without_kid_meets_the_shared_secret_and_fails(
        self, jwks_server: JwksServer, rsa_key: Any, forged: Callable[..., str]
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server))
        refused(verifier, bearer(forged()), Reason.SIGNATURE_INVALID)

    def test_without_a_shared_secret_hs256_is_refused(
        self, jwks_server: JwksServer, rsa_key: Any, forged: Callable[..., str], tmp_path: Path
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        verifier = TokenVerifier(prod_jwks_only_settings(jwks_server, tmp_path))
        refused(verifier, bearer(forged()), Reason.ALGORITHM_REFUSED)
        refused(verifier, bearer(forged(kid="rsa-1")), Reason.ALGORITHM_REFUSED)


class TestUnusableProviderKeys:
    """Keys in the served set that must never verify anything; the good key beside them
    still works, and naming them does not make the gateway refetch."""

    def test_each_is_refused(self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any) -> None:
        # Too small on purpose: the point is that the gateway refuses it.
        small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        p384 = ec.generate_private_key(ec.SECP384R1())
        hmac_secret = b"a-symmetric-key-published-in-the-jwks!!"
        jwks_server.serve(
            rsa_jwk(rsa_key, "good"),
            rsa_jwk(small_rsa, "rsa-1024"),
            ec_jwk(p384, "p-384"),
            {"kty": "oct", "kid": "oct", "k": b64url(hmac_secret)},
            {**rsa_jwk(rsa_key, "enc"), "use": "enc"},
            {**rsa_jwk(rsa_key, "rs512"), "alg": "RS512"},
            {**ec_jwk(ec_key, "ec-as-es384"), "alg": "ES384"},
            rsa_private_jwk(rsa_key, "private"),
            rsa_jwk(rsa_key, "twice"),
            ec_jwk(ec_key, "twice"),
        )
        verifier = TokenVerifier(jwks_settings(jwks_server, jwks_min_refresh_seconds=0))
        assert verifier.verify(bearer(signed(rsa_key, "RS256", "good", claims()))).sub
        hits = jwks_server.hits
        attempts = [
            compact({"alg": "RS256", "kid": "rsa-1024"}, claims(), rs256_signer(small_rsa)),
            signed(p384, "ES384", "p-384", claims()),
            compact({"alg": "HS256", "kid": "oct"}, claims(), hs256_signer(hmac_secret)),
            signed(rsa_key, "RS256", "enc", claims()),
            signed(rsa_key, "RS256", "rs512", claims()),
            signed(rsa_key, "RS512", "rs512", claims()),
            signed(ec_key, "ES256", "ec-as-es384", claims()),
            signed(rsa_key, "RS256", "private", claims()),
            signed(rsa_key, "RS256", "twice", claims()),
            signed(ec_key, "ES256", "twice", claims()),
        ]
        for token in attempts:
            refused(verifier, bearer(token), Reason.KEY_UNKNOWN)
        assert jwks_server.hits == hits


class TestJwksRefresh:
    def test_new_kid_is_picked_up(self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "2024"))
        verifier = TokenVerifier(jwks_settings(jwks_server, jwks_min_refresh_seconds=0.2))
        assert verifier.verify(bearer(signed(rsa_key, "RS256", "2024", claims()))).sub
        jwks_server.serve(rsa_jwk(rsa_key, "2024"), ec_jwk(ec_key, "2025"))
        time.sleep(0.3)
        assert verifier.verify(bearer(signed(ec_key, "ES256", "2025", claims()))).sub
        assert verifier.verify(bearer(signed(rsa_key, "RS256", "2024", claims()))).sub
        assert jwks_server.hits == 2

    def test_removed_key_stops_verifying_after_an_unknown_kid_refresh(
        self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "old"), ec_jwk(ec_key, "new"))
        verifier = TokenVerifier(jwks_settings(jwks_server, jwks_min_refresh_seconds=0.2))
        old_token = signed(rsa_key, "RS256", "old", claims())
        assert verifier.verify(bearer(old_token)).sub
        jwks_server.serve(ec_jwk(ec_key, "new"))
        # Until the next fetch the cached set still holds it: that is the cache.
        assert verifier.verify(bearer(old_token)).sub
        time.sleep(0.3)
        refused(verifier, bearer(signed(rsa_key, "RS256", "newer", claims())), Reason.KEY_UNKNOWN)
        assert jwks_server.hits == 2
        refused(verifier, bearer(old_token), Reason.KEY_UNKNOWN)
        assert verifier.verify(bearer(signed(ec_key, "ES256", "new", claims()))).sub

    def test_removed_key_stops_verifying_when_the_cache_expires(
        self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "old"), ec_jwk(ec_key, "new"))
        verifier = TokenVerifier(
            jwks_settings(jwks_server, jwks_min_refresh_seconds=0.1), jwks_cache_seconds=0.2
        )
        old_token = signed(rsa_key, "RS256", "old", claims())
        assert verifier.verify(bearer(old_token)).sub
        jwks_server.serve(ec_jwk(ec_key, "new"))
        time.sleep(0.3)
        refused(verifier, bearer(old_token), Reason.KEY_UNKNOWN)
        assert jwks_server.hits == 2

    def test_unknown_kids_refetch_at_most_once_per_period(
        self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server))  # the default: 60 s
        assert verifier.verify(bearer(signed(rsa_key, "RS256", "rsa-1", claims()))).sub
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec_key, "ec-1"))
        for n in range(25):
            token = signed(rsa_key, "RS256", f"random-{n}", claims())
            refused(verifier, bearer(token), Reason.KEY_UNKNOWN)
        # Even a kid that the provider now serves waits for the period to end.
        refused(verifier, bearer(signed(ec_key, "ES256", "ec-1", claims())), Reason.KEY_UNKNOWN)
        assert jwks_server.hits == 1

    def test_concurrent_unknown_kids_share_one_fetch(
        self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec_key, "ec-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server))
        tokens = [signed(ec_key, "ES256", "ec-1", claims(sub=f"u{n}")) for n in range(16)]
        tokens += [signed(ec_key, "ES256", f"nope-{n}", claims()) for n in range(16)]
        outcomes: list[str] = []
        start = threading.Barrier(len(tokens))

        def verify(token: str) -> None:
            start.wait()
            try:
                outcomes.append(verifier.verify(bearer(token)).sub)
            except AuthenticationError as error:
                outcomes.append(error.reason)

        threads = [threading.Thread(target=verify, args=(token,)) for token in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == sorted([f"u{n}" for n in range(16)] + [Reason.KEY_UNKNOWN] * 16)
        assert jwks_server.hits == 1

    def test_refresh_period_over_several_periods(
        self, jwks_server: JwksServer, rsa_key: Any
    ) -> None:
        """The same rule on JwksKeys with a hand-driven monotonic clock, over real HTTP."""
        clock = [1000.0]
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        keys = JwksKeys(
            jwks_server.url, cache_seconds=300, min_refresh_seconds=60, monotonic=lambda: clock[0]
        )
        assert keys.key_for("rsa-1").algorithm == "RS256"
        for now, expected_hits in [(1000, 1), (1059.9, 1), (1060, 2), (1080, 2), (1121, 3)]:
            clock[0] = now
            for _ in range(5):
                with pytest.raises(AuthenticationError):
                    keys.key_for("missing")
            assert jwks_server.hits == expected_hits, now
        clock[0] = 1500  # the cache has expired: one fetch, known kids included
        assert keys.key_for("rsa-1").algorithm == "RS256"
        assert jwks_server.hits == 4


class TestJwksOutage:
    def test_no_key_set_yet_is_jwks_unavailable(
        self, jwks_server: JwksServer, rsa_key: Any
    ) -> None:
        jwks_server.fail(500)
        verifier = TokenVerifier(jwks_settings(jwks_server))
        token = signed(rsa_key, "RS256", "rsa-1", claims())
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                with pytest.raises(KeySetUnavailableError) as caught:
                    verifier.verify(bearer(token))
                assert caught.value.reason == Reason.JWKS_UNAVAILABLE
                assert isinstance(caught.value, AuthenticationError)
        assert jwks_server.hits == 1
        assert [entry["event"] for entry in logs] == ["jwks.refresh_failed"]

    @pytest.mark.parametrize("body", [b'{"keys": []}', b"<html>down</html>", b"[]", b'{"k": 1}'])
    def test_unusable_response_is_jwks_unavailable(
        self, jwks_server: JwksServer, rsa_key: Any, body: bytes
    ) -> None:
        jwks_server.serve_raw(body)
        token = signed(rsa_key, "RS256", "rsa-1", claims())
        verifier = TokenVerifier(jwks_settings(jwks_server))
        refused(verifier, bearer(token), Reason.JWKS_UNAVAILABLE)
        assert jwks_server.hits == 1

    def test_cached_keys_survive_a_failed_refresh(
        self, jwks_server: JwksServer, rsa_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        verifier = TokenVerifier(
            jwks_settings(jwks_server, jwks_min_refresh_seconds=0.1), jwks_cache_seconds=0.2
        )
        token = signed(rsa_key, "RS256", "rsa-1", claims())
        assert verifier.verify(bearer(token)).sub
        jwks_server.fail(503)
        time.sleep(0.3)
        assert verifier.verify(bearer(token)).sub
        assert jwks_server.hits == 2
