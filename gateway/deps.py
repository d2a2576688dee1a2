"""The dependencies every route is built from: a session that commits once, the
authenticated principal, and `Authorize(obj, act)`, the one authorization check."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from gateway import metrics
from gateway.errors import InvalidRequest, PermissionDenied, ServiceUnavailable, Unauthenticated
from gateway.security import (
    AuthenticationError,
    KeySetUnavailableError,
    Principal,
    bearer_challenge,
)
from gateway.state import GatewayState

log = structlog.get_logger()

ON_COMMIT = "on_commit"
PATH_ID = re.compile(r"[A-Za-z0-9._@-]{1,128}")


def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway


StateDep = Annotated[GatewayState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """One transaction per request: commit once on success, roll back on any error, so a
    governed change and its audit event land together or not at all."""
    with Session(state.engine, expire_on_commit=False) as session:
        session.info["gateway"] = state
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        for callback in session.info.get(ON_COMMIT, ()):
            try:
                callback()
            except Exception:
                # Committed is committed: a follow-up (e.g. refreshing the in-memory
                # policy, which the poller also does) must not turn success into a 500.
                log.exception("request.after_commit_failed")


# scope="function": commit when the route returns, before the response is sent, so a
# client never sees success for a change that then failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def after_commit(session: Session, callback: Callable[[], Any]) -> None:
    """Runs `callback` once the request's transaction has committed (never on rollback)."""
    session.info.setdefault(ON_COMMIT, []).append(callback)


async def get_principal(request: Request, state: StateDep) -> Principal:
    header = request.headers.get("authorization")
    try:
        # JWKS mode may fetch keys over HTTP: keep it off the event loop.
        principal = await run_in_threadpool(state.token_verifier.verify, header)
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

    def __init__(self, obj: str, act: str) -> None:
        self.obj = obj
        self.act = act

    def __repr__(self) -> str:
        return f"Authorize({self.obj!r}, {self.act!r})"

    def __call__(
        self, request: Request, principal: PrincipalDep, state: StateDep
    ) -> Authorized:
        route = getattr(request.scope.get("route"), "path", request.url.path)
        method = request.method
        for name, value in request.path_params.items():
            # A path value names one object: never a wildcard, never matcher text.
            if not PATH_ID.fullmatch(str(value)):
                raise InvalidRequest(
                    f"{name} must match {PATH_ID.pattern}", code="invalid_path_parameter",
                    param=name,
                )
        try:
            obj = self.obj.format(**request.path_params)
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
        state.record_denial(
            principal=principal,
            obj=obj,
            act=self.act,
            decision=decision,
            route=route,
            method=method,
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


def authorize(obj: str, act: str) -> Any:
    return Depends(Authorize(obj, act))
