"""`tunegate audit export` of N audit events (default 1,000,000) beside the gateway's own
raw query into a file. Goal: the CLI's rate >= 0.5x the raw query's.

- baseline: the server's own query of the tenant's events (its rows are the export's JSON
  lines, written by the database: audit.export_proof.line_column), unpaged, on the
  database file, straight into a file, in this process: no HTTP, no paging, no proof;
- measured: a real `tunegate serve` on that database and a real `tunegate audit export -o
  FILE` process, from its start to its exit: paged reads in the server, the HTTP stream,
  the progress bar, the proof trailer (a range proof under a checkpoint signed for the
  request), fsync and the atomic rename.

Then `tunegate audit verify-export` checks the file offline (its time is printed, not
judged). Rows are bulk-loaded, already chained (not appended one by one), so seeding a
million events takes about a minute. On SQLite.
Usage: python bench/audit_export.py [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from audit.event import encode_details, event_body
from audit.export_proof import line_column
from audit.hashing import GENESIS_HASH, chain_hash, leaf_hash
from audit.merkle import levels, pack_frontier, prefix_frontier
from audit.query import _events
from audit.verify import EVENT_COLUMNS
from gateway import migrations
from gateway.bootstrap import seed_policy
from gateway.config import Settings
from gateway.db import make_engine
from gateway.security import mint_dev_token

TENANT = "default"
ROOT = Path(__file__).resolve().parents[1]


def build_rows(count: int) -> tuple[list[tuple], tuple]:
    """``count`` chained events of one tenant (EVENT_COLUMNS order) and the chain head."""
    rows, prev = [], GENESIS_HASH
    base = time.time() - count / 1000
    for i in range(count):
        second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i // 1000))
        ts = f"{second}.{i % 1000:06d}Z"
        fields = {
            "actor": f"user-{i % 997}",
            "tenant": TENANT,
            "action": ("policy.checked", "job.created", "file.uploaded")[i % 3],
            "resource": f"ds:ds-{i % 5003:016x}",
            "decision": ("allow", "allow", "deny")[i % 3],
            "policy_version": "9f2c41d0e6b7a3c59f2c41d0e6b7a3c5",
        }
        details = encode_details({"job": f"ftjob-{i:016x}", "rows": i % 100000, "route": "/v1/x"})
        body = event_body(seq=i + 1, ts=ts, details_json=details, **fields)
        digest = chain_hash(prev, body)
        rows.append((i + 1, ts, *fields.values(), body, prev, digest))
        prev = digest
    tree = levels([leaf_hash(row[8]) for row in rows])
    return rows, (count, prev, pack_frontier(prefix_frontier(tree, count)))


def load(database: Path, rows: list[tuple], head: tuple) -> None:
    connection = sqlite3.connect(database)
    try:
        marks = ", ".join("?" * len(EVENT_COLUMNS))
        connection.executemany(
            f"INSERT INTO audit_events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})", rows
        )
        connection.execute(
            "UPDATE audit_chain_head SET seq = ?, hash = ?, frontier = ? WHERE id = 1", head
        )
        connection.commit()
    finally:
        connection.close()


def raw_query() -> str:
    """The server's own query (audit.export_proof), unpaged: each row one export line."""
    query = (
        select(line_column("sqlite"))
        .where(_events.c.tenant == TENANT, _events.c.seq > 0)
        .order_by(_events.c.seq)
    )
    return str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))


def raw_export(database: Path, out: Path) -> float:
    """The baseline: that query on the database file, straight into a file."""
    sql = raw_query()
    gc.collect()
    started = time.perf_counter()
    connection = sqlite3.connect(database)
    try:
        cursor = connection.execute(sql)
        with out.open("wb") as handle:
            while rows := cursor.fetchmany(10_000):
                handle.write(b"".join([row[0] for row in rows]))
    finally:
        connection.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(env: dict[str, str], port: int) -> subprocess.Popen:
    server = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the gateway did not become ready")


def timed_cli(env: dict[str, str], *args: str) -> float:
    gc.collect()
    started = time.perf_counter()
    subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def verify_stream(url: str, token: str) -> tuple[float, float]:
    """Seconds to the first progress event of the server-side verification, and to its
    verdict (which must be ok)."""
    from gateway.client import Client

    started = time.perf_counter()
    first = None
    with Client(url, token) as api, api.events("/v1/audit/verify/stream") as events:
        for event in events:
            if event.event == "progress" and first is None:
                first = time.perf_counter() - started
            elif event.event != "progress":
                assert event.json().get("ok"), event.data
                break
    return first or 0.0, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs each")
    args = parser.parse_args()
    print(f"load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-export-") as tmp:
        work = Path(tmp)
        database = work / "tunegate.db"
        settings = Settings(
            database_url=f"sqlite:///{database}", env="dev", artifact_dir=work / "artifacts"
        )
        engine = make_engine(settings.database_url)
        migrations.upgrade(engine)
        started = time.perf_counter()
        rows, head = build_rows(args.events)
        load(database, rows, head)
        del rows
        seed_policy(engine)  # chained after the loaded events, as event N + 1 (tenant *)
        engine.dispose()
        print(f"seeded {args.events:,} chained events in {time.perf_counter() - started:.0f}s")

        raw = min(raw_export(database, work / "raw.jsonl") for _ in range(args.repeat))
        raw_rate = args.events / raw
        print(f"export  baseline: raw query -> file, in-process   {raw_rate:11,.0f} ev/s")

        port = free_port()
        token = mint_dev_token(settings, sub="carol", roles=["compliance-officer"], ttl=3600)
        env = {
            **os.environ,
            "TUNEGATE_DATABASE_URL": settings.database_url,
            "TUNEGATE_ARTIFACT_DIR": str(settings.artifact_dir),
            "TUNEGATE_LOCAL_WORKERS": "0",
            "TUNEGATE_URL": f"http://127.0.0.1:{port}",
            "TUNEGATE_TOKEN": token,
            "TUNEGATE_CONFIG_DIR": str(work / "config"),
        }
        server = serve(env, port)
        try:
            out = work / "export.jsonl"
            cli = min(timed_cli(env, "audit", "export", "-o", str(out)) for _ in range(args.repeat))
            first, total = verify_stream(env["TUNEGATE_URL"], token)
            key = httpx.get(
                f"{env['TUNEGATE_URL']}/v1/audit/public-key",
                headers={"Authorization": f"Bearer {token}"},
            ).json()["public_key_pem"]
        finally:
            server.terminate()
            server.wait(timeout=30)
        (work / "key.pem").write_text(key)
        rate = args.events / cli
        ratio = rate / raw_rate
        print(
            f"export  tunegate audit export (HTTP, proof, file)  {rate:11,.0f} ev/s"
            f"  ratio to raw {ratio:.2f}  {'meets' if ratio >= 0.5 else 'below'} 0.5 goal"
            f"  ({out.stat().st_size / 1e6:,.0f} MB in {cli:.1f}s)"
        )
        print(
            f"verify  GET /v1/audit/verify/stream: first progress after {first:.2f}s "
            f"(goal < 1 s), verdict after {total:.1f}s"
        )
        check = timed_cli(
            env, "audit", "verify-export", str(out), "--public-key", str(work / "key.pem")
        )
        print(
            f"export  tunegate audit verify-export (offline)     {args.events / check:11,.0f} ev/s"
        )
    print(f"load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
