"""The console's session: the bearer token in an HttpOnly, SameSite=Strict cookie that
expires with the token, and a CSRF token derived from it for every state-changing form."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

import jwt

from gateway.config import Settings

COOKIE = "tunegate_console"
CSRF_FIELD = "csrf"
_PROCESS_KEY = secrets.token_bytes(32)


def signing_key(settings: Settings) -> bytes:
    # One key for every worker when a secret is configured; a JWKS-only deployment with
    # several workers should set TUNEGATE_JWT_SECRET so their CSRF tokens agree.
    secret = settings.effective_jwt_secret
    return secret.encode() if secret else _PROCESS_KEY


def csrf_token(settings: Settings, token: str) -> str:
    """Bound to the session's token: a form from another session (or none) cannot pass."""
    mac = hmac.new(
        signing_key(settings), b"tunegate-console-csrf\0" + token.encode(), hashlib.sha256
    )
    return mac.hexdigest()


def csrf_matches(settings: Settings, token: str, offered: Any) -> bool:
    return isinstance(offered, str) and hmac.compare_digest(csrf_token(settings, token), offered)


def token_expiry(token: str) -> int | None:
    """The `exp` of a token the verifier has already accepted (read, not trusted, here)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return int(exp) if isinstance(exp, int | float) else None


def cookie_options(settings: Settings, *, expires: int | None) -> dict[str, Any]:
    return {
        "key": COOKIE,
        "httponly": True,
        "samesite": "strict",
        "secure": settings.env != "dev",
        "path": "/console",
        "expires": expires,
    }


def safe_next(target: str | None) -> str:
    """Only a path inside the console: never another site, never a scheme."""
    if not target:
        return "/console"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console"):
        return "/console"
    if target.startswith("//") or "\\" in target:
        return "/console"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def session_token_of(request: Any) -> str | None:
    """The session cookie of a request (anything with `.cookies`)."""
    return request.cookies.get(COOKIE)
