"""`tunegate jobs follow`: a live view of a job over its server-sent event stream.

The stream (GET /v1/fine_tuning/jobs/{id}/events/stream) sends every event of the job,
oldest first, and ends once the job has ended. A dropped connection is resumed with
``Last-Event-ID``: only complete events are ever shown (gateway.client.sse), so none is
lost or repeated. Ctrl-C stops following; it never cancels the job.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from gateway.cli import output
from gateway.client import ApiError, Client, GatewayUnreachable
from gateway.client.sse import ServerSentEvent

FINAL_STATUSES = ("succeeded", "failed", "cancelled")
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
MAX_RECONNECTS = 12  # in a row, without an event in between


@dataclass
class JobView:
    """What the live line shows, from the job and its events."""

    job_id: str
    status: str = "-"
    step: int = 0
    total: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    tokens_per_second: float | None = None
    verdict: str | None = None
    _first: tuple[int, int] | None = field(default=None, repr=False)  # (step, created_at)
    _last_at: int | None = field(default=None, repr=False)

    def take(self, event: dict[str, Any]) -> bool:
        """Update from one event; True when it is a message worth printing as a line."""
        data = event.get("data") or {}
        kind = event.get("type")
        if kind == "metrics" and "train_loss" in data:
            self.status = "running"
            self.step = int(data.get("step") or self.step)
            self.total = int(data.get("total_steps") or 0) or self.total
            self.train_loss = data.get("train_loss")
            self.tokens_per_second = data.get("tokens_per_second")
            at = int(event.get("created_at") or 0)
            if self._first is None:
                self._first = (self.step, at)
            self._last_at = at
            return False
        if kind == "metrics" and "valid_loss" in data:
            self.valid_loss = data.get("valid_loss")
            return False
        if kind == "metrics" and "verdict" in data:
            self.verdict = "passed" if (data.get("verdict") or {}).get("passed") else "failed"
        if "total_steps" in data:
            self.total = int(data["total_steps"]) or self.total
            self.status = "running"
        return True

    def eta_seconds(self) -> float | None:
        """Steps left at the rate the events show (their own timestamps, so a replayed
        stream gives the same figure as a live one)."""
        if self._first is None or self._last_at is None or not self.total:
            return None
        steps = self.step - self._first[0]
        seconds = self._last_at - self._first[1]
        if steps <= 0 or seconds <= 0:
            return None
        return (self.total - self.step) * seconds / steps

    def fields(self) -> dict[str, Any]:
        eta = self.eta_seconds()
        return {
            "status": self.status,
            "loss": _number(self.train_loss),
            "val": _number(self.valid_loss),
            "tps": "-" if self.tokens_per_second is None else f"{self.tokens_per_second:,.0f}",
            "eta": "-" if eta is None else _duration(eta),
        }


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"


def live_view(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(finished_text=" "),
        TextColumn("[bold]{task.fields[status]:<10}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps  loss {task.fields[loss]}  val {task.fields[val]}"),
        TextColumn("{task.fields[tps]} tok/s  ETA {task.fields[eta]}"),
        console=console,
        transient=False,
        refresh_per_second=4,
    )


class Follower:
    """Reads a job's event stream to its end, across dropped connections."""

    def __init__(self, api: Client, job_id: str, *, on_event, on_resume=None) -> None:
        self.api = api
        self.job_id = job_id
        self.on_event = on_event
        self.on_resume = on_resume or (lambda last_id, reason: None)
        self.last_id: str | None = None
        self.seen = 0

    def run(self, *, sleep=time.sleep) -> None:
        failures = 0
        path = f"/v1/fine_tuning/jobs/{self.job_id}/events/stream"
        while True:
            before = self.seen
            try:
                with self.api.events(path, last_event_id=self.last_id) as events:
                    for event in events:
                        self._take(event)
                return  # the stream ended: the job has ended
            except GatewayUnreachable as exc:
                failures = 1 if self.seen > before else failures + 1
                if failures > MAX_RECONNECTS:
                    raise
                self.on_resume(self.last_id, exc.reason)
                sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS)) - 1])

    def _take(self, event: ServerSentEvent) -> None:
        payload = event.json()
        self.on_event(payload)
        self.last_id = event.id or payload.get("id") or self.last_id
        self.seen += 1


def follow(api: Client, job_id: str, *, json_output: bool) -> dict[str, Any]:
    """Follow the job to its end; returns the job as it ended."""
    job = api.get(f"/v1/fine_tuning/jobs/{job_id}")
    output.stderr.print(
        f"following {escape(job_id)}: Ctrl-C stops following; it does not cancel the job"
    )
    if json_output:
        Follower(api, job_id, on_event=_json_line, on_resume=_resume_notice).run()
        return api.get(f"/v1/fine_tuning/jobs/{job_id}")
    view = JobView(job_id, status=job.get("status", "-"))
    with live_view(output.stdout) as bar:
        task = bar.add_task(job_id, total=None, **view.fields())

        def shown(event: dict[str, Any]) -> None:
            if view.take(event):
                style = "red" if event.get("level") == "error" else "dim"
                bar.console.print(f"[{style}]{escape(str(event.get('message', '')))}[/]")
            bar.update(task, completed=view.step, total=view.total, **view.fields())

        def resumed(last_id: str | None, reason: str) -> None:
            bar.console.print(
                f"[yellow]connection lost ({escape(reason)}); resuming after "
                f"{escape(last_id or 'the start')}[/]"
            )

        Follower(api, job_id, on_event=shown, on_resume=resumed).run()
        final = api.get(f"/v1/fine_tuning/jobs/{job_id}")
        view.status = final.get("status", view.status)
        bar.update(task, completed=view.step, total=view.total or view.step, **view.fields())
        bar.stop_task(task)
    show_verdict(api, final, view)
    return final


def _json_line(event: dict[str, Any]) -> None:
    """One event per line, exactly as the API sent it (JSON Lines, for scripts)."""
    sys.stdout.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _resume_notice(last_id: str | None, reason: str) -> None:
    output.stderr.print(
        f"connection lost ({escape(reason)}); resuming after {escape(last_id or 'the start')}"
    )


def show_verdict(api: Client, job: dict[str, Any], view: JobView) -> None:
    status = job.get("status")
    model = job.get("fine_tuned_model")
    verdict = view.verdict
    if model:
        with contextlib.suppress(ApiError):  # else the job's own events said enough
            verdict = api.get(f"/v1/models/{model}").get("verdict") or verdict
    style = "green" if status == "succeeded" else "red"
    line = f"[bold {style}]{escape(str(status))}[/]"
    if model:
        line += f"  model [bold]{escape(model)}[/]"
    if verdict:
        line += f"  verdict [bold]{escape(verdict)}[/]"
    output.stdout.print(line)
    error = job.get("error")
    if error:
        output.print_error(code=str(error.get("code")), message=str(error.get("message")))
