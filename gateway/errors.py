"""Every refusal the gateway makes is a GatewayError: an HTTP status, a machine-readable
code and a human message, rendered in the OpenAI error shape so SDK clients show it
(gateway.error_handlers). No web framework here: services raise these."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import structlog

from gateway import error_codes

log = structlog.get_logger()


class GatewayError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}
        self.details = details
        # A code missing from gateway.error_codes is logged, never raised: an error path
        # must not become a 500.
        with suppress(Exception):
            if error_codes.lookup(self.code) is None:
                log.error("error.code_uncatalogued", code=self.code)


class Unauthenticated(GatewayError):
    status_code = 401
    code = "unauthenticated"


class PermissionDenied(GatewayError):
    status_code = 403
    code = "permission_denied"


class Forbidden(GatewayError):
    """Refused by a governance gate (not by the policy engine, whose refusals are
    PermissionDenied and audited as denials)."""

    status_code = 403
    code = "forbidden"


class NotFound(GatewayError):
    status_code = 404
    code = "not_found"


class Conflict(GatewayError):
    status_code = 409
    code = "conflict"


class Gone(GatewayError):
    status_code = 410
    code = "gone"


class PayloadTooLarge(GatewayError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status_code = 415
    code = "unsupported_media_type"


class InsufficientStorage(GatewayError):
    status_code = 507
    code = "insufficient_storage"


class InvalidRequest(GatewayError):
    """An invalid parameter: 400 with ``type: invalid_request_error``, as OpenAI answers
    (the SDK raises ``BadRequestError``)."""

    status_code = 400
    code = "invalid_request"


class TooManyRequests(GatewayError):
    """A quota: ``details`` name the quota, its limit and the current use."""

    status_code = 429
    code = "quota_exceeded"


class ServiceUnavailable(GatewayError):
    status_code = 503
    code = "unavailable"


def error_body(
    *, code: str, message: str, param: str | None = None, details: Any = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "param": param,
        "type": "invalid_request_error",
    }
    if details is not None:
        error["details"] = details
    return {"error": error}
