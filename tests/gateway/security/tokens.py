"""Building tokens by hand, JWKs and a real JWKS endpoint on loopback, shared by the
security tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.config import Settings
from gateway.security import (
    AuthenticationError,
    Reason,
    TokenVerifier,
    bearer_challenge,
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


# --- settings and assertions ----------------------------------------------------------


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
