"""Refusals and failures on console paths shown as pages, with the API's reason in words."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.console.deps import CsrfRefused, SignInRequired
from gateway.console.render import render
from gateway.errors import GatewayError

log = structlog.get_logger()

Handler = Callable[[Request, Exception], Awaitable[Response]]
PREFIX = "/console"

TITLES = {401: "Sign-in needed", 403: "Not allowed", 404: "Not found", 409: "Conflict"}


def _on_console(request: Request) -> bool:
    return request.url.path.startswith(PREFIX)


def error_page(request: Request, *, status: int, code: str, message: str) -> Response:
    state = request.app.state.gateway
    principal = getattr(request.state, "principal", None)
    title = TITLES.get(status, "Refused" if status < 500 else "Something went wrong")
    return render(
        request,
        "error.html",
        state=state,
        principal=principal,
        status_code=status,
        title=title,
        status=status,
        code=code,
        message=message,
    )


async def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    target = f"{PREFIX}/login?next={quote(exc.next_path, safe='')}"
    if exc.reason != "signed_out":
        target += "&expired=1"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _csrf(request: Request, _exc: Exception) -> Response:
    return error_page(
        request,
        status=403,
        code="csrf_token_invalid",
        message=(
            "This form has expired or did not come from this console. "
            "Reload the page and try again."
        ),
    )


def _console_aware(fallback: Handler, render_console: Handler) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if _on_console(request):
            return await render_console(request, exc)
        return await fallback(request, exc)

    return handler


async def _gateway_error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_page(request, status=exc.status_code, code=exc.code, message=exc.message)


async def _validation_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    return error_page(
        request, status=422, code="invalid_request", message=f"{where}: {first.get('msg')}"
    )


async def _http_error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_page(request, status=exc.status_code, code=code, message=str(exc.detail))


async def _unexpected_page(request: Request, exc: Exception) -> Response:
    log.exception("console.failed", error_type=type(exc).__name__)
    return error_page(
        request, status=500, code="internal_error", message="Internal error; see the server log."
    )


def install_console_errors(app: FastAPI) -> None:
    """Console paths get pages; every other path keeps the API's JSON handlers."""
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(CsrfRefused, _csrf)
    for kind, page in (
        (GatewayError, _gateway_error_page),
        (RequestValidationError, _validation_page),
        (StarletteHTTPException, _http_error_page),
        (Exception, _unexpected_page),
    ):
        app.add_exception_handler(kind, _console_aware(app.exception_handlers[kind], page))
