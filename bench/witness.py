"""Witness add-checkpoint throughput, beside its baseline, in one run.

Each of --logs logs holds 10M events and grows by 1..2000 events per checkpoint (the
gateway signs one every 1000 by default); each checkpoint is offered to the witness with
its RFC 6962 consistency proof from the previous one (the proof lengths are printed).

The figure that answers the goal (1,000 checkpoints/s) is the realistic setting: a witness
serving many logs at once, each log's pusher offering its next checkpoint as soon as the
last one is answered (--clients threads, each driving its share of the logs in order),
with the witness's default durability: SQLite in WAL mode with synchronous=FULL, so every
commit is fsynced before any request it decided is answered. The store group-commits:
every request waiting is checked and saved in one transaction with one fsync.

Measured in --repeat rounds (each round runs the baseline beside the witness, since the
load of a shared machine moves; each round's figures are printed with the load average at
its end, then the medians):

1. baseline, same inputs: one raw Ed25519 verify of the log's signature plus the proof's
   hashing (audit.merkle.verify_consistency), nothing else, on one thread: the
   cryptographic floor. Also on --clients threads (Ed25519 verify releases the GIL, so
   it spreads over the cores) and with the cosignature's Ed25519 sign added;
2. in process, the realistic setting: Witness.add_checkpoint (parse, note signature,
   group-committed check-and-save, cosignature) from --clients threads over --logs logs,
   fsync per commit; then the same with synchronous=NORMAL (no fsync per commit), and
   one client alone (each request waits for its own fsync: the disk's fsync rate);
3. over HTTP (unless --no-http): `tunegate witness serve`'s app under uvicorn in its own
   process, durable, --clients keep-alive connections (a minimal asyncio HTTP/1.1 client
   in this process, so client and server share the machine's cores).

The tree: no 10M leaves are built. A perfect subtree that no checkpoint size cuts is
never opened by any root or proof, so its hash can be any fixed value (a keyed sha256 of
its range); every subtree a checkpoint boundary cuts is hashed for real from those values
and the leaves near the boundaries. What the witness sees (roots, proofs) is exactly what
a real tree of 10M events with those subtree hashes would give.

Usage: python bench/witness.py [--checkpoints N] [--logs L] [--clients C] [--repeat R]
                               [--no-http] [--start-size S] [--max-step K]
                               [--http-checkpoints M]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.hashing import leaf_hash, node_hash
from audit.merkle import consistency_proof, largest_power_of_two_below, verify_consistency
from audit.note import TlogCheckpoint, ed25519_vkey, parse_note, sign_note
from audit.witness import Witness, format_add_checkpoint
from gateway.witness.app import create_key, log_keys
from gateway.witness.store import SqlStore

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1000


class SyntheticTree:
    """RFC 6962 subtree hashes of a large tree cut only at ``sizes`` (see module doc)."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sorted(sizes)
        self.memo: dict[tuple[int, int], bytes] = {}

    def _cut(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.sizes, start)
        return i < len(self.sizes) and self.sizes[i] < end

    def subtree(self, start: int, end: int) -> bytes:
        key = (start, end)
        found = self.memo.get(key)
        if found is not None:
            return found
        n = end - start
        if n == 1:
            value = leaf_hash(b"event %d" % start)
        elif n & (n - 1) == 0 and not self._cut(start, end):
            value = sha256(b"synthetic subtree %d %d" % (start, end)).digest()
        else:
            k = largest_power_of_two_below(n)
            value = node_hash(self.subtree(start, start + k), self.subtree(start + k, end))
        self.memo[key] = value
        return value

    def root(self, size: int) -> bytes:
        return self.subtree(0, size)


class Log:
    """One log's checkpoints: the request bodies in order, and the baseline's inputs."""

    def __init__(self, origin: str, count: int, start: int, max_step: int, seed: int) -> None:
        self.origin = origin
        self.key = Ed25519PrivateKey.generate()
        rng = random.Random(seed)
        self.sizes = [start]
        for _ in range(count):
            self.sizes.append(self.sizes[-1] + rng.randint(1, max_step))
        self.tree = SyntheticTree(self.sizes)
        self.notes, self.proofs, self.bodies = [], [], []
        for i, size in enumerate(self.sizes):
            text = TlogCheckpoint(origin, size, self.tree.root(size)).text()
            note = sign_note(text, name=origin, private_key=self.key)
            proof = consistency_proof(self.sizes[i - 1], size, self.tree.subtree) if i else []
            self.notes.append(note)
            self.proofs.append(proof)
            self.bodies.append(format_add_checkpoint(self.sizes[i - 1] if i else 0, proof, note))

    @property
    def vkey(self) -> str:
        return ed25519_vkey(self.origin, self.key.public_key())

    def baseline_inputs(self) -> list[tuple]:
        inputs = []
        for i in range(1, len(self.sizes)):
            text, signatures = parse_note(self.notes[i])
            first, second = self.sizes[i - 1], self.sizes[i]
            inputs.append(
                (
                    self.key.public_key(),
                    text.encode(),
                    signatures[0].signature,
                    (first, second, self.tree.root(first), self.tree.root(second)),
                    self.proofs[i],
                )
            )
        return inputs


def load() -> str:
    return f"(load {os.getloadavg()[0]:.1f})"


def row(label: str, rate: float) -> None:
    print(f"{label:<58}{rate:7,.0f} /s")


def checkpoints(logs: list[Log]) -> int:
    return sum(len(log.bodies) - 1 for log in logs)


def in_threads(work: Callable[[list[Log]], None], logs: list[Log], clients: int) -> float:
    """Seconds for ``clients`` threads, thread i driving logs i, i+clients, ... in turn."""
    shares = [logs[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=work, args=(share,)) for share in shares if share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


# --- 1. the baseline ---------------------------------------------------------------------------


def bench_baseline(logs: list[Log], clients: int, sign: bool = False) -> float:
    cosigner = Ed25519PrivateKey.generate()
    inputs = {id(log): log.baseline_inputs() for log in logs}

    def work(share: list[Log]) -> None:
        for log in share:
            for public, message, signature, (m, n, m_root, n_root), proof in inputs[id(log)]:
                public.verify(signature, message)
                verify_consistency(m, n, m_root, n_root, proof)
                if sign:
                    cosigner.sign(b"cosignature/v1\ntime 1\n" + message)

    return checkpoints(logs) / in_threads(work, logs, clients)


# --- 2. in process ------------------------------------------------------------------------------


def witness_for(logs: list[Log], name: str) -> Witness:
    return Witness(
        name=name,
        private_key=Ed25519PrivateKey.generate(),
        log_keys=log_keys([log.vkey for log in logs]),
    )


def bench_in_process(
    workdir: Path, logs: list[Log], *, clients: int, durable: bool
) -> tuple[float, float]:
    """(checkpoints/s, mean requests per commit)."""
    witness = witness_for(logs, "bench.witness/w1")
    store = SqlStore.open(f"sqlite:///{workdir / 'witness.db'}", durable=durable)
    try:
        for log in logs:  # first sight, untimed
            witness.add_checkpoint(log.bodies[0], store, now=int(time.time()))
        batches, decided = store.batches, store.decided

        def work(share: list[Log]) -> None:
            for i in range(1, len(share[0].bodies)):  # each log in order, the logs in turn
                for log in share:
                    witness.add_checkpoint(log.bodies[i], store, now=int(time.time()))

        rate = checkpoints(logs) / in_threads(work, logs, clients)
        per_commit = (store.decided - decided) / max(1, store.batches - batches)
        return rate, per_commit
    finally:
        store.close()


# --- 3. over HTTP ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _post(reader, writer, body: bytes) -> tuple[int, bytes]:
    writer.write(
        b"POST /add-checkpoint HTTP/1.1\r\nHost: witness\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _drive(port: int, logs: list[Log], clients: int, steps: int) -> float:
    """Each log's first ``steps`` checkpoints (the first, untimed, is its first sight)."""

    async def connection(share: list[Log], first: bool) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            steps_here = [0] if first else range(1, steps)
            for i in steps_here:
                for log in share:
                    status, answer = await _post(reader, writer, log.bodies[i])
                    if status != 200:
                        raise RuntimeError(f"witness answered {status}: {answer!r}")
        finally:
            writer.close()

    shares = [logs[i::clients] for i in range(clients) if logs[i::clients]]
    await asyncio.gather(*(connection(share, True) for share in shares))  # first sight
    started = time.perf_counter()
    await asyncio.gather(*(connection(share, False) for share in shares))
    return len(logs) * (steps - 1) / (time.perf_counter() - started)


def bench_http(workdir: Path, logs: list[Log], clients: int, steps: int) -> float:
    key = workdir / "http-witness.pem"
    create_key(key)
    port = _free_port()
    env = dict(
        os.environ,
        TUNEGATE_WITNESS_NAME="bench.witness/http",
        TUNEGATE_WITNESS_KEY=str(key),
        TUNEGATE_WITNESS_DB=str(workdir / "http-witness.db"),
        TUNEGATE_WITNESS_LOGS=" ".join(log.vkey for log in logs),
        TUNEGATE_WITNESS_FSYNC="1",
    )
    command = [sys.executable, "-m", "uvicorn", "--factory"]
    command += ["gateway.witness.app:create_witness_app", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(command, env=env, cwd=ROOT)  # noqa: S603 (our interpreter)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("witness did not start") from None
                time.sleep(0.1)
        return asyncio.run(_drive(port, logs, clients, steps))
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- the run -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=4000, help="in all, over the logs")
    parser.add_argument("--logs", type=int, default=32, help="logs the witness serves")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--start-size", type=int, default=10_000_000)
    parser.add_argument("--max-step", type=int, default=2000, help="events per checkpoint: 1..N")
    parser.add_argument("--http-checkpoints", type=int, default=2000, help="in all, over HTTP")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are printed")
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    args.clients = max(1, min(args.clients, args.logs))
    return args


def one_round(args: argparse.Namespace, logs: list[Log], workdir: Path) -> dict[str, float]:
    """Every figure once, the baseline beside the witness (a shared machine's load moves)."""
    c, per_log = args.clients, len(logs[0].bodies) - 1
    figures = {
        "base": bench_baseline(logs, 1),
        "base_c": bench_baseline(logs, c),
        "base_sign": bench_baseline(logs, 1, True),
    }
    figures["durable"], figures["per_commit"] = bench_in_process(
        workdir / "durable", logs, clients=c, durable=True
    )
    figures["nosync"], figures["nosync_per_commit"] = bench_in_process(
        workdir / "nosync", logs, clients=c, durable=False
    )
    figures["alone"], _ = bench_in_process(workdir / "alone", logs[:1], clients=1, durable=True)
    if not args.no_http:
        steps = max(2, min(per_log + 1, args.http_checkpoints // len(logs) + 1))
        figures["http"] = bench_http(workdir / "http", logs, c, steps)
    figures["ratio"] = figures["durable"] / figures["base"]
    if "http" in figures:
        figures["http_ratio"] = figures["http"] / figures["base"]
    figures["load"] = os.getloadavg()[0]
    return figures


def main() -> None:
    args = parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    print(f"{os.cpu_count()} cores {load()}")
    t0 = time.perf_counter()
    per_log = max(1, args.checkpoints // args.logs)
    logs = [
        Log(f"bench{i}.tunegate.test/audit/global", per_log, args.start_size, args.max_step, i)
        for i in range(args.logs)
    ]
    lengths = [len(p) for log in logs for p in log.proofs[1:]]
    print(
        f"prepared {args.logs} logs x {per_log} checkpoints from size {args.start_size:,} "
        f"in {time.perf_counter() - t0:.1f}s; proof hashes min/mean/max "
        f"{min(lengths)}/{sum(lengths) / len(lengths):.1f}/{max(lengths)}"
    )
    rounds = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("durable", "nosync", "alone", "http"):
                (Path(tmp) / name).mkdir()
            rounds.append(one_round(args, logs, Path(tmp)))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:,.2f}" for k, v in rounds[-1].items()))
    report(args, {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}, len(rounds))


def report(args: argparse.Namespace, m: dict[str, float], rounds: int) -> None:
    c, n, base = args.clients, args.logs, m["base"]
    print(f"medians of {rounds} rounds (load average of the rounds' ends {m['load']:.1f}):")
    row("baseline: Ed25519 verify + proof hashing, 1 thread", base)
    row(f"  same on {c} threads", m["base_c"])
    row("  with the cosignature's sign, 1 thread", m["base_sign"])
    row(f"witness: {n} logs, {c} clients, fsync per commit", m["durable"])
    print(
        f"  {m['per_commit']:.1f} requests per commit; ratio to the baseline "
        f"{m['ratio']:.2f} (median of the rounds' ratios; of {c} threads' "
        f"{m['durable'] / m['base_c']:.2f}, of verify+sign's {m['durable'] / m['base_sign']:.2f})"
    )
    row("  same, synchronous=NORMAL (no fsync per commit)", m["nosync"])
    print(
        f"  {m['nosync_per_commit']:.1f} requests per commit; ratio to the baseline "
        f"{m['nosync'] / base:.2f}"
    )
    row("  1 log, 1 client, fsync (each request waits its fsync)", m["alone"])
    verdict = "met" if m["durable"] >= GOAL else "NOT met"
    print(f"goal {GOAL:,}/s ({n} logs, {c} clients, durable, in process): {verdict}")
    if "http" in m:
        row(f"witness over HTTP: uvicorn, 1 process, {c} clients, fsync", m["http"])
        verdict = "met" if m["http"] >= GOAL else "NOT met"
        print(
            f"  ratio to the baseline {m['http'] / base:.2f}; goal {GOAL:,}/s over HTTP: {verdict}"
        )


if __name__ == "__main__":
    main()
