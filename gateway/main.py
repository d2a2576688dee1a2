"""The app factory. `create_app(settings)` builds a gateway over an already-migrated
database; `tunegate serve` runs it under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from gateway import __doc__ as gateway_doc
from gateway.audit_api.router import router as audit_router
from gateway.config import Settings, get_settings
from gateway.data_sources.router import router as data_sources_router
from gateway.errors import install_error_handlers
from gateway.health import router as health_router
from gateway.limits import BodySizeLimitMiddleware
from gateway.logging import RequestContextMiddleware, configure_logging
from gateway.metrics import MetricsMiddleware
from gateway.policies_api.router import router as policies_router
from gateway.state import GatewayState

log = structlog.get_logger()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(json_logs=settings.json_logs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = GatewayState.start(settings)
        app.state.gateway = state
        log.info("gateway.started", env=settings.env, database=state.engine.dialect.name)
        try:
            yield
        finally:
            state.stop()
            log.info("gateway.stopped")

    app = FastAPI(
        title="tunegate",
        version="0.1.0",
        summary=gateway_doc,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health_router)
    app.include_router(policies_router)
    app.include_router(audit_router)
    app.include_router(data_sources_router)
    return app
