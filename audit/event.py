"""What an audit event is: its fields, their limits, and its canonical body.

The body is the canonical JSON (audit.encoding) of the whole event::

    {"action":..,"actor":..,"decision":..,"details":{..},"policy_version":..|null,
     "resource":..,"seq":N,"tenant":..,"ts":..,"v":1}

Keys sort that way, so the indexed columns sit in a fixed text frame around ``details``:
BODY_HEAD before it and BODY_TAIL after. The verifier checks "columns == body" by
re-encoding the columns into that frame and comparing bytes, with no JSON parsing.

No personal data beyond subject ids: ``actor`` is a subject id, ``details`` carries ids,
hashes, counts and short labels. Details are refused when their canonical JSON is over
MAX_DETAILS_BYTES (file contents never fit) or when any key, at any depth, names a secret
or a content field (FORBIDDEN_DETAIL_KEYS, compared case-insensitively).
"""

from __future__ import annotations

from collections.abc import Mapping

from audit.encoding import CanonicalEncodingError, canonical_json, is_canonical_ts, quote

BODY_VERSION = 1
BODY_HEAD = '{"action":%s,"actor":%s,"decision":%s,"details":'
BODY_TAIL = ',"policy_version":%s,"resource":%s,"seq":%d,"tenant":%s,"ts":%s,"v":1}'
EVENT_KEYS = (
    "action",
    "actor",
    "decision",
    "details",
    "policy_version",
    "resource",
    "seq",
    "tenant",
    "ts",
    "v",
)

# Column limits (characters), as audit.models declares them.
FIELD_LIMITS = {
    "actor": 256,
    "tenant": 128,
    "action": 128,
    "resource": 512,
    "decision": 16,
    "policy_version": 64,
}
MAX_DETAILS_BYTES = 4096
FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "authorization",
        "cookie",
        "api_key",
        "apikey",
        "private_key",
        "email",
        "phone",
        "content",
        "file_content",
        "contents",
        "data_bytes",
    }
)


class InvalidEventError(ValueError):
    """The event cannot be recorded as given (a field too long, details not JSON-safe...)."""


def check_field(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise InvalidEventError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > FIELD_LIMITS[name]:
        raise InvalidEventError(f"{name} is longer than {FIELD_LIMITS[name]} characters")


def encode_details(details: Mapping | None) -> str:
    """The canonical JSON text of ``details`` ({} when None), checked as described above."""
    if details is None:
        return "{}"
    if not isinstance(details, Mapping):
        raise InvalidEventError(f"details must be a dict, got {type(details).__name__}")
    _refuse_forbidden_keys(details, "details")
    try:
        encoded = canonical_json(dict(details))
    except CanonicalEncodingError as exc:
        raise InvalidEventError(f"details: {exc}") from None
    if len(encoded) > MAX_DETAILS_BYTES:
        raise InvalidEventError(
            f"details are {len(encoded)} bytes; at most {MAX_DETAILS_BYTES} (ids, not contents)"
        )
    return encoded.decode("utf-8")


def _refuse_forbidden_keys(value: object, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in FORBIDDEN_DETAIL_KEYS:
                raise InvalidEventError(
                    f"{where}.{key}: audit events carry ids, never secrets or contents"
                )
            _refuse_forbidden_keys(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_forbidden_keys(item, f"{where}[{index}]")


def event_body(
    *,
    seq: int,
    ts: str,
    actor: str,
    tenant: str,
    action: str,
    resource: str,
    decision: str,
    policy_version: str | None,
    details_json: str,
) -> bytes:
    """The canonical body; equal to canonical_json() of the event dict (tests hold it)."""
    text = (
        BODY_HEAD % (quote(action), quote(actor), quote(decision))
        + details_json
        + BODY_TAIL
        % (
            "null" if policy_version is None else quote(policy_version),
            quote(resource),
            seq,
            quote(tenant),
            quote(ts),
        )
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEventError("a field is not valid Unicode (lone surrogate)") from None


def check_event(
    *,
    ts: str,
    actor: str,
    tenant: str,
    action: str,
    resource: str,
    decision: str,
    policy_version: str | None,
) -> None:
    for name, value in (
        ("actor", actor),
        ("tenant", tenant),
        ("action", action),
        ("resource", resource),
        ("decision", decision),
    ):
        check_field(name, value)
    check_field("policy_version", policy_version, optional=True)
    if not is_canonical_ts(ts):
        raise InvalidEventError(f"ts {ts!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ (UTC)")
