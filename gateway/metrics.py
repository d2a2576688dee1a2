"""Prometheus metrics. Label values are bounded sets (route templates, outcomes, reason
codes), never ids, subjects or tenants."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "tunegate_http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "tunegate_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["route", "method"],
    registry=REGISTRY,
)
AUTHN_FAILURES = Counter(
    "tunegate_authn_failures_total",
    "Refused bearer tokens by reason",
    ["reason"],
    registry=REGISTRY,
)
AUTHZ_DECISIONS = Counter(
    "tunegate_authz_decisions_total",
    "Authorization decisions by outcome",
    ["decision"],
    registry=REGISTRY,
)
AUDIT_EVENTS = Counter(
    "tunegate_audit_events_total", "Audit events appended (committed or not)", registry=REGISTRY
)
JOB_WRITE_BATCH = Histogram(
    "tunegate_job_write_batch_submissions",
    "Job submissions written per transaction by the group writer",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
POLICY_RELOADS = Counter(
    "tunegate_policy_refreshes_total",
    "Policy changes applied from the database",
    ["kind"],
    registry=REGISTRY,
)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(route=route, method=method, status=str(status["code"])).inc()
            HTTP_LATENCY.labels(route=route, method=method).observe(time.perf_counter() - started)
