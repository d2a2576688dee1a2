"""Identity: bearer tokens in, a `Principal` out, or an `AuthenticationError` with a
machine-readable reason.

Two kinds of signing key, both may be active at once:

* **HS256 with the shared secret** (`settings.effective_jwt_secret`): the tokens that
  `tunegate token` mints. In dev the secret defaults to the dev secret; in prod it exists
  only when TUNEGATE_JWT_SECRET is set (config refuses weak ones).
* **RS256 / ES256 from an OIDC provider** (`settings.jwks_url`): RSA keys (>= 2048 bits)
  verify RS256 only, EC P-256 keys verify ES256 only. Any other key in the set (`oct`,
  other curves, `use: enc`, a JWK whose own `alg` disagrees, private keys) is never used.

Routing: a token whose header carries a `kid` goes to the JWKS when a JWKS is configured;
every other token goes to the shared secret. Without a JWKS, a `kid` is ignored. The
algorithm is always the one pinned to the key chosen this way; the token's `alg` header
only has to agree with it, so `alg: none`, an HS256 token signed with a provider's public
key as the secret, or an RS512 token are all refused.

Checks, in order: header value at most `settings.max_token_bytes` (before anything is
parsed); `Bearer` scheme; compact JWS shape; header: no `crit` (this verifier implements no
extension, so every critical one is unknown; PyJWT itself accepted unknown ones before 2.12,
CVE-2026-32597), no `b64`; signature (PyJWT); then the claims, all checked here rather than
by PyJWT so that the rules and the reasons do not move with PyJWT's version (2.10.0 accepted
a partial `iss` match, CVE-2024-53861; `iat` in the future was refused, then not, then again
in 2.6):

* `sub`, `exp`, `iat`, `iss`, `aud` are required; `exp`/`iat`/`nbf` are numbers;
* `exp`, `nbf` and `iat` are compared with a leeway of `LEEWAY_SECONDS` (30 s) for clocks
  that disagree a little;
* `iss` equals `settings.jwt_issuer` exactly; `aud` is `settings.jwt_audience` or a list
  containing it;
* `sub` matches `SUB_PATTERN` and each of at most `MAX_ROLES` `roles` `NAME_PATTERN`,
  because they become Casbin request values;
* `tenant` (default `"default"`) is a registered tenant (`settings.tenants`) or the platform
  domain `platform`, compared as it is: one canonical spelling (lowercase), no case folding,
  no trimming. Anything else (`ACME` beside `acme`, `*`, a list, a trailing newline, `""`, a
  name nobody registered) is refused with `unknown_tenant` rather than becoming a separate,
  empty tenant. A `platform` token is the platform admin's: its roles count in the platform
  domain, where the global objects are changed (policies.vocabulary.PLATFORM_TENANT).

The JWKS is fetched with PyJWT's `PyJWKClient` and cached here for
`settings.jwks_cache_seconds`. An unknown
`kid` refetches it, and so does an expired cache, but the endpoint is contacted at most once
per `settings.jwks_min_refresh_seconds`, whatever arrives: a flood of random `kid`s costs
the provider one request a minute. A key removed from the set stops verifying at the next
fetch (cache expiry or an unknown `kid`). When a fetch fails, the keys already cached keep
working (the provider cannot tell us about removals while it is down); with nothing cached,
tokens are refused with `jwks_unavailable`.

`verify` may block on that fetch: call it off the event loop (the gateway does, with
`run_in_threadpool`). Nothing here logs a token, a secret or a claim value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK, PyJWKClient
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidSignatureError,
    PyJWTError,
)

from gateway.config import DEV_JWT_SECRET, InsecureSettingsError, Settings
from policies.vocabulary import PLATFORM_TENANT

log = structlog.get_logger()

LEEWAY_SECONDS = 30
NAME_PATTERN = re.compile(r"[A-Za-z0-9._@:-]{1,128}")
# What the policy engine accepts once a subject becomes `user:<sub>` (at most 128
# characters) and a tenant a policy domain: a token that authenticates can always be
# decided, and one that could not be is refused here with a reason, not later.
SUB_PATTERN = re.compile(r"[A-Za-z0-9._@:-]{1,123}")
MAX_ROLES = 32
DEFAULT_TENANT = "default"
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud")

HS256 = "HS256"
RS256 = "RS256"
ES256 = "ES256"
MIN_RSA_BITS = 2048

JWKS_FETCH_TIMEOUT_SECONDS = 5.0
MAX_DEV_TOKEN_TTL_SECONDS = 30 * 86_400

# RFC 6750 section 2.1: b64token; the compact JWS form is a subset of it.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_B64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_KID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
_ALG_NAME = re.compile(r"[A-Za-z0-9+-]{1,16}")
# RFC 6750 section 3: error_description may hold only %x20-21 / %x23-5B / %x5D-7E.
_NOT_IN_ERROR_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")
_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


# --- refusals --------------------------------------------------------------------------


class Reason(StrEnum):
    """Why a token was refused: a closed set, safe as a metric label and an API code."""

    MISSING = "token_missing"
    TOO_LARGE = "token_too_large"
    MALFORMED = "token_malformed"
    HEADER_INVALID = "token_header_invalid"
    ALGORITHM_REFUSED = "token_algorithm_refused"
    KEY_UNKNOWN = "token_key_unknown"
    SIGNATURE_INVALID = "token_signature_invalid"
    EXPIRED = "token_expired"
    NOT_YET_VALID = "token_not_yet_valid"
    ISSUER_INVALID = "token_issuer_invalid"
    AUDIENCE_INVALID = "token_audience_invalid"
    CLAIMS_INVALID = "token_claims_invalid"
    UNKNOWN_TENANT = "unknown_tenant"
    JWKS_UNAVAILABLE = "jwks_unavailable"


class AuthenticationError(Exception):
    """The request is not authenticated. `reason` is a `Reason` (a str, safe as a metric
    label); `message` is for people and never contains the token."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class KeySetUnavailableError(AuthenticationError):
    """The provider's key set could not be fetched and none is cached: not the client's
    fault, so the gateway may answer 503 instead of 401."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.JWKS_UNAVAILABLE, message)


class TokenMintingError(ValueError):
    """`mint_dev_token` refuses: no usable secret here, or claims it would not accept."""


@dataclass(frozen=True)
class Principal:
    """Who the request acts for: `subject` and `roles` (in `tenant`) go to Casbin."""

    sub: str
    tenant: str
    roles: tuple[str, ...]

    @property
    def subject(self) -> str:
        return f"user:{self.sub}"

    @property
    def platform(self) -> bool:
        """Whether the token is the platform domain's, outside every tenant (the platform
        admin's): only then do its roles count where global objects are changed."""
        return self.tenant == PLATFORM_TENANT


def known_tenants(settings: Settings) -> frozenset[str]:
    """The tenant names a token may carry: the registered tenants and the platform domain."""
    return frozenset(settings.tenants) | {PLATFORM_TENANT}


def bearer_challenge(error: AuthenticationError, *, realm: str = "tunegate") -> str:
    """The `WWW-Authenticate` value for a 401. Following RFC 6750 section 3.1, a request
    that carried no token gets no error code; any other refusal is `invalid_token`."""
    if error.reason == Reason.MISSING:
        return f'Bearer realm="{realm}"'
    description = _NOT_IN_ERROR_DESCRIPTION.sub("'", error.message)[:200]
    return f'Bearer realm="{realm}", error="invalid_token", error_description="{description}"'


# --- verifying ------------------------------------------------------------------------


@dataclass(frozen=True)
class _VerificationKey:
    key: Any
    algorithm: str


class TokenVerifier:
    """Built once per process from Settings; `verify` is thread-safe."""

    def __init__(self, settings: Settings, *, jwks_cache_seconds: float | None = None) -> None:
        self._max_token_bytes = settings.max_token_bytes
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._tenants = known_tenants(settings)
        secret = settings.effective_jwt_secret
        self._secret_key = _VerificationKey(secret, HS256) if secret else None
        self._jwks: JwksKeys | None = None
        if settings.jwks_url:
            _refuse_insecure_jwks_url(settings.jwks_url, env=settings.env)
            if jwks_cache_seconds is None:
                jwks_cache_seconds = settings.jwks_cache_seconds
            self._jwks = JwksKeys(
                settings.jwks_url,
                cache_seconds=jwks_cache_seconds,
                min_refresh_seconds=settings.jwks_min_refresh_seconds,
            )
        if self._secret_key is None and self._jwks is None:
            raise InsecureSettingsError("no JWT secret and no JWKS URL: no token could verify")

    @property
    def may_block(self) -> bool:
        """Whether verifying can wait on the network (a JWKS fetch). Without a JWKS it is a
        few dozen microseconds of CPU, cheaper than a hop to a worker thread."""
        return self._jwks is not None

    def verify(self, authorization_header_value: str | None) -> Principal:
        token = self._bearer_token(authorization_header_value)
        header = _unverified_header(token)
        verification_key = self._choose_key(header)
        claims = _verified_claims(token, verification_key)
        return self._principal_from(claims)

    def _bearer_token(self, value: str | None) -> str:
        if value is None or not value.strip():
            raise AuthenticationError(Reason.MISSING, "an Authorization: Bearer token is required")
        # Characters are never more than UTF-8 bytes, so this refuses before reading on.
        if len(value) > self._max_token_bytes + len("Bearer ") + 16:
            raise _too_large(self._max_token_bytes)
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationError(
                Reason.MISSING, "the Authorization header must use the Bearer scheme"
            )
        token = token.strip()
        if not token:
            raise AuthenticationError(Reason.MISSING, "the Bearer token is empty")
        if len(token) > self._max_token_bytes:
            raise _too_large(self._max_token_bytes)
        if not _B64TOKEN.fullmatch(token):
            raise AuthenticationError(Reason.MALFORMED, "the Bearer token has invalid characters")
        return token

    def _choose_key(self, header: Mapping[str, Any]) -> _VerificationKey:
        alg = header["alg"]
        kid = header.get("kid")
        if kid is not None and self._jwks is not None:
            chosen = self._jwks.key_for(kid)
        elif self._secret_key is not None:
            chosen = self._secret_key
        elif alg == HS256:
            raise AuthenticationError(
                Reason.ALGORITHM_REFUSED, "HS256 tokens are not accepted: no shared secret is set"
            )
        else:
            raise AuthenticationError(
                Reason.KEY_UNKNOWN, "the token names no key (kid) from the provider's key set"
            )
        if alg != chosen.algorithm:
            raise AuthenticationError(
                Reason.ALGORITHM_REFUSED,
                f"algorithm {_printable_alg(alg)} refused: this key verifies "
                f"{chosen.algorithm} only",
            )
        return chosen

    def _principal_from(self, claims: Mapping[str, Any]) -> Principal:
        _check_times(claims, now=time.time())
        iss = claims["iss"]
        if not isinstance(iss, str) or iss != self._issuer:
            raise AuthenticationError(Reason.ISSUER_INVALID, "the token's issuer is not accepted")
        if not _audience_matches(claims["aud"], self._audience):
            raise AuthenticationError(
                Reason.AUDIENCE_INVALID, "the token is not meant for this audience"
            )
        sub = _name_claim(claims, "sub", SUB_PATTERN)
        tenant = claims.get("tenant", DEFAULT_TENANT)
        # Membership in a set of str: a list, a number or null is never in it, and no other
        # spelling of a registered name is either.
        if not isinstance(tenant, str) or tenant not in self._tenants:
            raise AuthenticationError(
                Reason.UNKNOWN_TENANT, "the token's tenant is not a tenant this gateway knows"
            )
        roles = _roles_claim(claims.get("roles", []))
        return Principal(sub=sub, tenant=tenant, roles=roles)


def _too_large(limit: int) -> AuthenticationError:
    return AuthenticationError(Reason.TOO_LARGE, f"the Bearer token is longer than {limit} bytes")


def _b64url_decode(segment: str) -> bytes:
    if not _B64URL_SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, checked before any key is chosen or any signature computed."""
    segments = token.split(".")
    if len(segments) != 3:
        raise AuthenticationError(Reason.MALFORMED, "the token is not a compact JWS (3 segments)")
    try:
        header = json.loads(_b64url_decode(segments[0]))
    except (ValueError, binascii.Error, RecursionError):
        raise AuthenticationError(
            Reason.MALFORMED, "the token header is not base64url JSON"
        ) from None
    if not isinstance(header, dict):
        raise AuthenticationError(Reason.MALFORMED, "the token header is not a JSON object")
    if "crit" in header:
        raise AuthenticationError(
            Reason.HEADER_INVALID, "the token declares critical header extensions (crit)"
        )
    if "b64" in header:
        raise AuthenticationError(Reason.HEADER_INVALID, "unencoded payloads (b64) are refused")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise AuthenticationError(Reason.HEADER_INVALID, "the token header has no algorithm")
    if alg.lower() == "none":
        raise AuthenticationError(
            Reason.ALGORITHM_REFUSED, "unsigned tokens (alg none) are refused"
        )
    kid = header.get("kid")
    if kid is not None and not (isinstance(kid, str) and _KID.fullmatch(kid)):
        raise AuthenticationError(Reason.HEADER_INVALID, "the token's key id (kid) is malformed")
    return header


def _verified_claims(token: str, verification_key: _VerificationKey) -> dict[str, Any]:
    """The payload once the signature holds. Claims are checked by the caller, so PyJWT's
    own claim checks are off; the algorithm list holds only the pinned one."""
    try:
        return jwt.decode(
            token,
            key=verification_key.key,
            algorithms=[verification_key.algorithm],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except InvalidSignatureError:
        raise AuthenticationError(
            Reason.SIGNATURE_INVALID, "the token's signature does not verify"
        ) from None
    except InvalidAlgorithmError:
        raise AuthenticationError(
            Reason.ALGORITHM_REFUSED, "the token's algorithm is refused"
        ) from None
    except PyJWTError:
        raise AuthenticationError(Reason.MALFORMED, "the token could not be decoded") from None


MAX_NUMERIC_DATE = 2**53 - 1


def _time_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, int) and abs(value) > MAX_NUMERIC_DATE)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise AuthenticationError(Reason.CLAIMS_INVALID, f"claim {name!r} must be a NumericDate")
    return value


def _check_times(claims: Mapping[str, Any], *, now: float) -> None:
    for name in REQUIRED_CLAIMS:
        if claims.get(name) is None:
            raise AuthenticationError(Reason.CLAIMS_INVALID, f"required claim {name!r} is missing")
    exp = _time_claim(claims, "exp")
    iat = _time_claim(claims, "iat")
    nbf = _time_claim(claims, "nbf") if "nbf" in claims else None
    if exp <= now - LEEWAY_SECONDS:
        raise AuthenticationError(Reason.EXPIRED, "the token has expired")
    if nbf is not None and nbf > now + LEEWAY_SECONDS:
        raise AuthenticationError(Reason.NOT_YET_VALID, "the token is not valid yet (nbf)")
    if iat > now + LEEWAY_SECONDS:
        raise AuthenticationError(Reason.NOT_YET_VALID, "the token was issued in the future (iat)")


def _audience_matches(aud: Any, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        return audience in aud
    return False


def _name_claim(
    claims: Mapping[str, Any], name: str, pattern: re.Pattern[str] = NAME_PATTERN
) -> str:
    value = claims[name]
    if not (isinstance(value, str) and pattern.fullmatch(value)):
        raise AuthenticationError(
            Reason.CLAIMS_INVALID, f"claim {name!r} must match {pattern.pattern}"
        )
    return value


def _roles_claim(value: Any) -> tuple[str, ...]:
    if not (
        isinstance(value, list)
        and len(value) <= MAX_ROLES
        and all(isinstance(role, str) and NAME_PATTERN.fullmatch(role) for role in value)
    ):
        raise AuthenticationError(
            Reason.CLAIMS_INVALID,
            f"claim 'roles' must be a list of at most {MAX_ROLES} names matching "
            f"{NAME_PATTERN.pattern}",
        )
    return tuple(dict.fromkeys(value))


def _printable_alg(alg: str) -> str:
    return repr(alg) if _ALG_NAME.fullmatch(alg) else "(unprintable)"


def _refuse_insecure_jwks_url(url: str, *, env: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InsecureSettingsError("TUNEGATE_JWKS_URL must be an http(s) URL")
    if env != "dev" and parts.scheme != "https" and parts.hostname not in _LOOPBACK_HOSTS:
        # Whoever can rewrite a plain-HTTP key set can mint any token.
        raise InsecureSettingsError("TUNEGATE_JWKS_URL must use https outside dev")


# --- the provider's key set -----------------------------------------------------------


class JwksKeys:
    """The provider's signing keys by `kid`, fetched with `PyJWKClient`, cached, and
    refetched at most once per `min_refresh_seconds` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        min_refresh_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # PyJWKClient's own cache and refetch cooldown differ between PyJWT versions;
        # this class owns both so that the rules above hold whatever is installed.
        self._client = PyJWKClient(
            url,
            cache_jwk_set=False,
            timeout=JWKS_FETCH_TIMEOUT_SECONDS,
            headers={"User-Agent": "tunegate", "Accept": "application/json"},
        )
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, _VerificationKey] = {}
        self._unusable: set[str] = set()
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None

    def key_for(self, kid: str) -> _VerificationKey:
        with self._lock:
            now = self._monotonic()
            fetched = False
            if self._fetched_at is None or now - self._fetched_at >= self._cache_seconds:
                fetched = self._refresh(now)
            if self._fetched_at is None:
                raise KeySetUnavailableError("the identity provider's key set is unavailable")
            if not fetched and kid not in self._keys and kid not in self._unusable:
                self._refresh(now)
            key = self._keys.get(kid)
            unusable = kid in self._unusable
        if key is not None:
            return key
        if unusable:
            raise AuthenticationError(
                Reason.KEY_UNKNOWN,
                f"key {kid!r} is not an RSA (>= {MIN_RSA_BITS} bits) or P-256 signing key",
            )
        raise AuthenticationError(
            Reason.KEY_UNKNOWN, f"key {kid!r} is not in the provider's key set"
        )

    def _refresh(self, now: float) -> bool:
        """Fetches the set unless the last attempt was too recent; True if it tried."""
        if self._attempted_at is not None and now - self._attempted_at < self._min_refresh_seconds:
            return False
        self._attempted_at = now
        try:
            jwk_set = self._client.get_jwk_set(refresh=True)
        except (PyJWTError, ValueError, OSError) as exc:
            # The message may echo the URL; the exception type says enough.
            log.warning(
                "jwks.refresh_failed",
                error_type=type(exc).__name__,
                keys_kept=len(self._keys),
            )
            return True
        keys, unusable = _usable_keys(jwk_set.keys)
        self._keys, self._unusable, self._fetched_at = keys, unusable, now
        log.info("jwks.refreshed", keys=len(keys), unusable=len(unusable), kids=sorted(keys))
        return True


def _usable_keys(jwks: list[PyJWK]) -> tuple[dict[str, _VerificationKey], set[str]]:
    """Signing keys by kid, and the kids present but never to be used."""
    kids = Counter(jwk.key_id for jwk in jwks)
    keys: dict[str, _VerificationKey] = {}
    unusable: set[str] = set()
    for jwk in jwks:
        kid = jwk.key_id
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            continue
        algorithm = _pinned_algorithm(jwk.key)
        if (
            algorithm is None
            # PyJWK takes its algorithm from the JWK's own `alg`, else from its type: a key
            # that declares another algorithm than the one pinned to its type is not used.
            or jwk.algorithm_name != algorithm
            or jwk.public_key_use not in (None, "sig")
            # A kid listed twice is ambiguous: neither copy is trusted.
            or kids[kid] > 1
        ):
            unusable.add(kid)
        else:
            keys[kid] = _VerificationKey(jwk.key, algorithm)
    return keys, unusable


def _pinned_algorithm(key: Any) -> str | None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return RS256
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return ES256
    return None


# --- dev tokens -----------------------------------------------------------------------


def mint_dev_token(
    settings: Settings,
    *,
    sub: str,
    roles: Iterable[str],
    tenant: str = DEFAULT_TENANT,
    ttl: int = 3600,
) -> str:
    """An HS256 token this gateway accepts. In dev it is signed with the configured or the
    dev secret; outside dev only with a configured secret (config has already refused weak
    ones), so a JWKS-only deployment cannot mint. The claims obey the same rules `verify`
    applies (the tenant is registered, or `platform`), and `ttl` lies in 1..30 days."""
    secret = settings.effective_jwt_secret
    if secret is None:
        raise TokenMintingError("no TUNEGATE_JWT_SECRET is configured: cannot mint tokens")
    if settings.env != "dev" and secret == DEV_JWT_SECRET:
        raise TokenMintingError("refusing to mint with the dev secret outside dev")
    if isinstance(roles, str):
        raise TokenMintingError("roles must be a list of role names, not one string")
    roles = list(roles)
    if not isinstance(tenant, str) or tenant not in known_tenants(settings):
        raise TokenMintingError(
            f"tenant {tenant!r} is not registered: add it to TUNEGATE_TENANTS "
            f"(registered: {', '.join(sorted(known_tenants(settings)))})"
        )
    checks = (
        ("sub", sub, SUB_PATTERN),
        *(("role", role, NAME_PATTERN) for role in roles),
    )
    for name, value, pattern in checks:
        if not (isinstance(value, str) and pattern.fullmatch(value)):
            raise TokenMintingError(f"{name} must match {pattern.pattern}")
    if len(roles) > MAX_ROLES:
        raise TokenMintingError(f"at most {MAX_ROLES} roles")
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int)
        or not 1 <= ttl <= MAX_DEV_TOKEN_TTL_SECONDS
    ):
        raise TokenMintingError(f"ttl must be 1..{MAX_DEV_TOKEN_TTL_SECONDS} seconds")
    now = int(time.time())
    claims = {
        "sub": sub,
        "tenant": tenant,
        "roles": list(dict.fromkeys(roles)),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm=HS256)
