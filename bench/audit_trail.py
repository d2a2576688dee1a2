"""Audit trail speed, each figure beside its baseline.

1. Appends: W concurrent writer threads, each event its own committed transaction
   (Session -> audit.chain.append -> commit, checkpoint signed every 1000 events), beside
   plain INSERTs of the same rows into an identically-shaped table without chaining,
   committed the same way (Session -> one INSERT through the same DB-API cursor path ->
   commit). On SQLite, and on PostgreSQL when a URL is given (--postgres or
   TUNEGATE_TEST_POSTGRES_URL) or the local 127.0.0.1 one answers. Goal: ratio >= 0.8.

   Enqueue (what the gateway does): the same W writers, each event its own committed
   transaction (Session -> audit.chain.enqueue -> commit -> AuditSequencer.notify), while
   one AuditSequencer thread in the same process chains the queue, beside the same plain
   INSERTs, the two taking turns in slices. Printed: writer events/s of both and the
   ratio (goal >= 0.8), and end to end: the time from the writers' start until the last
   of their events is chained, as chained events/s (the backlog left when the writers
   stop is drained before the clock stops, so the figure is what the chain sustains,
   not just what the queue absorbs).

2. Verification of N events (default 1,000,000), column check included (goal >= 500,000
   events/s), beside raw hashlib: one sha256 per event over the bytes verification hashes
   (0x02 || prev_hash || body), in a plain Python loop on one core. Reported separately:
     - in memory: audit.verify.verify_rows over rows already fetched (no database);
     - end to end: audit.verify.verify_chain on the database, DB fetch included, from a
       fresh connection, 1 and 2 worker processes; with and without the Merkle rebuild
       that checks every signed checkpoint (one per 1000 events) and the head frontier.
   Rows are bulk-loaded (not appended one by one) to keep the run short.

Runs in about four minutes on 2 cores; sized for 24 GiB (1M rows in memory is ~1.2 GiB).
The load average is printed at the start and the end: the figures mean little on a
machine that other work keeps busy.
Usage: python bench/audit_trail.py [--events N] [--writers W] [--append-seconds S] [--drain-limit S]
                             [--postgres URL | --no-postgres] [--skip-append] [--skip-verify]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import MetaData, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from audit.chain import append, driver_cursor, enqueue, sql
from audit.checkpoints import Signer
from audit.event import encode_details, event_body
from audit.hashing import CHAIN_PREFIX, GENESIS_HASH, chain_hash, leaf_hash
from audit.merkle import frontier_root, levels, pack_frontier, prefix_frontier
from audit.models import AuditEvent
from audit.sequencer import AuditSequencer
from audit.verify import EVENT_COLUMNS, verify_chain, verify_rows
from gateway import migrations
from gateway.db import make_engine

LOCAL_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CHECKPOINT_EVERY = 1000
STRIDE = 10_000_000  # event numbers per writer: writers never share one
MEASURED = 1_000_000  # measured runs number their events from here, after the warm-up


def event_fields(i: int) -> dict:
    """A realistic event: ids, a policy version, small details (body ~230 bytes)."""
    return {
        "actor": f"user-{i % 997}",
        "tenant": f"tenant-{i % 7}",
        "action": ("policy.check", "fine_tuning.job.create", "files.upload")[i % 3],
        "resource": f"ds:{i % 5003}",
        "decision": ("allow", "allow", "deny")[i % 3],
        "policy_version": "9f2c41d0e6b7a3c5",
        "details": {"job": f"ftjob-{i}", "rows": i % 100000, "route": "/v1/fine_tuning/jobs"},
    }


# --- temporary databases ------------------------------------------------------------------


class Databases:
    def __init__(self, pg_url: str | None) -> None:
        self.pg_url = pg_url
        self.tmp = tempfile.TemporaryDirectory(prefix="tunegate-bench-")
        self.pg_names: list[str] = []
        self.engines = []

    def engine(self, backend: str, **kwargs):
        if backend == "sqlite":
            url = f"sqlite:///{self.tmp.name}/{uuid.uuid4().hex[:8]}.db"
        else:
            name = f"tunegate_bench_{uuid.uuid4().hex[:10]}"
            admin = make_engine(self.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            self.pg_names.append(name)
            url = make_url(self.pg_url).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url, **kwargs)
        migrations.upgrade(engine)
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()
        if self.pg_names:
            admin = make_engine(self.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                for name in self.pg_names:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        self.tmp.cleanup()


def reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 1).close()
    except OSError:
        return False
    try:
        engine = make_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


# --- 1. appends ---------------------------------------------------------------------------


def plain_table(engine):
    """audit_events' shape (columns, primary key, unique hash, the same five indexes)."""
    table = AuditEvent.__table__.to_metadata(MetaData(), name="bench_plain_events")
    for index in table.indexes:
        index.name = index.name.replace("audit_events", "bench_plain_events")
    table.create(engine)
    return table


def plain_inserter(engine, table):
    """``work(w, i)``: one plain INSERT of event w*STRIDE+i into ``table``, committed."""
    statement = sql(engine.dialect.name, "insert_event").replace("audit_events", table.name)
    ts = "2026-11-28T12:00:00.000000Z"

    def work(w: int, i: int) -> None:
        n = w * STRIDE + i
        fields = event_fields(n)
        body = event_body(
            seq=n + 1, ts=ts, details_json=encode_details(fields.pop("details")), **fields
        )
        digest = hashlib.sha256(body).digest()  # rows need a distinct hash; nothing chained
        with Session(engine) as session:
            _, cursor = driver_cursor(session)
            cursor.execute(
                statement,
                (
                    n + 1,
                    ts,
                    fields["actor"],
                    fields["tenant"],
                    fields["action"],
                    fields["resource"],
                    fields["decision"],
                    fields["policy_version"],
                    body,
                    GENESIS_HASH,
                    digest,
                ),
            )
            cursor.close()
            session.commit()

    return work


def run_writers(writers: int, seconds: float, work) -> tuple[int, float]:
    """``work(writer, i)`` from each writer until ``seconds`` pass; events and elapsed."""
    counts = [0] * writers
    stop = threading.Event()
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def loop(w: int) -> None:
        barrier.wait()
        i = 0
        try:
            while not stop.is_set():
                work(w, i)
                i += 1
                counts[w] = i
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts), elapsed


def bench_appends(
    databases: Databases, backend: str, writers: int, seconds: float, async_commit: bool = False
) -> None:
    """With ``async_commit`` (PostgreSQL), both sides commit with synchronous_commit=off:
    the comparison then leaves out the WAL flush that each chained append must wait for
    while it holds the head lock, and shows what the chain itself costs."""
    signer = Signer(Ed25519PrivateKey.generate())
    kwargs = {"pool_size": writers, "max_overflow": 0}
    if async_commit:
        kwargs["connect_args"] = {"options": "-c synchronous_commit=off"}
    engine = databases.engine(backend, **kwargs)
    plain_insert = plain_inserter(engine, plain_table(engine))

    def chained(w: int, i: int) -> None:
        with Session(engine) as session:
            append(
                session,
                **event_fields(w * STRIDE + i),
                signer=signer,
                checkpoint_every=CHECKPOINT_EVERY,
            )
            session.commit()

    # warm both paths (connections, statement caches), then measure each in turn
    run_writers(writers, 0.5, plain_insert)
    run_writers(writers, 0.5, chained)
    base_n, base_s = run_writers(writers, seconds, lambda w, i: plain_insert(w, MEASURED + i))
    chain_n, chain_s = run_writers(writers, seconds, lambda w, i: chained(w, MEASURED + i))
    base_rate, chain_rate = base_n / base_s, chain_n / chain_s
    result = verify_chain(engine, public_key_pem=signer.public_key_pem())
    assert result.ok, result
    label = backend + (" (synchronous_commit=off, both sides)" if async_commit else "")
    print(
        f"append  {label} {writers} writers, 1 event/txn: plain INSERT {base_rate:9,.0f} ev/s"
        f" | chained append {chain_rate:9,.0f} ev/s | ratio {chain_rate / base_rate:.2f}"
        f" (goal >= 0.8; chain of {result.length:,} verified ok)"
    )


def bench_enqueue(
    databases: Databases,
    backend: str,
    writers: int,
    seconds: float,
    drain_limit: float,
    slices: int = 4,
) -> None:
    """Plain INSERTs and enqueues take turns in ``slices`` slices of seconds/slices each,
    so a change in the machine's load falls on both sides alike. After each enqueue
    slice the clock runs on until the sequencer has chained all of it."""
    signer = Signer(Ed25519PrivateKey.generate())
    engine = databases.engine(backend, pool_size=writers + 1, max_overflow=0)
    plain_insert = plain_inserter(engine, plain_table(engine))
    sequencer = AuditSequencer(engine, signer=signer, checkpoint_every=CHECKPOINT_EVERY)
    enqueued = [0] * writers  # per writer, warm-up included

    def queued(w: int, i: int) -> None:
        with Session(engine) as session:
            enqueue(session, **event_fields(w * STRIDE + i))
            session.commit()
        enqueued[w] += 1
        sequencer.notify()

    def chained_all() -> float:
        """Seconds until the sequencer has chained every enqueued event."""
        started = time.perf_counter()
        while sequencer.chained < sum(enqueued):
            if sequencer.failures:
                raise RuntimeError("the sequencer failed; see its log above")
            if time.perf_counter() - started > drain_limit:
                raise TimeoutError(
                    f"{sum(enqueued) - sequencer.chained:,} events still queued"
                    f" {drain_limit:.0f}s after the writers stopped"
                )
            time.sleep(0.002)
        return time.perf_counter() - started

    slice_s = seconds / slices
    base_n = base_s = queue_n = queue_s = drain_s = 0.0
    backlogs = []
    sequencer.start()
    try:
        run_writers(writers, 0.5, plain_insert)
        run_writers(writers, 0.5, queued)
        chained_all()
        for k in range(slices):
            offset = MEASURED + k * STRIDE // (slices + 1)
            n, s = run_writers(writers, slice_s, lambda w, i, o=offset: plain_insert(w, o + i))
            base_n, base_s = base_n + n, base_s + s
            n, s = run_writers(writers, slice_s, lambda w, i, o=offset: queued(w, o + i))
            queue_n, queue_s = queue_n + n, queue_s + s
            backlogs.append(sum(enqueued) - sequencer.chained)
            drain_s += chained_all()
    finally:
        sequencer.stop()
    result = verify_chain(engine, public_key_pem=signer.public_key_pem())
    assert result.ok and result.pending == 0 and result.length == sum(enqueued), result
    base_rate, queue_rate = base_n / base_s, queue_n / queue_s
    e2e_s = queue_s + drain_s
    e2e_rate = queue_n / e2e_s
    print(
        f"enqueue {backend} {writers} writers, 1 event/txn, 1 sequencer thread: plain INSERT"
        f" {base_rate:9,.0f} ev/s | enqueue {queue_rate:9,.0f} ev/s | ratio"
        f" {queue_rate / base_rate:.2f} (goal >= 0.8)"
    )
    print(
        f"enqueue {backend} end to end: {queue_n:,.0f} events enqueued in {queue_s:.1f}s, all"
        f" chained {drain_s:.2f}s after the writers stopped (backlog at stop, per slice:"
        f" {', '.join(map(str, backlogs))}): {e2e_rate:9,.0f} chained ev/s | ratio to plain"
        f" INSERT {e2e_rate / base_rate:.2f} (chain of {result.length:,} verified ok, 0 pending)"
    )


# --- 2. verification ----------------------------------------------------------------------


def build_rows(count: int, signer: Signer):
    """``count`` chained rows (EVENT_COLUMNS order), the head and signed checkpoints."""
    rows, prev = [], GENESIS_HASH
    base = time.time()
    for i in range(count):
        fields = event_fields(i)
        second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i // 1000))
        ts = f"{second}.{i % 1000:06d}Z"
        details = encode_details(fields.pop("details"))
        body = event_body(seq=i + 1, ts=ts, details_json=details, **fields)
        digest = chain_hash(prev, body)
        rows.append(
            (
                i + 1,
                ts,
                fields["actor"],
                fields["tenant"],
                fields["action"],
                fields["resource"],
                fields["decision"],
                fields["policy_version"],
                body,
                prev,
                digest,
            )
        )
        prev = digest
    tree = levels([leaf_hash(row[8]) for row in rows])
    checkpoints = [
        signer.sign(size, frontier_root(prefix_frontier(tree, size)), rows[size - 1][1])
        for size in range(CHECKPOINT_EVERY, count + 1, CHECKPOINT_EVERY)
    ]
    frontier = pack_frontier(prefix_frontier(tree, count))
    return rows, (count, prev, frontier), checkpoints


def load(engine, rows, head, checkpoints) -> None:
    columns = ", ".join(EVENT_COLUMNS)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY audit_events ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            mark = "%s"
        else:
            cursor.execute("BEGIN")
            cursor.executemany(
                f"INSERT INTO audit_events ({columns}) VALUES ({', '.join('?' * 11)})", rows
            )
            mark = "?"
        cursor.executemany(
            f"INSERT INTO audit_checkpoints (tree_size, root_hash, ts, key_id, signature) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
            [(c.tree_size, c.root_hash, c.ts, c.key_id, c.signature) for c in checkpoints],
        )
        cursor.execute(
            f"UPDATE audit_chain_head SET seq = {mark}, hash = {mark}, frontier = {mark} "
            "WHERE id = 1",
            head,
        )
        raw.commit()
        if engine.dialect.name == "postgresql":
            raw.driver_connection.autocommit = True
            cursor.execute("VACUUM ANALYZE audit_events")
            raw.driver_connection.autocommit = False
    finally:
        raw.close()


def timed(fn):
    gc.collect()
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def raw_hashlib(rows) -> float:
    """The baseline: sha256 of each event's chain preimage, a plain loop, one core."""
    preimages = [CHAIN_PREFIX + row[9] + row[8] for row in rows]
    sha = hashlib.sha256
    started = time.perf_counter()
    for data in preimages:
        sha(data).digest()
    return time.perf_counter() - started


def bench_verify(databases: Databases, backends: list[str], count: int) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    (rows, head, checkpoints), build_s = timed(lambda: build_rows(count, signer))
    print(
        f"verify  built {count:,} chained rows in {build_s:.1f}s "
        f"(body {sum(len(r[8]) for r in rows[:1000]) // 1000} bytes on average)"
    )

    raw_rate = count / raw_hashlib(rows)
    print(
        f"verify  baseline: raw hashlib sha256 over the same bytes, 1 core: {raw_rate:11,.0f} ev/s"
    )

    def line(what: str, seconds: float, result) -> None:
        assert result.ok, result
        rate = count / seconds
        print(
            f"verify  {what:58s} {rate:11,.0f} ev/s  ratio to raw {rate / raw_rate:.2f}"
            f"  {'meets' if rate >= 500_000 else 'below'} 500k goal"
        )

    head_seq, head_hash, frontier = head
    for merkle in (False, True):
        kwargs = {"head_seq": head_seq, "head_hash": head_hash}
        if merkle:
            kwargs |= {"head_frontier": frontier, "checkpoints": checkpoints}
        result, seconds = timed(lambda kw=kwargs: verify_rows(rows, **kw))
        label = "+ merkle/checkpoints" if merkle else "chain + columns"
        line(f"in memory (no DB fetch), 1 process, {label}", seconds, result)

    for backend in backends:
        engine = databases.engine(backend)
        _, load_s = timed(lambda e=engine: load(e, rows, head, checkpoints))
        print(f"verify  {backend}: bulk-loaded in {load_s:.1f}s")
        engine.dispose()
        for workers in (1, 2):
            for merkle in (False, True):
                result, seconds = timed(
                    lambda w=workers, m=merkle, e=engine: verify_chain(
                        e,
                        workers=w,
                        check_checkpoints=m,
                        public_key_pem=signer.public_key_pem() if m else None,
                    )
                )
                label = "+ merkle/checkpoints/signatures" if merkle else "chain + columns"
                line(
                    f"{backend} end to end, {workers} worker{'s' if workers > 1 else ''}, {label}",
                    seconds,
                    result,
                )
                if merkle:
                    assert result.checkpoints_checked == len(checkpoints)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--append-seconds", type=float, default=10.0)
    parser.add_argument(
        "--drain-limit",
        type=float,
        default=60.0,
        help="seconds to wait for the sequencer to chain the backlog before giving up",
    )
    parser.add_argument("--postgres", default=os.environ.get("TUNEGATE_TEST_POSTGRES_URL"))
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--skip-append", action="store_true", help="skip append and enqueue")
    parser.add_argument("--skip-verify", action="store_true")
    args = parser.parse_args()
    # the sequencer's progress lines would break up the figures; its failures still show
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.perf_counter()
    print(f"load average at start (1, 5, 15 min): {load_average()} on {os.cpu_count()} cpus")

    pg_url = None
    if not args.no_postgres:
        candidate = args.postgres or LOCAL_PG
        pg_url = candidate if reachable(candidate) else None
        if pg_url is None:
            print(
                f"PostgreSQL at {make_url(candidate).render_as_string()} not reachable: SQLite only"
            )
    backends = ["sqlite"] + (["postgresql"] if pg_url else [])
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, backends: {', '.join(backends)}"
    )
    databases = Databases(pg_url)
    try:
        if not args.skip_append:
            for backend in backends:
                bench_appends(databases, backend, args.writers, args.append_seconds)
            if pg_url:
                bench_appends(databases, "postgresql", args.writers, args.append_seconds, True)
            for backend in backends:
                bench_enqueue(
                    databases, backend, args.writers, args.append_seconds, args.drain_limit
                )
        if not args.skip_verify:
            bench_verify(databases, backends, args.events)
    finally:
        databases.close()
    print(
        f"load average at end (1, 5, 15 min): {load_average()}; total run"
        f" {time.perf_counter() - started:.0f}s"
    )


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
