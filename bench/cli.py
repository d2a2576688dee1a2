"""Command line figures: `tunegate policy plan` on a large policy, beside loading its file.

Policy plan: a tenant with 100,000 rules behind a real `tunegate serve` (its own process,
SQLite): 2,000 users in 4 roles, roles holding broad grants (on classes and collections),
users the per-source grants (on 10,000 sources classified under 4 classes by 10,000 g2
links, the seed's deny of training on restricted sources included), 3% of them deny. The
policy file is the tenant's export with a 1,000-rule change: 450 grants removed, 450
added, 100 users joining a second role. Timed, each in a fresh Python process
so that no cache of the other helps it, around the operation alone (interpreter start and
imports are printed apart):

- load: ``policies.policyfile.load(FILE)`` (read, parse, validate);
- plan: ``tunegate policy plan FILE`` in-process (the same load, one export call, the diff,
  one plan call: the gateway's checks and the access flips), which must exit 4.

Goals: plan <= 2 s and <= 5x load. Prints both (median of --repeat runs), the ratio and
the load average (other work on the machine moves the figures); exits 1 when a goal is
missed.

    python bench/cli.py [--rules 100000] [--change 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TENANT = "bench"
ROLES = ("role:ml-engineer", "role:data-owner", "role:analyst", "role:admin")
ACTIONS = ("train", "read", "upload")
CLASSES = (("public", 0.4), ("internal", 0.3), ("confidential", 0.25), ("restricted", 0.05))
USERS = 2_000
SOURCES = 10_000
#: what roles hold: broad grants on classes and collections (users hold per-source ones)
ROLE_GRANTS = (
    ("role:analyst", "class:public", "read"),
    ("role:analyst", "class:internal", "read"),
    ("role:analyst", "ds:*", "list"),
    ("role:ml-engineer", "class:public", "train"),
    ("role:ml-engineer", "class:internal", "read"),
    ("role:data-owner", "ds:*", "upload"),
    ("role:data-owner", "class:confidential", "read"),
    ("role:admin", "ds:*", "read"),
)


def _class_of(rng: random.Random) -> str:
    x, acc = rng.random(), 0.0
    for name, weight in CLASSES:
        acc += weight
        if x < acc:
            return f"class:{name}"
    return f"class:{CLASSES[-1][0]}"


def build_rules(count: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """``count`` canonical lines for the tenant (memberships, role grants, then per-user
    grants on sources, 3% deny), and the sources' classification links."""
    lines = {f"g,user:u{i},{ROLES[i % len(ROLES)]},{TENANT}" for i in range(USERS)}
    lines |= {f"p,{sub},{TENANT},{obj},{act},allow" for sub, obj, act in ROLE_GRANTS}
    while len(lines) < count:
        eft = "deny" if rng.random() < 0.03 else "allow"
        source = rng.randrange(SOURCES)
        lines.add(
            f"p,user:u{rng.randrange(USERS)},{TENANT},ds:ds-{source:05d},{rng.choice(ACTIONS)},{eft}"
        )
    links = [f"g2,ds:ds-{i:05d},{_class_of(rng)}" for i in range(SOURCES)]
    return sorted(lines), links


def changed(lines: list[str], size: int, rng: random.Random) -> list[str]:
    """The rule set with ``size`` rules changed: 45% grants removed, 45% grants added, 10%
    new memberships (users into a second role)."""
    grants = [line for line in lines if line.startswith("p,user:")]
    removed = set(rng.sample(grants, size * 45 // 100))
    added: set[str] = set()
    while len(added) < size * 45 // 100:
        user, source = rng.randrange(USERS), rng.randrange(SOURCES)
        line = f"p,user:u{user},{TENANT},ds:ds-{source:05d},{rng.choice(ACTIONS)},allow"
        if line not in lines:
            added.add(line)
    for i in range(size // 10):
        added.add(f"g,user:u{4 * i + 1},{ROLES[(4 * i + 3) % len(ROLES)]},{TENANT}")
    return sorted((set(lines) - removed) | added)


def prepare(workdir: Path, rules: int, change: int) -> tuple[str, Path]:
    """A migrated database holding the seed and the tenant's rules as version 1, and the
    changed policy file. Returns the database URL and the file."""
    from sqlmodel import Session

    from gateway import migrations
    from gateway.db import make_engine
    from policies import policyfile, store
    from policies.vocabulary import Rule

    rng = random.Random(7)
    lines, links = build_rules(rules, rng)
    url = f"sqlite:///{workdir / 'bench.db'}"
    engine = make_engine(url)
    migrations.upgrade(engine)
    tenant_rules = [Rule(line.split(",")[0], line.split(",")[1:]) for line in lines + links]
    with Session(engine) as session:
        store.seed_if_empty(session, rules=store.read_seed() + tenant_rules)
        session.commit()
    engine.dispose()
    wanted = [Rule(line.split(",")[0], line.split(",")[1:]) for line in changed(lines, change, rng)]
    path = workdir / "bench.yaml"
    path.write_text(policyfile.render(TENANT, wanted, header=["bench policy"]), encoding="utf-8")
    return url, path


def serve(url: str, workdir: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "TUNEGATE_DATABASE_URL": url,
        "TUNEGATE_ENV": "dev",
        "TUNEGATE_ARTIFACT_DIR": str(workdir / "artifacts"),
        "TUNEGATE_INGEST_WORKERS": "0",
        "TUNEGATE_LOCAL_WORKERS": "0",
    }
    server = subprocess.Popen(  # noqa: S603 (our own program, fixed arguments)
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return server, base, env
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("tunegate serve exited")
        time.sleep(0.2)
    server.kill()
    raise SystemExit("tunegate serve did not become ready")


LOAD = """
import json, sys, time
t0 = time.perf_counter()
from policies import policyfile
t1 = time.perf_counter()
doc = policyfile.load(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "seconds": t2 - t1, "rules": len(doc.lines)}))
"""

PLAN = """
import contextlib, io, json, sys, time
t0 = time.perf_counter()
from gateway.cli import app
t1 = time.perf_counter()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        app(["policy", "plan", sys.argv[1], "--json"], prog_name="tunegate")
        code = 0
    except SystemExit as exc:
        code = exc.code
t2 = time.perf_counter()
plan = json.loads(out.getvalue())
print(json.dumps({"imports": t1 - t0, "seconds": t2 - t1, "exit": code,
                  "added": len(plan["added"]), "removed": len(plan["removed"]),
                  "flips": len(plan["access_changes"]), "checked": plan["checked"]}))
"""


def timed(script: str, path: Path, env: dict[str, str]) -> dict:
    result = subprocess.run(  # noqa: S603 (our own script, fixed arguments)
        [sys.executable, "-c", script, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"run failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _runs(workdir: Path, path: Path, url: str, repeat: int) -> tuple[list[dict], list[dict]]:
    """``repeat`` load and plan runs, taking turns, against one `tunegate serve`."""
    from gateway.config import Settings
    from gateway.security import mint_dev_token

    server, base, env = serve(url, workdir)
    try:
        settings = Settings(database_url=url, env="dev")
        token = mint_dev_token(settings, sub="ada", roles=["admin"], tenant=TENANT, ttl=3600)
        env = {
            **env,
            "TUNEGATE_URL": base,
            "TUNEGATE_TOKEN": token,
            "TUNEGATE_CONFIG_DIR": str(workdir / "config"),
        }
        loads, plans = [], []
        for _ in range(repeat):
            loads.append(timed(LOAD, path, env))
            plans.append(timed(PLAN, path, env))
            print(f"  run: load {loads[-1]['seconds']:.3f} s, plan {plans[-1]['seconds']:.3f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return loads, plans


def policy_plan(rules: int, change: int, repeat: int) -> bool:
    """The policy plan figure; True when it meets its goals."""
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-cli-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        url, path = prepare(workdir, rules, change)
        print(f"prepared {rules} rules and the file in {time.perf_counter() - started:.1f} s")
        loads, plans = _runs(workdir, path, url, repeat)
    load = statistics.median(run["seconds"] for run in loads)
    plan = statistics.median(run["seconds"] for run in plans)
    last = plans[-1]
    print(
        f"policy plan, {rules} rules, {change}-rule change: +{last['added']} "
        f"-{last['removed']}, {last['flips']} access changes of {last['checked']} requests "
        f"checked, exit {last['exit']}"
    )
    print(
        f"  load file alone: {load:.3f} s; plan: {plan:.3f} s; ratio {plan / load:.2f}x "
        f"(median of {repeat}; imports apart: load {loads[-1]['imports']:.2f} s, "
        f"cli {plans[-1]['imports']:.2f} s); goals: plan <= 2 s and <= 5x load"
    )
    ok = plan <= 2.0 and plan <= 5 * load and all(run["exit"] == 4 for run in plans)
    figures = {"plan_s": round(plan, 3), "load_s": round(load, 3), "ratio": round(plan / load, 2)}
    print(json.dumps({"policy_plan": figures, "ok": ok}))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--change", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    ok = policy_plan(args.rules, args.change, args.repeat)
    print(f"load average at end: {os.getloadavg()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
