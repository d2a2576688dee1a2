"""Prometheus metrics. Label values are bounded sets (route templates, outcomes, reason
codes), never ids, subjects or tenants. (gateway.health serves them and measures every
HTTP request.)"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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

# --- witnesses (issue 16 §2: gateway.witness.pusher) ---
WITNESS_REFUSALS = Counter(
    "tunegate_witness_refusals_total",
    "Checkpoints a witness refused to cosign, by HTTP status (a rewritten log looks like this)",
    ["status"],
    registry=REGISTRY,
)
WITNESS_COSIGNATURES = Counter(
    "tunegate_witness_cosignatures_total",
    "Checkpoints a witness cosigned",
    registry=REGISTRY,
)
WITNESS_PUSH_ERRORS = Counter(
    "tunegate_witness_push_errors_total",
    "Pushes to a witness that got no answer or an unreadable one",
    ["kind"],
    registry=REGISTRY,
)
