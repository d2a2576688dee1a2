"""What a change to the upload checks costs: ingest of the same file by this working tree
beside an earlier revision of the code, in one run.

Issue 17 added conflict groups, structure inference and normalised word-shingle MinHash to
every upload, with the goal that together they cost no more than 10% of ingest
throughput. The earlier revision (``--base``, by default the commit before them) is
checked out into a temporary git worktree; both trees ingest the same generated file
(bench/uploads.py's generator: chat JSONL with numbers, code, non-ASCII text, PII and
duplicates) in fresh interpreters, alternately, one core each (no scan pool), best of N.
Figures:

- wall-clock MB/s of each tree and their ratio (this tree's throughput / the base's), and
  the same for the CPU time the ingest used (user + system, all its threads): on a loaded
  machine wall time mostly measures waiting for a core, CPU time much less so;
- with ``--instructions``, the CPU instructions each ingest executes (less those of a run
  that only starts and imports), counted by ``valgrind --tool=callgrind`` on a smaller
  file (two 4 MiB scan chunks by default): independent of what else the machine runs, so
  the ratio holds on a loaded machine too. Both trees are counted at once (a count does
  not depend on load), with one hash seed (``PYTHONHASHSEED=0``: a random one moved the
  count by up to 1.5%), after an import of each tree outside valgrind (where bytecode is
  written, the first run alone would pay for compiling the tree).

Usage: python bench/ingest.py [--size-mb 50] [--repeat 5] [--base REV] [--instructions]
                              [--instructions-mb 6]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "07386ff"  # the last commit before issue 17's upload checks
CLOCKS = {"seconds": "wall clock", "cpu": "CPU time"}

CHILD = """
import json, resource, sys, tempfile, time, logging
from pathlib import Path
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from ingest import IngestLimits, ingest
path = Path(sys.argv[1])
if len(sys.argv) > 2:  # --imports-only: what start-up and imports cost, to subtract
    print(json.dumps({"seconds": 0.0, "status": "imports-only"}))
    raise SystemExit(0)
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
with tempfile.TemporaryDirectory(prefix="tunegate-ingest-") as store:
    started, cpu_started = time.perf_counter(), cpu()
    with open(path, "rb") as source:
        result = ingest(source, dest_dir=Path(store), pii_action="allow",
                        limits=IngestLimits(max_bytes=4 << 30), pool=None)
    seconds, cpu_seconds = time.perf_counter() - started, cpu() - cpu_started
print(json.dumps({"seconds": seconds, "cpu": cpu_seconds, "status": str(result.status)}))
"""


def child_command(
    tree: Path, path: Path, prefix: list[str] | None = None, imports_only: bool = False
) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    command = [*(prefix or []), sys.executable, "-c", CHILD, str(path)]
    command += ["--imports-only"] if imports_only else []
    return command, env


def run_child(tree: Path, path: Path) -> dict:
    command, env = child_command(tree, path)
    output = subprocess.run(  # noqa: S603 - our own interpreter
        command, check=True, capture_output=True, text=True, env=env, cwd=tree
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def instructions(trees: dict[str, Path], path: Path, work: Path) -> dict[str, int]:
    """Instructions of each tree's ingest alone: the run's total less a run that only
    imports. All runs at once: a count does not depend on what else runs."""
    for tree in trees.values():  # compile (and, where allowed, cache) the tree first
        command, env = child_command(tree, path, imports_only=True)
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=tree)  # noqa: S603
    runs = {}
    for name, tree in trees.items():
        for imports_only in (False, True):
            out = work / f"callgrind.{name}.{int(imports_only)}"
            prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            command, env = child_command(tree, path, prefix, imports_only=imports_only)
            env["PYTHONHASHSEED"] = "0"  # dict and set layouts, so the count, repeat
            runs[out] = subprocess.Popen(  # noqa: S603 - our own interpreter
                command, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
    for out, run in runs.items():
        _, err = run.communicate()
        if run.returncode:
            raise SystemExit(f"{out.name} failed: {err.decode(errors='replace')[-2000:]}")
    return {name: _total(work, name, False) - _total(work, name, True) for name in trees}


def _total(work: Path, name: str, imports_only: bool) -> int:
    out = work / f"callgrind.{name}.{int(imports_only)}"
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.M)
    if not match:
        raise SystemExit(f"no instruction total in {out}")
    return int(match.group(1))


def _uploads_generator():
    """bench/uploads.py's generate. This script's own name shadows the ``ingest`` package
    on sys.path, so its folder is taken off before that module (which imports it) loads."""
    import importlib.util

    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("bench_uploads", ROOT / "bench" / "uploads.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs per tree")
    parser.add_argument("--base", default=DEFAULT_BASE, help="the earlier revision")
    parser.add_argument("--instructions", action="store_true", help="also count with callgrind")
    parser.add_argument("--instructions-mb", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    generate = _uploads_generator()

    with tempfile.TemporaryDirectory(prefix="tunegate-bench-ingest-") as scratch:
        work = Path(scratch)
        base = work / "base"
        subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],  # noqa: S607
            check=True,
            capture_output=True,
        )
        try:
            data = work / "chat.jsonl"
            lines = generate(data, args.size_mb << 20, args.seed)
            size_mb = data.stat().st_size / 1e6
            print(f"file: {size_mb:.1f} MB, {lines} lines; base {args.base}, this tree {ROOT}")
            best = {(name, kind): float("inf") for name in ("base", "this") for kind in CLOCKS}
            for _ in range(args.repeat):  # alternate, so drifting load hits both alike
                for name, tree in (("base", base), ("this", ROOT)):
                    out = run_child(tree, data)
                    for kind in CLOCKS:
                        best[name, kind] = min(best[name, kind], out[kind])
            for kind, label in CLOCKS.items():
                rates = {name: size_mb / best[name, kind] for name in ("base", "this")}
                ratio = rates["this"] / rates["base"]
                print(
                    f"ingest one core, {label}: this tree {rates['this']:.1f} MB/s,"
                    f" base {rates['base']:.1f} MB/s: ratio {ratio:.3f}"
                    f" (cost {100 * (1 - ratio):+.1f}%; goal <= 10%)"
                )
            if args.instructions:
                small = work / "small.jsonl"
                generate(small, args.instructions_mb << 20, args.seed)
                counts = instructions({"base": base, "this": ROOT}, small, work)
                extra = counts["this"] / counts["base"] - 1
                print(
                    f"instructions of the ingest ({args.instructions_mb} MB, callgrind, start-up"
                    f" and imports subtracted): this tree {counts['this']:,},"
                    f" base {counts['base']:,}: {100 * extra:+.1f}%"
                )
        finally:
            subprocess.run(  # noqa: S603
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],  # noqa: S607
                check=False,
                capture_output=True,
            )
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
