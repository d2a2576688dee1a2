"""GatewayError and the framework's own errors rendered in the OpenAI error shape."""

from __future__ import annotations

import re

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import GatewayError, error_body

log = structlog.get_logger()


async def _gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
    return JSONResponse(
        error_body(code=exc.code, message=exc.message, param=exc.param, details=exc.details),
        status_code=exc.status_code,
        headers=exc.headers,
    )


# Where pydantic names the member of a union that failed ("literal['auto']",
# "constrained-int") or a dict's key ("[key]"): not part of the parameter's name.
_UNION_MEMBER = re.compile(r"[\[\]'\-]")
_SHOULD = "Input should be "


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """OpenAI's answer to an invalid parameter: 400, ``invalid_request_error``, ``param``
    the first field at fault and a message that states its rule (every alternative of a
    union, never only the first); ``details`` list every fault."""
    faults = [
        {
            "loc": [str(part) for part in fault.get("loc", ())],
            "type": fault.get("type"),
            "msg": str(fault.get("msg", "")).removeprefix("Value error, "),
        }
        for fault in exc.errors()[:100]
    ]
    first = faults[0] if faults else {"loc": [], "msg": "invalid request"}
    where = _param(first["loc"])
    rules = [f["msg"] for f in faults if _param(f["loc"]) == where]
    if len(rules) > 1:
        alternatives = " or ".join(rule.removeprefix(_SHOULD) for rule in dict.fromkeys(rules))
        message = f"{_SHOULD}{alternatives}"
    else:
        message = first["msg"]
    param = ".".join(where[1:]) or None
    return JSONResponse(
        error_body(
            code="invalid_request",
            message=f"{param or 'request'}: {message}",
            param=param,
            details=faults,
        ),
        status_code=400,
    )


def _param(loc: list[str]) -> tuple[str, ...]:
    return tuple(part for part in loc if not _UNION_MEMBER.search(part))


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
