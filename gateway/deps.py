"""The dependencies every route is built from: a session that commits once, the
authenticated principal, and `Authorize(obj, act)`, the one authorization check."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import structlog
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from gateway import metrics
from gateway.errors import InvalidRequest, PermissionDenied, ServiceUnavailable, Unauthenticated
from gateway.files.upload import MultipartUpload
from gateway.security import (
    AuthenticationError,
    KeySetUnavailableError,
    Principal,
    bearer_challenge,
)
from gateway.state import GatewayState

log = structlog.get_logger()

ON_COMMIT = "on_commit"
ON_ROLLBACK = "on_rollback"
PATH_ID = re.compile(r"[A-Za-z0-9._@:-]{1,128}")


def get_state(request: Request) -> GatewayState:
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
    session.info["gateway"] = state
    try:
        yield session
        if session.in_transaction() or session.new or session.dirty or session.deleted:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_commit_and_follow_up, session)
        else:
            _run_after_commit(session)
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


def _commit_and_follow_up(session: Session) -> None:
    session.commit()
    _run_after_commit(session)


def _roll_back_and_follow_up(session: Session) -> None:
    try:
        session.rollback()
    finally:
        _run_callbacks(session, ON_ROLLBACK)
        session.close()


def _run_after_commit(session: Session) -> None:
    _run_callbacks(session, ON_COMMIT)


def _run_callbacks(session: Session, key: str) -> None:
    for callback in session.info.get(key, ()):
        try:
            callback()
        except Exception:
            # The outcome is decided: a follow-up (refreshing the in-memory policy,
            # removing an upload that was not recorded) must not change the answer.
            log.exception("request.callback_failed", after=key)


# scope="function": commit when the route returns, before the response is sent, so a
# client never sees success for a change that then failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def after_commit(session: Session, callback: Callable[[], Any]) -> None:
    """Runs `callback` once the request's transaction has committed (never on rollback)."""
    session.info.setdefault(ON_COMMIT, []).append(callback)


def on_rollback(session: Session, callback: Callable[[], Any]) -> None:
    """Runs `callback` if the request's transaction rolls back instead (e.g. to remove
    files written for a change that did not land)."""
    session.info.setdefault(ON_ROLLBACK, []).append(callback)


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


@dataclass(frozen=True)
class Authorized:
    """What an allowed decision hands to the service, so its audit event can say which
    rule and which policy version allowed the change."""

    principal: Principal
    obj: str
    act: str
    policy_version: str
    rule: tuple[str, ...] | None
    route: str
    method: str


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
        method = request.method
        try:
            obj = self.obj.format(**values)
        except (KeyError, IndexError, ValueError):
            obj = self.obj  # its braces fail validation: a deny with error set
        decision = state.policy.decide(
            principal.subject, principal.tenant, obj, self.act, extra_roles=principal.roles
        )
        metrics.AUTHZ_DECISIONS.labels(decision=decision.outcome).inc()
        if decision.allowed:
            return Authorized(
                principal=principal,
                obj=obj,
                act=self.act,
                policy_version=decision.policy_version,
                rule=decision.rule,
                route=route,
                method=method,
            )
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(
                functools.partial(
                    state.record_denial,
                    principal=principal,
                    obj=obj,
                    act=self.act,
                    decision=decision,
                    route=route,
                    method=method,
                )
            )
        raise PermissionDenied(
            f"{principal.subject} may not {self.act} {obj}"
            if decision.error is None
            else f"the request could not be authorized ({decision.error})",
            code="permission_denied" if decision.error is None else "authorization_error",
            details={
                "object": obj if decision.error is None else None,
                "action": self.act,
                "policy_version": decision.policy_version,
            },
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
    return MultipartUpload(request)


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
