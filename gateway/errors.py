"""Every refusal the gateway makes is a GatewayError: an HTTP status, a machine-readable
code and a human message, rendered in the OpenAI error shape so SDK clients show it."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    status_code = 422
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


async def _gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
    return JSONResponse(
        error_body(code=exc.code, message=exc.message, param=exc.param, details=exc.details),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    faults = [
        {
            "loc": [str(part) for part in fault.get("loc", ())],
            "type": fault.get("type"),
            "msg": fault.get("msg"),
        }
        for fault in exc.errors()[:100]
    ]
    first = faults[0] if faults else {"loc": [], "msg": "invalid request"}
    param = ".".join(first["loc"][1:]) or None
    return JSONResponse(
        error_body(
            code="invalid_request",
            message=f"{param or 'request'}: {first['msg']}",
            param=param,
            details=faults,
        ),
        status_code=422,
    )


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(code=code, message=str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("request.failed", error_type=type(exc).__name__)
    return JSONResponse(
        error_body(code="internal_error", message="internal error; see the server log"),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
