"""TokenVerifier against real tokens: HS256 with the shared secret, RS256/ES256 through a
real JWKS endpoint on loopback, and hand-built hostile tokens for every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.config import DEV_JWT_SECRET, InsecureSettingsError, Settings
from gateway.security import (
    LEEWAY_SECONDS,
    MAX_ROLES,
    AuthenticationError,
    JwksKeys,
    KeySetUnavailableError,
    Principal,
    Reason,
    TokenMintingError,
    TokenVerifier,
    bearer_challenge,
    mint_dev_token,
)

SECRET = "test-secret-for-hs256-0123456789abcdef"
ISSUER = "tunegate"
AUDIENCE = "tunegate"
DROP = object()


# --- building tokens ------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for this gateway; an override of DROP removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not DROP}


def hs256_signer(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda signing_input: hmac.new(secret, signing_input, hashlib.sha256).digest()


def compact(header: dict[str, Any], payload: Any, sign: Callable[[bytes], bytes]) -> str:
    """A compact JWS built by hand, so that headers PyJWT would refuse to write can be sent."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def hs256(payload: Any, *, secret: str = SECRET, **header: Any) -> str:
    return compact({"alg": "HS256", "typ": "JWT", **header}, payload, hs256_signer(secret.encode()))


def rs256_signer(private_key: rsa.RSAPrivateKey) -> Callable[[bytes], bytes]:
    return lambda signing_input: private_key.sign(signing_input, PKCS1v15(), SHA256())


def signed(private_key: Any, algorithm: str, kid: str | None, payload: dict[str, Any]) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, private_key, algorithm=algorithm, headers=headers)


def with_payload(token: str, payload: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64json(payload)}.{signature}"


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- keys and a real JWKS endpoint ----------------------------------------------------


def _uint(value: int, size: int | None = None) -> str:
    size = size or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(size, "big"))


def rsa_jwk(private_key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    numbers = private_key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": _uint(numbers.n), "e": _uint(numbers.e)}


def rsa_private_jwk(private_key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    numbers = private_key.private_numbers()
    return {
        **rsa_jwk(private_key, kid),
        "d": _uint(numbers.d),
        "p": _uint(numbers.p),
        "q": _uint(numbers.q),
        "dp": _uint(numbers.dmp1),
        "dq": _uint(numbers.dmq1),
        "qi": _uint(numbers.iqmp),
    }


def ec_jwk(private_key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    numbers = private_key.public_key().public_numbers()
    size = (private_key.curve.key_size + 7) // 8
    curve = {"secp256r1": "P-256", "secp384r1": "P-384"}[private_key.curve.name]
    return {
        "kty": "EC",
        "kid": kid,
        "use": "sig",
        "crv": curve,
        "x": _uint(numbers.x, size),
        "y": _uint(numbers.y, size),
    }


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key_2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class JwksServer:
    """A key set served over real HTTP on 127.0.0.1; counts the requests it answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body = b'{"keys": []}'
        self._status = 200
        self._hits = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/.well-known/jwks.json"

    @property
    def hits(self) -> int:
        with self._lock:
            return self._hits

    def serve(self, *jwks: dict[str, Any]) -> None:
        with self._lock:
            self._body, self._status = json.dumps({"keys": list(jwks)}).encode(), 200

    def serve_raw(self, body: bytes, status: int = 200) -> None:
        with self._lock:
            self._body, self._status = body, status

    def fail(self, status: int = 500) -> None:
        self.serve_raw(b'{"error": "down"}', status)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server._hits += 1
                    body, status = server._body, server._status
                if self.path != "/.well-known/jwks.json":
                    body, status = b"{}", 404
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    yield server
    server.stop()


# --- settings and assertions ----------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come only from the test; the JWKS request never goes through a proxy."""
    for name in list(os.environ):
        if name.upper().startswith("TUNEGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")


def hs_settings(**overrides: Any) -> Settings:
    return Settings(jwt_secret=SECRET, **overrides)


def jwks_settings(server: JwksServer, **overrides: Any) -> Settings:
    return Settings(jwt_secret=SECRET, jwks_url=server.url, **overrides)


def prod_jwks_only_settings(server: JwksServer, tmp_path: Path) -> Settings:
    return Settings(env="prod", jwks_url=server.url, audit_signing_key=tmp_path / "audit.pem")


def refused(verifier: TokenVerifier, header_value: str | None, reason: Reason) -> str:
    """Asserts the refusal and its reason, and that nothing of the token or of the secret
    leaks into what the gateway will show or log. Returns the message."""
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(header_value)
    error = caught.value
    assert error.reason == reason, error.message
    shown = " ".join([error.message, str(error), repr(error), bearer_challenge(error)])
    token = (header_value or "").partition(" ")[2]
    for part in [token, *token.split(".")]:
        if len(part) >= 12:
            assert part not in shown
    assert SECRET not in shown
    return error.message


# --- tests ----------------------------------------------------------------------------


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


class TestSignature:
    def test_payload_edited_after_signing_is_refused(self) -> None:
        settings = hs_settings()
        token = mint_dev_token(settings, sub="alice", roles=["ml-engineer"])
        tampered = with_payload(
            token, {**jwt.decode(token, options={"verify_signature": False}), "roles": ["admin"]}
        )
        refused(TokenVerifier(settings), bearer(tampered), Reason.SIGNATURE_INVALID)

    def test_other_secret_is_refused(self) -> None:
        token = hs256(claims(), secret="another-secret-of-sufficient-length-000")
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.SIGNATURE_INVALID)

    def test_dev_secret_token_is_refused_by_a_gateway_with_its_own_secret(self) -> None:
        token = hs256(claims(), secret=DEV_JWT_SECRET)
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.SIGNATURE_INVALID)

    @pytest.mark.parametrize("signature", ["", "AAAA", b64url(b"\x00" * 32)])
    def test_stripped_or_zeroed_signature_is_refused(self, signature: str) -> None:
        header, payload, _ = hs256(claims()).split(".")
        token = f"{header}.{payload}.{signature}"
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.SIGNATURE_INVALID)


class TestTimeClaims:
    def test_expired_is_refused(self) -> None:
        now = int(time.time())
        token = hs256(claims(iat=now - 3600, exp=now - 2 * LEEWAY_SECONDS))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.EXPIRED)

    def test_just_expired_within_leeway_is_accepted(self) -> None:
        now = int(time.time())
        token = hs256(claims(iat=now - 3600, exp=now - LEEWAY_SECONDS // 3))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"

    def test_nbf_in_the_future_is_refused(self) -> None:
        token = hs256(claims(nbf=int(time.time()) + 4 * LEEWAY_SECONDS))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.NOT_YET_VALID)

    def test_iat_in_the_future_is_refused(self) -> None:
        now = int(time.time())
        token = hs256(claims(iat=now + 4 * LEEWAY_SECONDS, exp=now + 3600))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.NOT_YET_VALID)

    def test_small_clock_skew_is_accepted(self) -> None:
        skewed = int(time.time()) + LEEWAY_SECONDS // 3
        token = hs256(claims(iat=skewed, nbf=skewed))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"

    @pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
    @pytest.mark.parametrize("value", ["1999999999", True, [1], {"t": 1}, 1e400])
    def test_non_numeric_dates_are_refused(self, claim: str, value: Any) -> None:
        token = hs256(claims(**{claim: value}))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)

    def test_fractional_dates_are_accepted(self) -> None:
        now = time.time()
        token = hs256(claims(iat=now - 0.5, exp=now + 600.25))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"


class TestRequiredClaims:
    @pytest.mark.parametrize("claim", ["sub", "exp", "iat", "iss", "aud"])
    def test_missing_required_claim_is_refused(self, claim: str) -> None:
        message = refused(
            TokenVerifier(hs_settings()),
            bearer(hs256(claims(**{claim: DROP}))),
            Reason.CLAIMS_INVALID,
        )
        assert repr(claim) in message

    @pytest.mark.parametrize("claim", ["sub", "exp", "iat", "iss", "aud"])
    def test_null_required_claim_is_refused(self, claim: str) -> None:
        token = hs256(claims(**{claim: None}))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)


class TestIssuerAndAudience:
    @pytest.mark.parametrize(
        "iss",
        [
            "tunegate-evil",
            "tunegatex",
            "tunegat",
            "TUNEGATE",
            " tunegate",
            "",
            1,
            ["tunegate"],
            {"tunegate": True},
        ],
    )
    def test_other_issuers_are_refused(self, iss: Any) -> None:
        token = hs256(claims(iss=iss))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.ISSUER_INVALID)

    def test_configured_issuer_is_required(self) -> None:
        settings = hs_settings(jwt_issuer="https://idp.example.com/")
        verifier = TokenVerifier(settings)
        assert verifier.verify(bearer(hs256(claims(iss="https://idp.example.com/")))).sub
        refused(verifier, bearer(hs256(claims())), Reason.ISSUER_INVALID)
        refused(
            verifier, bearer(hs256(claims(iss="https://idp.example.com/x"))), Reason.ISSUER_INVALID
        )

    @pytest.mark.parametrize(
        "aud",
        ["other", "tunegate-evil", "tunegat", ["other"], [], [AUDIENCE, 1], 7, {"tunegate": 1}],
    )
    def test_wrong_audience_is_refused(self, aud: Any) -> None:
        token = hs256(claims(aud=aud))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.AUDIENCE_INVALID)

    def test_audience_list_containing_ours_is_accepted(self) -> None:
        token = hs256(claims(aud=["other-service", AUDIENCE]))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"


class TestIdentityClaims:
    def test_dev_token_maps_to_principal(self) -> None:
        settings = hs_settings()
        token = mint_dev_token(
            settings, sub="alice@example.com", roles=["ml-engineer", "data-owner"], tenant="acme"
        )
        principal = TokenVerifier(settings).verify(bearer(token))
        assert principal == Principal(
            sub="alice@example.com", tenant="acme", roles=("ml-engineer", "data-owner")
        )
        assert principal.subject == "user:alice@example.com"

    def test_tenant_and_roles_default(self) -> None:
        principal = TokenVerifier(hs_settings()).verify(bearer(hs256(claims())))
        assert principal == Principal(sub="alice", tenant="default", roles=())

    def test_duplicate_roles_collapse_in_order(self) -> None:
        token = hs256(claims(roles=["b", "a", "b", "a"]))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).roles == ("b", "a")

    def test_principal_is_frozen(self) -> None:
        principal = Principal(sub="alice", tenant="default", roles=("admin",))
        with pytest.raises(AttributeError):
            principal.sub = "mallory"  # type: ignore[misc]

    @pytest.mark.parametrize("sub", ["a" * 123, "auth0:abc.DEF_1-2", "svc@tenant.example"])
    def test_boundary_subjects_are_accepted(self, sub: str) -> None:
        assert TokenVerifier(hs_settings()).verify(bearer(hs256(claims(sub=sub)))).sub == sub

    @pytest.mark.parametrize(
        "sub",
        [
            "",
            "a" * 124,  # user:<sub> would pass the policy's 128-character limit
            "alice bob",
            "alice\n",
            "ali/ce",
            "alice,admin",
            "alicé",
            42,
            ["alice"],
            "alice) || (true",
        ],
    )
    def test_malformed_subject_is_refused(self, sub: Any) -> None:
        token = hs256(claims(sub=sub))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)

    @pytest.mark.parametrize(
        "tenant", ["", "a/b", "acme,evil", None, 5, ["acme"], "t" * 65, "acme@corp", "a:b"]
    )
    def test_malformed_tenant_is_refused(self, tenant: Any) -> None:
        token = hs256(claims(tenant=tenant))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)

    def test_most_roles_allowed_is_accepted(self) -> None:
        roles = [f"role-{i}" for i in range(MAX_ROLES)]
        token = hs256(claims(roles=roles))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).roles == tuple(roles)

    @pytest.mark.parametrize(
        "roles",
        [
            "admin",
            None,
            {"admin": True},
            [1],
            [None],
            [""],
            ["bad role"],
            ["admin,deny"],
            ["admin\n"],
            ["r" * 129],
            [["admin"]],
            ["admin", {"role": "x"}],
            [f"role-{i}" for i in range(MAX_ROLES + 1)],
        ],
    )
    def test_malformed_roles_are_refused(self, roles: Any) -> None:
        token = hs256(claims(roles=roles))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)


class TestJwks:
    def test_rs256_and_es256_tokens_map_to_principals(
        self, jwks_server: JwksServer, rsa_key: Any, ec_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec_key, "ec-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server))
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


class TestNothingSecretIsLogged:
    def test_refresh_and_refusals_log_no_token_or_secret(
        self, jwks_server: JwksServer, rsa_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server, jwks_min_refresh_seconds=0))
        good = signed(rsa_key, "RS256", "rsa-1", claims())
        bad = signed(rsa_key, "RS256", "rsa-2", claims())
        with structlog.testing.capture_logs() as logs:
            verifier.verify(bearer(good))
            with pytest.raises(AuthenticationError):
                verifier.verify(bearer(bad))
            jwks_server.fail()
            with pytest.raises(AuthenticationError):
                verifier.verify(bearer(bad))
        events = [entry["event"] for entry in logs]
        assert events == ["jwks.refreshed", "jwks.refreshed", "jwks.refresh_failed"]
        text = repr(logs)
        for part in [*good.split("."), *bad.split("."), SECRET, jwks_server.url]:
            assert part not in text


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


class TestMintDevToken:
    def test_dev_mints_with_the_dev_secret(self) -> None:
        settings = Settings()
        token = mint_dev_token(settings, sub="alice", roles=["admin", "admin"], ttl=60)
        payload = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience=AUDIENCE)
        assert payload["roles"] == ["admin"]
        assert payload["exp"] - payload["iat"] == 60
        assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
        assert TokenVerifier(settings).verify(bearer(token)).roles == ("admin",)

    def test_prod_mints_with_the_configured_secret(self, tmp_path: Path) -> None:
        settings = Settings(env="prod", jwt_secret=SECRET, audit_signing_key=tmp_path / "k.pem")
        token = mint_dev_token(settings, sub="ops", roles=["admin"], tenant="acme")
        assert TokenVerifier(settings).verify(bearer(token)) == Principal("ops", "acme", ("admin",))

    def test_prod_without_a_secret_refuses(self, tmp_path: Path) -> None:
        settings = Settings(
            env="prod", jwks_url="https://idp.example.com/jwks", audit_signing_key=tmp_path / "k"
        )
        with pytest.raises(TokenMintingError):
            mint_dev_token(settings, sub="ops", roles=["admin"])

    def test_prod_refuses_the_dev_secret_even_past_config_validation(self) -> None:
        settings = Settings.model_construct(
            env="prod", jwt_secret=DEV_JWT_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
        )
        with pytest.raises(TokenMintingError):
            mint_dev_token(settings, sub="ops", roles=["admin"])

    @pytest.mark.parametrize(
        "arguments",
        [
            {"sub": "alice bob"},
            {"sub": ""},
            {"tenant": "a/b"},
            {"roles": ["bad role"]},
            {"roles": "admin"},
            {"roles": [f"r{i}" for i in range(MAX_ROLES + 1)]},
            {"ttl": 0},
            {"ttl": 30 * 86_400 + 1},
            {"ttl": True},
            {"ttl": 1.5},
        ],
    )
    def test_refuses_what_verify_would_refuse(self, arguments: dict[str, Any]) -> None:
        with pytest.raises(TokenMintingError):
            mint_dev_token(Settings(), **{"sub": "alice", "roles": [], **arguments})


class TestConstruction:
    @pytest.mark.parametrize(
        "url", ["http://idp.example.com/jwks", "ftp://idp.example.com/jwks", "file:///etc/jwks"]
    )
    def test_prod_refuses_a_jwks_url_that_is_not_https(self, url: str, tmp_path: Path) -> None:
        settings = Settings(env="prod", jwks_url=url, audit_signing_key=tmp_path / "k.pem")
        with pytest.raises(InsecureSettingsError):
            TokenVerifier(settings)

    @pytest.mark.parametrize("url", ["file:///etc/jwks", "ftp://idp/jwks", "http:///nohost"])
    def test_dev_refuses_a_jwks_url_that_is_not_http(self, url: str) -> None:
        with pytest.raises(InsecureSettingsError):
            TokenVerifier(Settings(jwks_url=url))

    def test_prod_accepts_https_and_loopback_http(self, tmp_path: Path) -> None:
        for url in ["https://idp.example.com/jwks", "http://127.0.0.1:9/jwks"]:
            settings = Settings(env="prod", jwks_url=url, audit_signing_key=tmp_path / "k.pem")
            TokenVerifier(settings)  # builds without contacting the provider

    def test_no_way_to_verify_is_refused(self) -> None:
        settings = Settings.model_construct(env="prod", jwt_secret=None, jwks_url=None)
        with pytest.raises(InsecureSettingsError):
            TokenVerifier(settings)


class TestNumericDateBounds:
    @pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
    def test_huge_integers_are_refused_not_crashed_on(self, claim: str) -> None:
        token = hs256(claims(**{claim: 10**400}))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)
