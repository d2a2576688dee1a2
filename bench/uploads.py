"""Upload-side processing speed, beside sha256sum of the same file in the same run.

Generates a chat JSONL (default ~200 MB) of varied support/engineering conversations with
numbers, dates, versions, order ids, code blocks, some non-ASCII text, ~2% planted PII
and ~1% exact and ~1% near duplicates. Then times:

- ``ingest.pipeline`` (validate + hash + store + PII scan + fingerprint + report)
  with a warm ``ScanPool`` of W worker processes (the server creates its pool at start-up,
  so spawning is reported apart), and in-process on one core;
- ``sha256sum`` of the same file, page cache warm for both.

Goal: >= 50 MB/s and >= 0.2 of sha256sum's rate. Peak RSS is measured in fresh
subprocesses that only ingest (files generated beforehand) at 50 MB and at the full size:
memory must stay flat as the file grows.

Usage: python bench/uploads.py [--size-mb 200] [--workers 2] [--rss-sizes 50,200]
                              [--pii-action allow|redact|block] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

from ingest import IngestLimits, ScanPool, ingest
from ingest.pii import RECOGNISER_SET_VERSION, luhn_valid
from ingest.pii_eval import format_table, load_labelled, score

MB = 1_000_000
LABELLED = Path(__file__).resolve().parents[1] / "tests" / "data" / "pii" / "labelled.jsonl"
GENERATOR_VERSION = 1  # bump when generate() changes, so cached files are remade

# --- generation ----------------------------------------------------------------------------

_WORD_TEXT = """
the of and to in is you that it for on are as with they at be this have from or one had by
but not what all were we when your can said there use an each which she do how their if will
up other about out many then them these so some her would make like him into time has look
two more write go see number no way could people my than first water been call who its now
find long down day did get come made may part over new sound take only little work know
place year live me back give most very after thing our just name good sentence man think say
great where help through much before line right too mean old any same tell boy follow came
want show also around form three small set put end does another well large must big even
such because turn here why ask went men read need land different home us move try kind hand
picture again change off play spell air away animal house point page letter mother answer
found study still learn should world model training data policy gateway request approve
audit compliance dataset token batch learning rate epoch loss evaluation adapter deploy
server customer invoice account refund shipping order product service support network
database query function variable python error exception config file upload billing
subscription password reset login browser mobile app release version update feature bug
ticket priority team manager schedule meeting report quarter revenue forecast budget
contract vendor invoice payment delivery warehouse inventory stock supplier route latency
throughput cache memory disk cluster node container image registry pipeline build test
coverage review merge branch commit rollback incident outage alert metric dashboard
"""
WORDS = _WORD_TEXT.split()
_WEIGHTS = [1.0 / (rank + 1) ** 0.7 for rank in range(len(WORDS))]
SYSTEM_PROMPTS = [
    "You are a helpful support assistant for Acme Corp. Answer briefly and politely.",
    "You are an experienced site reliability engineer. Explain causes before fixes.",
    "You are a billing specialist. Never promise refunds you cannot confirm.",
    "You are a friendly travel agent who answers in short paragraphs.",
    "You are a senior Python developer reviewing code for correctness.",
]
NON_ASCII = ["café", "naïve", "Müller", "São Paulo", "Zürich", "東京", "résumé", "Ærøskøbing"]
FIRST = ["john", "maria", "wei", "fatima", "lukas", "ana", "omar", "yuki", "sara", "ivan"]
DOMAINS = ["example.com", "mail.example.org", "acme.io", "corp.example.net"]


def _number_phrase(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return f"{rng.randint(2, 40)} items"
    if kind == 1:
        return f"${rng.randint(5, 999)}.{rng.randint(0, 99):02d}"
    if kind == 2:
        return f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 3:
        return f"v{rng.randint(0, 4)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
    if kind == 4:
        return f"ORD-{rng.randint(2019, 2026)}-{rng.randint(100000, 999999)}"
    if kind == 5:
        return f"{rng.randint(1, 23):02d}:{rng.randint(0, 59):02d}"
    return f"{rng.randint(1, 99)}%"


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, _WEIGHTS, k=rng.randint(5, 18))
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), _number_phrase(rng))
    if rng.random() < 0.04:
        words.insert(rng.randrange(len(words)), rng.choice(NON_ASCII))
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(".....?!")


def _paragraph(rng: random.Random, low: int, high: int) -> str:
    text = " ".join(_sentence(rng) for _ in range(rng.randint(low, high)))
    if rng.random() < 0.08:
        name = rng.choice(WORDS)
        factor = rng.randint(2, 9)
        text += f"\n\n```python\ndef {name}_{rng.randint(1, 99)}(x):\n    return x * {factor}\n```"
    return text


def _card(rng: random.Random) -> str:
    while True:
        digits = "4" + "".join(str(rng.randrange(10)) for _ in range(15))
        if luhn_valid(digits):
            return " ".join(digits[i : i + 4] for i in range(0, 16, 4))


def _planted_pii(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"{rng.choice(FIRST)}.{rng.choice(FIRST)}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"
    if kind == 1:
        return f"+1 ({rng.randint(201, 989)}) {rng.randint(201, 989)}-{rng.randint(1000, 9999)}"
    if kind == 2:
        return _card(rng)
    if kind == 3:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"


def _example(rng: random.Random) -> dict:
    messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}]
    for _ in range(rng.randint(1, 3)):
        question = _paragraph(rng, 1, 3)
        if rng.random() < 0.02:
            question += f" You can reach me at {_planted_pii(rng)}."
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": _paragraph(rng, 2, 7)})
    return {"messages": messages}


def generate(path: Path, size_bytes: int, seed: int) -> int:
    """Write ~size_bytes of chat JSONL; returns the number of lines."""
    rng = random.Random(seed)
    recent: list[dict] = []
    written = lines = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < size_bytes:
            roll = rng.random()
            if roll < 0.01 and recent:
                example = rng.choice(recent)
            elif roll < 0.02 and recent:
                example = json.loads(json.dumps(rng.choice(recent)))
                last = example["messages"][-1]
                words = last["content"].split(" ")
                words[rng.randrange(len(words))] = rng.choice(WORDS)
                last["content"] = " ".join(words)
            else:
                example = _example(rng)
                recent = (recent + [example])[-256:]
            line = json.dumps(example, ensure_ascii=False) + "\n"
            handle.write(line)
            written += len(line.encode())
            lines += 1
    return lines


# --- measurement ---------------------------------------------------------------------------


def sha256sum_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)  # noqa: S603, S607
    return time.perf_counter() - started


def ingest_seconds(path: Path, store: Path, pii_action: str, pool: ScanPool | None):
    started = time.perf_counter()
    with open(path, "rb") as source:
        result = ingest(
            source,
            dest_dir=store,
            pii_action=pii_action,
            limits=IngestLimits(max_bytes=4 << 30),
            pool=pool,
        )
    return time.perf_counter() - started, result


def rss_child(path: Path, workers: int, pii_action: str) -> None:
    """Runs in a fresh interpreter: ingest only, then print peak RSS (self, workers)."""
    with tempfile.TemporaryDirectory(prefix="tunegate-rss-") as store:
        pool = ScanPool(workers) if workers else None
        try:
            if pool:
                pool.warm()
            ingest_seconds(path, Path(store), pii_action, pool)
        finally:
            if pool:
                pool.close()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"self_kib": own, "children_kib": children}))


def peak_rss(path: Path, workers: int, pii_action: str) -> dict:
    output = subprocess.run(  # noqa: S603 - our own interpreter and script
        [
            sys.executable,
            __file__,
            "--rss-child",
            str(path),
            "--workers",
            str(workers),
            "--pii-action",
            pii_action,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rss-sizes", default="50,200")
    parser.add_argument("--pii-action", default="allow", choices=["allow", "redact", "block"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs each")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.rss_child:
        rss_child(args.rss_child, args.workers, args.pii_action)
        return

    labelled = load_labelled(LABELLED)
    print(
        f"PII recognisers {RECOGNISER_SET_VERSION} on tests/data/pii/labelled.jsonl "
        f"({len(labelled)} texts, exact type+span match):"
    )
    for line in format_table(score(labelled)):
        print("  " + line)

    cache = Path(tempfile.gettempdir()) / "tunegate-bench-ingest"
    cache.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-ingest-") as tmp:
        work = Path(tmp)
        sizes = sorted({args.size_mb, *(int(s) for s in args.rss_sizes.split(",") if s)})
        files = {}
        for size in sizes:
            files[size] = cache / f"chat-{size}mb-seed{args.seed}-v{GENERATOR_VERSION}.jsonl"
            if files[size].exists():
                continue
            started = time.perf_counter()
            partial = files[size].with_suffix(".partial")
            lines = generate(partial, size * MB, args.seed)
            partial.rename(files[size])
            print(
                f"generated {files[size].stat().st_size / MB:.1f} MB, {lines} lines "
                f"in {time.perf_counter() - started:.1f}s (kept in {cache})",
                file=sys.stderr,
            )
        path = files[args.size_mb]
        size_mb = path.stat().st_size / MB
        sha256sum_seconds(path)  # warm the page cache for both contestants

        started = time.perf_counter()
        pool = ScanPool(args.workers)
        pool.warm()
        spawn_seconds = time.perf_counter() - started
        # Best of --repeat for every contestant, interleaved, so a burst of load from other
        # work on a shared machine does not decide the ratio.
        parallel = single = baseline = float("inf")
        try:
            for attempt in range(args.repeat):
                seconds, result = ingest_seconds(path, work / f"a{attempt}", args.pii_action, pool)
                parallel = min(parallel, seconds)
                single = min(
                    single, ingest_seconds(path, work / f"b{attempt}", args.pii_action, None)[0]
                )
                baseline = min(baseline, sha256sum_seconds(path))
                shutil.rmtree(work / f"a{attempt}")
                shutil.rmtree(work / f"b{attempt}")
        finally:
            pool.close()

        report = result.report
        load = os.getloadavg()[0]
        print(f"machine: {os.cpu_count()} cores, 1-minute load average {load:.1f} after the runs")
        print(
            f"file: {size_mb:.1f} MB, {report.lines} lines, {report.examples} examples, "
            f"status {report.status}, pii findings {report.pii.findings if report.pii else 0}, "
            f"exact dups {report.exact_duplicates.count}, "
            f"near dups {report.near_duplicates.count}"
        )
        ours = size_mb / parallel
        base = size_mb / baseline
        print(
            f"ingest ({args.workers} workers, pii={args.pii_action}): {ours:.1f} MB/s "
            f"| sha256sum: {base:.1f} MB/s | ratio {ours / base:.2f} "
            f"(goal >= 50 MB/s and >= 0.20)"
        )
        one = size_mb / single
        print(
            f"ingest (in-process, 1 core, pii={args.pii_action}): {one:.1f} MB/s "
            f"| sha256sum: {base:.1f} MB/s | ratio {one / base:.2f}"
        )
        print(f"scan pool start-up ({args.workers} workers, once per server): {spawn_seconds:.2f}s")
        for size in sizes:
            if str(size) not in args.rss_sizes.split(","):
                continue
            rss = peak_rss(files[size], args.workers, args.pii_action)
            print(
                f"peak RSS ingesting {files[size].stat().st_size / MB:.0f} MB: "
                f"main {rss['self_kib'] / 1024:.0f} MiB, "
                f"largest worker {rss['children_kib'] / 1024:.0f} MiB"
            )


if __name__ == "__main__":
    main()
