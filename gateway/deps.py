"""The dependencies every route is built from: a session that commits once, the
authenticated principal, and `Authorize(obj, act)`, the one authorization check."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any

import anyio
import structlog
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from gateway import metrics
from gateway.audit_api.service import EVENTS_QUEUED, deny
from gateway.authz import Authorized, decide
from gateway.db import run_after_commit, run_on_rollback
from gateway.errors import InvalidRequest, ServiceUnavailable, Unauthenticated
from gateway.files.upload import MultipartUpload
from gateway.security import (
    AuthenticationError,
    KeySetUnavailableError,
    Principal,
    bearer_challenge,
)
from gateway.state import GatewayState

log = structlog.get_logger()

PATH_ID = re.compile(r"[A-Za-z0-9._@:-]{1,128}")


async def get_state(request: Request) -> GatewayState:
    # a coroutine: FastAPI runs a plain function dependency in a worker thread, a hop per
    # request for an attribute read
    return request.app.state.gateway


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    """One transaction per request: commit once on success, roll back on any error, so a
    governed change and its audit event land together or not at all.

    A coroutine, not a thread: a session touches no database until it is used, and a
    request that wrote nothing leaves nothing to end. Only real database work
    here goes to a worker thread, shielded from cancellation so that a client hanging up
    cannot leave a transaction (on SQLite, the write lock) open."""
    session = Session(state.engine, expire_on_commit=False)
    try:
        yield session
        if session.in_transaction() or session.new or session.dirty or session.deleted:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_commit_and_follow_up, state, session)
        else:
            _followed_up(state, session)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_roll_back_and_follow_up, session)
        raise
    finally:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(session.close)
        else:
            session.close()


def _commit_and_follow_up(state: GatewayState, session: Session) -> None:
    session.commit()
    _followed_up(state, session)


def _followed_up(state: GatewayState, session: Session) -> None:
    if session.info.pop(EVENTS_QUEUED, False):
        state.notify_sequencer()
    run_after_commit(session)


def _roll_back_and_follow_up(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.info.pop(EVENTS_QUEUED, None)
        run_on_rollback(session)
        session.close()


# scope="function": commit when the route returns, before the response is sent, so a
# client never sees success for a change that then failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_principal(request: Request, state: StateDep) -> Principal:
    header = request.headers.get("authorization")
    verifier = state.token_verifier
    try:
        # JWKS mode may fetch keys over HTTP: keep it off the event loop.
        if verifier.may_block:
            principal = await run_in_threadpool(verifier.verify, header)
        else:
            principal = verifier.verify(header)
    except KeySetUnavailableError as exc:
        metrics.AUTHN_FAILURES.labels(reason=exc.reason).inc()
        log.warning("authn.key_set_unavailable")
        raise ServiceUnavailable(exc.message, code=exc.reason) from None
    except AuthenticationError as exc:
        metrics.AUTHN_FAILURES.labels(reason=exc.reason).inc()
        log.info("authn.refused", reason=exc.reason)
        raise Unauthenticated(
            exc.message, code=exc.reason, headers={"WWW-Authenticate": bearer_challenge(exc)}
        ) from None
    structlog.contextvars.bind_contextvars(sub=principal.sub, tenant=principal.tenant)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


# Looks up what a path names (e.g. a file's data source) so the decision is made on the
# object that governs it; returns template values. It must not raise for a missing object:
# it returns the collection wildcard instead, so a caller without any grant is refused
# before learning whether the object exists.
Resolver = Callable[[GatewayState, Principal, dict[str, str]], dict[str, str]]


class Authorize:
    """`Depends(Authorize("ds:{data_source_id}", "approve"))`: the object may name path
    parameters. A denial, or any error while deciding, is audited in its own transaction
    (the request's own transaction is about to roll back) and answered with 403."""

    def __init__(self, obj: str, act: str, *, resolve: Resolver | None = None) -> None:
        self.obj = obj
        self.act = act
        self.resolve = resolve

    def __repr__(self) -> str:
        return f"Authorize({self.obj!r}, {self.act!r})"

    async def __call__(
        self, request: Request, principal: PrincipalDep, state: StateDep
    ) -> Authorized:
        values = _checked_values(request.path_params)
        if self.resolve is not None:
            # A resolver reads the database: not on the event loop.
            values |= await run_in_threadpool(self.resolve, state, principal, values)
        return await self.decide(request, principal, state, values)

    async def decide(
        self,
        request: Request,
        principal: Principal,
        state: GatewayState,
        values: dict[str, str],
    ) -> Authorized:
        """Deciding is in-memory and takes microseconds: it runs on the event loop. Only a
        denial, which is written to the audit trail, goes to a worker thread."""
        route = getattr(request.scope.get("route"), "path", request.url.path)
        try:
            obj = self.obj.format(**values)
        except (KeyError, IndexError, ValueError):
            obj = self.obj  # its braces fail validation: a deny with error set
        outcome = decide(state.policy, principal, obj, self.act, route=route, method=request.method)
        if isinstance(outcome, Authorized):
            metrics.AUTHZ_DECISIONS.labels(decision="allow").inc()
            return outcome
        metrics.AUTHZ_DECISIONS.labels(decision=outcome.outcome).inc()
        # deny() records the refusal (a write, so in a worker thread) and raises the 403.
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(
                functools.partial(
                    deny,
                    state,
                    principal=principal,
                    obj=obj,
                    act=self.act,
                    decision=outcome,
                    route=route,
                    method=request.method,
                )
            )


def _checked_values(
    values: Mapping[str, Any], *, code: str = "invalid_path_parameter"
) -> dict[str, str]:
    """A value that names an object names one object: never a wildcard, never matcher
    text."""
    for name, value in values.items():
        if not PATH_ID.fullmatch(str(value)):
            raise InvalidRequest(f"{name} must match {PATH_ID.pattern}", code=code, param=name)
    return {name: str(value) for name, value in values.items()}


def authorize(obj: str, act: str, *, resolve: Resolver | None = None) -> Any:
    return Depends(Authorize(obj, act, resolve=resolve))


def get_upload(request: Request) -> MultipartUpload:
    return MultipartUpload(request.stream(), content_type=request.headers.get("content-type"))


UploadDep = Annotated[MultipartUpload, Depends(get_upload)]


class AuthorizeUpload(Authorize):
    """Authorization for a multipart upload whose object names form fields, e.g.
    `AuthorizeUpload("ds:{data_source}", "upload", fields=("purpose", "data_source"))`.
    The fields are read from the stream before the file part, and the decision is made
    before a single byte of the file is read."""

    def __init__(self, obj: str, act: str, *, fields: tuple[str, ...]) -> None:
        super().__init__(obj, act)
        self.fields = fields

    def __repr__(self) -> str:
        return f"AuthorizeUpload({self.obj!r}, {self.act!r}, fields={self.fields!r})"

    async def __call__(  # type: ignore[override]
        self, request: Request, principal: PrincipalDep, state: StateDep, upload: UploadDep
    ) -> Authorized:
        fields = await upload.read_fields(self.fields)
        named = re.findall(r"\{(\w+)\}", self.obj)
        values = _checked_values({name: fields[name] for name in named}, code="invalid_field")
        return await self.decide(request, principal, state, values)


def authorize_upload(obj: str, act: str, *, fields: tuple[str, ...]) -> Any:
    return Depends(AuthorizeUpload(obj, act, fields=fields))
