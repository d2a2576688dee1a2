"""Governed job submission beside a bare endpoint that inserts the same row, in one run.

Both servers run the same way (uvicorn, one process, access log off, the same database
engine settings) on loopback, one after the other, each with a fresh database:

- governed: tunegate's `POST /v1/fine_tuning/jobs` (authentication, authorization of job,
  base model and data source, data gates, quota check, job row + first events + audit
  event in one transaction; the executor only queues: no worker runs);
- bare: a FastAPI endpoint with no auth, no gates and no audit, that inserts the same
  `fine_tuning_jobs` row and returns it.

50 clients (asyncio + httpx, one connection each) submit as fast as they can for
`--seconds`. Printed: throughput, p50/p99 latency, the ratio (goal >= 0.5) and the p99
goal (<= 50 ms). Then the load check: no 5xx, and every accepted submission has its job
row and its `job.created` audit event.

Usage: python bench/submissions.py [--seconds 20] [--clients 50] [--database sqlite|postgresql]
       (postgresql uses TUNEGATE_TEST_POSTGRES_URL's server, a fresh database per run)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from fastapi import Request

CLIENTS = 50
ROOT = Path(__file__).resolve().parent.parent


# --- the two servers ---------------------------------------------------------------------------


def bare_app():
    """Inserts the row the governed endpoint inserts, and nothing else."""
    import secrets

    from fastapi import FastAPI
    from sqlmodel import Session

    from gateway.config import Settings
    from gateway.db import make_engine
    from gateway.jobs.models import FineTuningJob

    settings = Settings()
    engine = make_engine(settings.database_url)
    app = FastAPI()
    template = json.loads(os.environ["BENCH_JOB_TEMPLATE"])

    @app.post("/v1/fine_tuning/jobs")
    async def insert(request: Request) -> dict:
        body = await request.json()

        def write() -> dict:
            now_ns = time.time_ns()
            with Session(engine, expire_on_commit=False) as session:
                job = FineTuningJob(
                    **{
                        **template,
                        "id": f"ftjob-{secrets.token_hex(8)}",
                        "created_at": now_ns // 10**9,
                        "created_ns": now_ns,
                        "training_file": body["training_file"],
                    }
                )
                session.add(job)
                session.commit()
                return job.model_dump()

        from fastapi.concurrency import run_in_threadpool

        return await run_in_threadpool(write)

    return app


def serve(kind: str, port: int) -> None:
    import uvicorn

    if kind == "governed":
        from gateway.main import create_app

        app = create_app()
    else:
        app = bare_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(kind: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 (our own script, fixed arguments)
        [sys.executable, __file__, "--serve", kind, "--port", str(port)],
        env={**os.environ, **env},
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if kind == "bare" or httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                if kind == "bare":
                    httpx.get(f"{base}/docs", timeout=1)
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{kind} server did not start")


# --- setting up a governed tenant ------------------------------------------------------------


def prepare(workdir: Path, database_url: str) -> dict:
    """A migrated database with a tiny base model, an approved source, a training file
    and a grant for the submitting engineer."""
    from fastapi.testclient import TestClient

    from gateway.bootstrap import prepare_database
    from gateway.config import Settings
    from gateway.main import create_app
    from gateway.security import mint_dev_token
    from trainer.fixtures import build_tiny_model

    models = workdir / "import"
    build_tiny_model(models / "tiny", seed=0)
    settings = Settings(
        database_url=database_url,
        artifact_dir=workdir / "artifacts",
        env="dev",
        model_import_roots=[models],
        local_workers=0,
        ingest_workers=0,
        quota_concurrent_jobs=10**9,
        quota_device_hours_per_month=1e12,
    )
    prepare_database(settings)

    def headers(sub: str, *roles: str) -> dict:
        token = mint_dev_token(settings, sub=sub, roles=list(roles), tenant="default", ttl=7200)
        return {"Authorization": f"Bearer {token}"}

    with TestClient(create_app(settings)) as client:
        ok = client.post(
            "/v1/base_models",
            headers=headers("ada", "admin"),
            json={
                "name": "tiny",
                "license": "apache-2.0",
                "source": {"directory": str(models / "tiny")},
            },
        )
        assert ok.status_code == 201, ok.text
        source = client.post(
            "/v1/data_sources",
            headers=headers("dora", "data-owner"),
            json={
                "name": "bench",
                "classification": "internal",
                "allowed_purposes": ["bench"],
                "owner": "dora",
                "retention_days": 30,
                "pii_action": "block",
                "min_examples": 10,
            },
        ).json()
        client.post(
            f"/v1/data_sources/{source['id']}/approve",
            headers=headers("carol", "compliance-officer"),
        )
        lines = [
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"What is the status of order {i}?"},
                        {
                            "role": "assistant",
                            "content": f"Order {i} ships within {i % 9 + 1} days.",
                        },
                    ]
                }
            )
            for i in range(200)
        ]
        file = client.post(
            "/v1/files",
            headers=headers("dora", "data-owner"),
            data={"purpose": "fine-tune", "data_source": source["id"]},
            files={"file": ("train.jsonl", ("\n".join(lines) + "\n").encode())},
        ).json()
        client.post(
            "/v1/policies/rules",
            headers=headers("ada", "admin"),
            json={
                "rules": [
                    {
                        "ptype": "p",
                        "values": ["user:bob", "default", f"ds:{source['id']}", "train", "allow"],
                    }
                ]
            },
        )
        template = client.post(
            "/v1/fine_tuning/jobs",
            headers=headers("bob", "ml-engineer"),
            json={"model": "tiny", "training_file": file["id"], "purpose": "bench"},
        ).json()
    from sqlmodel import Session

    from gateway.db import make_engine
    from gateway.jobs.models import FineTuningJob

    engine = make_engine(database_url)
    with Session(engine) as session:
        row = session.get(FineTuningJob, template["id"]).model_dump()
    engine.dispose()
    return {
        "env": {
            "TUNEGATE_DATABASE_URL": database_url,
            "TUNEGATE_ARTIFACT_DIR": str(workdir / "artifacts"),
            "TUNEGATE_ENV": "dev",
            "TUNEGATE_LOCAL_WORKERS": "0",
            "TUNEGATE_QUOTA_CONCURRENT_JOBS": str(10**9),
            "TUNEGATE_QUOTA_DEVICE_HOURS_PER_MONTH": "1e12",
            "BENCH_JOB_TEMPLATE": json.dumps(row),
        },
        "headers": headers("bob", "ml-engineer"),
        "body": {
            "model": "tiny",
            "training_file": file["id"],
            "purpose": "bench",
            "hyperparameters": {"n_epochs": 1},
        },
    }


# --- load --------------------------------------------------------------------------------------


async def load(base: str, *, headers: dict, body: dict, seconds: float, clients: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted: list[str] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as http:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await http.post("/v1/fine_tuning/jobs", json=body)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    accepted.append(response.json()["id"])

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "statuses": statuses,
        "accepted": accepted,
    }


def check_recorded(database_url: str, accepted: list[str]) -> tuple[int, int]:
    """How many accepted submissions lack their job row, or their job.created event."""
    from sqlalchemy import select
    from sqlmodel import Session

    from audit import chain
    from audit.models import AuditEvent
    from gateway.db import make_engine
    from gateway.jobs.models import FineTuningJob

    engine = make_engine(database_url)
    chain.flush(engine)
    with Session(engine) as session:
        rows = set(session.scalars(select(FineTuningJob.id)).all())
        audited = set(
            session.scalars(
                select(AuditEvent.resource).where(AuditEvent.action == "job.created")
            ).all()
        )
    engine.dispose()
    missing_rows = sum(1 for job in accepted if job not in rows)
    missing_events = sum(1 for job in accepted if f"job:{job}" not in audited)
    return missing_rows, missing_events


def _database_url(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}"
    base = os.environ.get(
        "TUNEGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def run(args: argparse.Namespace) -> None:
    results = {}
    for kind in ("governed", "bare"):
        with tempfile.TemporaryDirectory(prefix=f"bench-gateway-{kind}-") as tmp:
            workdir = Path(tmp)
            database_url = _database_url(args.database, workdir)
            setup = prepare(workdir, database_url)
            process, base = start_server(kind, setup["env"])
            try:
                asyncio.run(
                    load(
                        base,
                        headers=setup["headers"],
                        body=setup["body"],
                        seconds=2,
                        clients=args.clients,
                    )
                )  # warm-up
                # Latency without queueing: with 50 clients in a closed loop, Little's law
                # makes p50 about 50 / throughput whatever the server does per request.
                # Measured first, before the load piles up thousands of queued jobs for
                # the quota check to count (the bench lifts the quotas).
                alone = asyncio.run(
                    load(
                        base,
                        headers=setup["headers"],
                        body=setup["body"],
                        seconds=args.single_client_seconds,
                        clients=1,
                    )
                )
                result = asyncio.run(
                    load(
                        base,
                        headers=setup["headers"],
                        body=setup["body"],
                        seconds=args.seconds,
                        clients=args.clients,
                    )
                )
                result["alone"] = alone
            finally:
                process.terminate()
                process.wait(timeout=30)
            if kind == "governed":
                result["missing"] = check_recorded(database_url, result["accepted"])
            results[kind] = result
    ours, bare = results["governed"], results["bare"]
    if set(bare["statuses"]) != {200}:  # a failing baseline would flatter the ratio
        raise SystemExit(f"the bare baseline did not insert: statuses {bare['statuses']}")
    label = f"gateway[{args.database}, {args.clients} clients, {args.seconds:g}s]"
    print(
        f"{label} governed submit: {ours['rate']:,.0f} req/s, p50 {ours['p50_ms']:.1f} ms, "
        f"p99 {ours['p99_ms']:.1f} ms | bare insert: {bare['rate']:,.0f} req/s, "
        f"p50 {bare['p50_ms']:.1f} ms, p99 {bare['p99_ms']:.1f} ms | ratio "
        f"{ours['rate'] / bare['rate']:.2f} (goal >= 0.5) | p99 goal <= 50 ms: "
        f"{'met' if ours['p99_ms'] <= 50 else 'not met'}"
    )
    print(
        f"{label} one client alone: governed p50 {ours['alone']['p50_ms']:.1f} ms, p99 "
        f"{ours['alone']['p99_ms']:.1f} ms | bare p50 {bare['alone']['p50_ms']:.1f} ms, "
        f"p99 {bare['alone']['p99_ms']:.1f} ms"
    )
    server_errors = sum(n for status, n in ours["statuses"].items() if status >= 500)
    rows, events = ours["missing"]
    print(
        f"{label} load check: {ours['requests']} submissions, statuses {ours['statuses']}, "
        f"5xx {server_errors}; accepted {len(ours['accepted'])}: missing job rows {rows}, "
        f"missing job.created events {events}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--single-client-seconds", type=float, default=5)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--serve", choices=("governed", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
    else:
        run(args)


if __name__ == "__main__":
    main()
