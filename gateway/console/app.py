"""Mounts the console on the gateway's app: static files, pages, headers, error pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from gateway.console.errors import install_console_errors
from gateway.console.headers import ConsoleHeadersMiddleware
from gateway.console.render import PAGES
from gateway.console.routes import (
    audit,
    auth,
    data_sources,
    erasure,
    files,
    home,
    jobs,
    models,
    policies,
)

STATIC = Path(__file__).parent / "static"
ROUTERS = (
    auth.router,
    home.router,
    audit.router,
    data_sources.router,
    models.router,
    files.router,
    erasure.router,
    policies.router,
    jobs.router,
)


def install_console(app: FastAPI) -> None:
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    for router in ROUTERS:
        app.include_router(router)
        PAGES.update(getattr(route, "path", "") for route in router.routes)
    install_console_errors(app)
    app.add_middleware(ConsoleHeadersMiddleware)
