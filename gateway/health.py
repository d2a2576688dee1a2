"""Operations: liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gateway.db import read_only
from gateway.metrics import REGISTRY

router = APIRouter(tags=["operations"])

# Only these paths may skip authorization; tests/gateway/test_route_authz.py enforces it.
UNAUTHENTICATED_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state.gateway
    checks = {
        "database": False,
        "policy": state.policy.loaded,
        "audit_sequencer": state.sequencer_healthy,
        "job_writer": state.job_writer is not None and state.job_writer.healthy,
    }
    pusher = getattr(state, "witness_pusher", None)  # issue 16 §2: K of N witnesses agree
    if pusher is not None:
        checks["witnesses"] = pusher.healthy
    try:
        await run_in_threadpool(_ping, read_only(state.engine))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _ping(engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
