"""Console figures, each beside its baseline in the same run.

1. The audit page (/console/audit, 50 events a page) with N events in the database
   (default 1,000,000), first page and page 5,000 (the keyset cursor `after` = 249,950),
   beside the same pages with 10,000 events (page 5,000 does not exist there: its last
   page, 200, stands in). Printed: the in-process request time (real app, TestClient,
   signed-in session; all of the server's work, no network) p50 and p99, and the ratio of
   each page's p50 to its baseline at 10,000 events. Goal: <= 1.5, cost does not grow with
   the log.
2. Verify chain with progress (/console/audit/verify/stream, the page's event source) on
   the N-event chain: the time to its first progress update, and to the first that counts
   checked events. Goal: first update within 1 s.

Rows are bulk-loaded, chained and checkpointed as the gateway writes them (same signing
key as the app), on SQLite. About three minutes on 2 cores for 1M events.

Usage: python bench/console.py [--events N] [--requests R]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import structlog
from audit_trail import CHECKPOINT_EVERY, Databases, load
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from audit.checkpoints import Signer
from audit.event import encode_details, event_body
from audit.hashing import GENESIS_HASH, chain_hash, leaf_hash
from audit.merkle import frontier_root, levels, pack_frontier, prefix_frontier
from gateway.bootstrap import seed_policy
from gateway.config import Settings
from gateway.main import create_app
from gateway.security import mint_dev_token

PAGE = 50
DEEP_PAGE = 5000


def build_rows(count: int, signer: Signer):
    """`count` chained events of tenant "default" (the page's reader), head, checkpoints."""
    rows, prev, base = [], GENESIS_HASH, time.time() - count / 1000
    for i in range(count):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i // 1000))
        ts = f"{ts}.{i % 1000:06d}Z"
        fields = {
            "actor": f"user-{i % 997}",
            "tenant": "default",
            "action": ("policy.check", "fine_tuning.job.create", "files.upload")[i % 3],
            "resource": f"ds:{i % 5003}",
            "decision": ("allow", "allow", "deny")[i % 3],
            "policy_version": "9f2c41d0e6b7a3c5",
        }
        details = encode_details({"job": f"ftjob-{i}", "rows": i % 100000})
        body = event_body(seq=i + 1, ts=ts, details_json=details, **fields)
        digest = chain_hash(prev, body)
        rows.append((i + 1, ts, *fields.values(), body, prev, digest))
        prev = digest
    tree = levels([leaf_hash(row[8]) for row in rows])
    checkpoints = [
        signer.sign(size, frontier_root(prefix_frontier(tree, size)), rows[size - 1][1])
        for size in range(CHECKPOINT_EVERY, count + 1, CHECKPOINT_EVERY)
    ]
    return rows, (count, prev, pack_frontier(prefix_frontier(tree, count))), checkpoints


def gateway_over(databases: Databases, count: int, workdir: Path):
    key = Ed25519PrivateKey.generate()
    key_path = workdir / f"signing-{count}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    engine = databases.engine("sqlite")
    started = time.perf_counter()
    load(engine, *build_rows(count, Signer(key)))
    seed_policy(engine)
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()
    print(f"console  {count:>9,} events built and loaded in {time.perf_counter() - started:.0f}s")
    settings = Settings(
        env="dev",
        database_url=url,
        artifact_dir=workdir / f"artifacts-{count}",
        audit_signing_key=key_path,
        audit_checkpoint_every=CHECKPOINT_EVERY,
        ingest_workers=0,
        local_workers=0,
    )
    client = TestClient(create_app(settings))
    client.__enter__()
    token = mint_dev_token(settings, sub="carol", roles=["compliance-officer"], ttl=3600)
    assert client.post("/console/login", data={"token": token}).status_code == 200
    return client


def _timed_get(client: TestClient, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.text.count('class="decision-') == PAGE
    return elapsed


def paired_times(
    big: TestClient, big_after: int, small: TestClient, small_after: int, requests: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """p50 and p99 of both pages, their requests taking turns (so a busy moment of the
    machine weighs on both alike)."""
    paths = [f"/console/audit?after={after}" for after in (big_after, small_after)]
    for _ in range(5):  # warm-up
        _timed_get(big, paths[0]), _timed_get(small, paths[1])
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(requests):
        times[0].append(_timed_get(big, paths[0]))
        times[1].append(_timed_get(small, paths[1]))
    return _p50_p99(times[0]), _p50_p99(times[1])


def _p50_p99(times: list[float]) -> tuple[float, float]:
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def first_progress(client: TestClient) -> tuple[float, float, bool]:
    started = time.perf_counter()
    first = counted = None
    ok = False
    with client.stream("GET", "/console/audit/verify/stream") as response:
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "progress":
                now = time.perf_counter() - started
                first = now if first is None else first
                if counted is None and json.loads(line[5:])["checked"] > 0:
                    counted = now
            elif line.startswith("data:") and event == "result":
                ok = json.loads(line[5:])["ok"]
                break
    return first or float("nan"), counted or float("nan"), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"load average at start: {os.getloadavg()} on {os.cpu_count()} cpus")
    databases = Databases(None)
    with tempfile.TemporaryDirectory(prefix="tunegate-console-bench-") as tmp:
        small = gateway_over(databases, 10_000, Path(tmp))
        big = gateway_over(databases, args.events, Path(tmp))
        deep_after = (DEEP_PAGE - 1) * PAGE
        last_small = 10_000 // PAGE
        cases = [
            ("first page", *paired_times(big, 0, small, 0, args.requests)),
            (
                f"page {DEEP_PAGE:,} (after={deep_after:,}) vs page {last_small} at 10k",
                *paired_times(big, deep_after, small, (last_small - 1) * PAGE, args.requests),
            ),
        ]
        for label, (p50, p99), (b50, b99) in cases:
            ratio = p50 / b50
            print(
                f"console  audit page, {label}: {args.events:,} events p50 {p50 * 1000:.1f} ms"
                f" p99 {p99 * 1000:.1f} ms | 10,000 events p50 {b50 * 1000:.1f} ms p99"
                f" {b99 * 1000:.1f} ms | ratio {ratio:.2f} (goal <= 1.5:"
                f" {'met' if ratio <= 1.5 else 'not met'})"
            )
        first, counted, ok = first_progress(big)
        print(
            f"console  verify chain with progress, {args.events:,} events: first update after"
            f" {first:.2f} s, first count of checked events after {counted:.2f} s"
            f" (goal <= 1 s: {'met' if first <= 1.0 else 'not met'}); chain ok: {ok}"
        )
        for client in (small, big):
            client.__exit__(None, None, None)
    databases.close()


if __name__ == "__main__":
    main()
