"""Who is signed in, and the console's one authorization check: `Authorize` itself, with the
principal read from the session cookie instead of the Authorization header."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from gateway.authz import Authorized
from gateway.console.session import CSRF_FIELD, csrf_matches, session_token_of
from gateway.deps import Authorize, Resolver, StateDep, _checked_values
from gateway.security import AuthenticationError, KeySetUnavailableError, Principal

log = structlog.get_logger()


class SignInRequired(Exception):
    """No session, or its token expired or was refused: back to sign-in, then to `next`."""

    def __init__(self, next_path: str, reason: str) -> None:
        super().__init__(reason)
        self.next_path = next_path
        self.reason = reason


class CsrfRefused(Exception):
    """A state-changing form without this session's CSRF token."""


def session_token(request: Request) -> str | None:
    return session_token_of(request)


async def console_principal(request: Request, state: StateDep) -> Principal:
    token = session_token(request)
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not token:
        raise SignInRequired(wanted, "signed_out")
    verifier = state.token_verifier
    try:
        header = f"Bearer {token}"
        if verifier.may_block:
            principal = await run_in_threadpool(verifier.verify, header)
        else:
            principal = verifier.verify(header)
    except (AuthenticationError, KeySetUnavailableError) as exc:
        log.info("console.session_refused", reason=exc.reason)
        raise SignInRequired(wanted, exc.reason) from None
    structlog.contextvars.bind_contextvars(sub=principal.sub, tenant=principal.tenant)
    request.state.principal = principal
    return principal


ConsolePrincipalDep = Annotated[Principal, Depends(console_principal)]


class SignedIn:
    """A page that only needs a signed-in person (home, sign-out): what it shows is each
    filtered by the same policy checks as the API."""

    def __repr__(self) -> str:
        return "SignedIn()"

    async def __call__(self, principal: ConsolePrincipalDep) -> Principal:
        return principal


class ConsoleAuthorize(Authorize):
    """`Authorize(obj, act)` for a console page: the same decision, the same audit record of a
    denial, the same reason (shown as a page instead of JSON)."""

    def __repr__(self) -> str:
        return f"ConsoleAuthorize({self.obj!r}, {self.act!r})"

    async def __call__(  # type: ignore[override]
        self, request: Request, principal: ConsolePrincipalDep, state: StateDep
    ) -> Authorized:
        values = _checked_values(request.path_params)
        if self.resolve is not None:
            values |= await run_in_threadpool(self.resolve, state, principal, values)
        return await self.decide(request, principal, state, values)


def console_authorize(obj: str, act: str, *, resolve: Resolver | None = None) -> Any:
    return Depends(ConsoleAuthorize(obj, act, resolve=resolve))


def signed_in() -> Any:
    return Depends(SignedIn())


MAX_FORM_FIELDS = 64


async def checked_form(request: Request, state: StateDep) -> FormData:
    """The posted form, once its CSRF token is this session's (every console POST)."""
    token = session_token(request)
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    if not token or not csrf_matches(state.settings, token, form.get(CSRF_FIELD)):
        raise CsrfRefused()
    return form


CsrfDep = Depends(checked_form)
FormDep = Annotated[FormData, Depends(checked_form)]
