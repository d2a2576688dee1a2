"""The app factory. `create_app(settings)` builds a gateway over an already-migrated
database; `tunegate serve` runs it under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog
from fastapi import FastAPI

from gateway import __doc__ as gateway_doc
from gateway.audit_api.router import router as audit_router
from gateway.base_models.router import router as base_models_router
from gateway.compliance.router import router as compliance_router
from gateway.config import Settings, get_settings
from gateway.console.app import install_console
from gateway.data_sources.router import router as data_sources_router
from gateway.dossier.router import router as dossier_router
from gateway.dry_runs.router import router as dry_runs_router
from gateway.erasure.router import router as erasure_router
from gateway.error_handlers import install_error_handlers
from gateway.evidence.router import router as evidence_router
from gateway.files.router import router as files_router
from gateway.health import router as health_router
from gateway.inference.router import router as inference_router
from gateway.jobs.router import router as jobs_router
from gateway.limits import BodySizeLimitMiddleware, ConcurrencyLimitMiddleware
from gateway.logging import configure_logging
from gateway.middleware import MetricsMiddleware, RequestContextMiddleware
from gateway.policies_api.router import router as policies_router
from gateway.providers.router import router as providers_router
from gateway.reevaluation.router import router as reevaluation_router
from gateway.registry.router import promotions_router
from gateway.registry.router import router as registry_router
from gateway.retention.router import router as retention_router
from gateway.state import GatewayState

log = structlog.get_logger()

MULTIPART_ALLOWANCE = 64 * 1024
THREAD_HEADROOM = 16


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(json_logs=settings.json_logs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One pool thread per admitted request, plus headroom for the response
        # validation that runs between a route and its commit (see limits.py).
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = settings.max_concurrent_requests + THREAD_HEADROOM
        state = GatewayState.start(settings)
        app.state.gateway = state
        log.info("gateway.started", env=settings.env, database=state.engine.dialect.name)
        try:
            yield
        finally:
            await state.aclose_inference()
            state.stop()
            log.info("gateway.stopped")

    app = FastAPI(
        title="tunegate",
        version="0.1.0",
        summary=gateway_doc,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        # The file part plus a form's worth of multipart framing and fields.
        streamed={("POST", "/v1/files"): settings.max_upload_bytes + MULTIPART_ALLOWANCE},
    )
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        max_requests=settings.max_concurrent_requests,
        exempt_suffixes=("/events/stream",),
    )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health_router)
    app.include_router(inference_router)  # early: the hottest route matches first
    app.include_router(policies_router)
    app.include_router(audit_router)
    app.include_router(data_sources_router)
    app.include_router(files_router)
    app.include_router(erasure_router)
    app.include_router(dry_runs_router)  # before jobs: /dry_run is no job id
    app.include_router(jobs_router)
    app.include_router(base_models_router)
    app.include_router(providers_router)
    app.include_router(registry_router)
    app.include_router(promotions_router)
    app.include_router(reevaluation_router)
    app.include_router(retention_router)
    app.include_router(compliance_router)
    app.include_router(dossier_router)
    app.include_router(evidence_router)
    install_console(app)
    return app
