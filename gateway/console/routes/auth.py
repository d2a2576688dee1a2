"""Sign-in with a bearer token (dev and tests), and sign-out."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.console import oidc
from gateway.console.deps import CsrfDep, signed_in
from gateway.console.render import render
from gateway.console.session import COOKIE, cookie_options, safe_next, token_expiry
from gateway.deps import StateDep
from gateway.security import AuthenticationError, KeySetUnavailableError

log = structlog.get_logger()
router = APIRouter(prefix="/console")

MAX_TOKEN_FIELD = 16_384  # the verifier refuses anything over MAX_TOKEN_BYTES anyway


def _login_page(
    request: Request, state: StateDep, *, next_path: str, errors: dict[str, str], status: int = 200
) -> HTMLResponse:
    reason = (
        "Your session has expired. Sign in again to go on."
        if request.query_params.get("expired")
        else ""
    )
    return render(
        request,
        "login.html",
        state=state,
        principal=None,
        status_code=status,
        next=next_path,
        errors=errors,
        reason=reason,
        token_form=state.settings.env == "dev" or state.settings.console_token_sign_in,
        oidc=oidc.configured(state.settings),
    )


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form(request: Request, state: StateDep, next: str | None = None) -> HTMLResponse:
    return _login_page(request, state, next_path=safe_next(next), errors={})


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    state: StateDep,
    token: Annotated[str, Form(max_length=MAX_TOKEN_FIELD)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/console",
) -> Response:
    target = safe_next(next)
    if not (state.settings.env == "dev" or state.settings.console_token_sign_in):
        return _login_page(
            request,
            state,
            next_path=target,
            errors={"token": "Token sign-in is off on this gateway."},
            status=403,
        )
    token = token.strip()
    if not token:
        return _login_page(
            request, state, next_path=target, errors={"token": "Paste a token."}, status=422
        )
    try:
        state.token_verifier.verify(f"Bearer {token}")
    except (AuthenticationError, KeySetUnavailableError) as exc:
        return _login_page(
            request,
            state,
            next_path=target,
            errors={"token": f"This token was refused: {exc.message} ({exc.reason})."},
            status=422,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(value=token, **cookie_options(state.settings, expires=token_expiry(token)))
    return response


@router.post("/logout", include_in_schema=False, dependencies=[CsrfDep])
def logout(state: StateDep, _principal=signed_in()) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    options = cookie_options(state.settings, expires=None)
    response.delete_cookie(
        COOKIE,
        path=options["path"],
        secure=options["secure"],
        httponly=True,
        samesite="strict",
    )
    return response


def _redirect_uri(request: Request, state: StateDep) -> str:
    return state.settings.oidc_redirect_url or str(request.url_for("oidc_callback"))


@router.get("/login/oidc", include_in_schema=False)
def oidc_begin(request: Request, state: StateDep, next: str | None = None) -> Response:
    """To the provider, with a PKCE challenge; back at /console/oidc/callback."""
    target = safe_next(next)
    if not oidc.configured(state.settings):
        return _login_page(request, state, next_path=target, errors={}, status=404)
    try:
        started = oidc.begin(
            state.settings, redirect_uri=_redirect_uri(request, state), next_path=target
        )
    except oidc.OidcError as exc:
        return _login_page(
            request, state, next_path=target, errors={"oidc": exc.message}, status=503
        )
    response = RedirectResponse(started.authorize_url, status_code=303)
    # Lax, not Strict: the provider's redirect back is a cross-site navigation.
    response.set_cookie(
        oidc.FLOW_COOKIE,
        started.flow_cookie,
        max_age=oidc.FLOW_SECONDS,
        httponly=True,
        samesite="lax",
        secure=state.settings.env != "dev",
        path="/console/oidc",
    )
    return response


@router.get("/oidc/callback", name="oidc_callback", include_in_schema=False)
def oidc_callback(
    request: Request,
    state: StateDep,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    flow_state: Annotated[str | None, Query(alias="state", max_length=512)] = None,
) -> Response:
    try:
        token, target = oidc.finish(
            state.settings,
            state.token_verifier,
            flow_cookie=request.cookies.get(oidc.FLOW_COOKIE),
            code=code,
            state=flow_state,
            redirect_uri=_redirect_uri(request, state),
        )
    except oidc.OidcError as exc:
        log.info("console.oidc_refused", reason=exc.reason)
        return _login_page(
            request,
            state,
            next_path="/console",
            errors={"oidc": f"{exc.message} ({exc.reason})."},
            status=401,
        )
    log.info("console.signed_in", method="oidc")
    # A page, not a redirect: the next request is then same-site, so the Strict session
    # cookie goes with it (a redirect chain that began at the provider counts as cross-site).
    response = render(request, "signed_in.html", state=state, principal=None, next=target)
    response.set_cookie(value=token, **cookie_options(state.settings, expires=token_expiry(token)))
    response.delete_cookie(oidc.FLOW_COOKIE, path="/console/oidc")
    return response
