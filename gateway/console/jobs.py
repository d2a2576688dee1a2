"""What the job pages need beyond the job service: the submit form's choices and its fields
as the API's `JobCreate`, the loss chart, the buttons a person may use, and the console's
event stream (the API stream's loop, ending with an `end` event so the page stops)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy.orm import object_session
from sqlmodel import Session, col, select

from gateway.authz import Authorized, allows, decide
from gateway.base_models import service as base_models
from gateway.console import charts
from gateway.data_sources.models import DataSource
from gateway.files.models import TrainingFile
from gateway.jobs import mislabels, service
from gateway.jobs.models import FINAL_STATUSES, FineTuningJob, JobEvent
from gateway.jobs.schemas import JobCreate
from gateway.runtime import Runtime
from gateway.security import Principal

PAGE = 50
CHOICES = 200
EVENT_PAGES = 20  # the chart reads at most this many pages of 500 events
STREAM_POLL_SECONDS = 0.5
NUMBERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
# Where each error of the schema goes on the form.
FIELD_OF = {
    ("hyperparameters", "n_epochs"): "n_epochs",
    ("hyperparameters", "batch_size"): "batch_size",
    ("hyperparameters", "learning_rate_multiplier"): "learning_rate_multiplier",
    ("lora", "r"): "lora_r",
    ("lora", "alpha"): "lora_alpha",
}
PLAIN = ("model", "training_file", "validation_file", "purpose", "suffix", "seed")
REQUIRED = {
    "model": "Pick a base model.",
    "training_file": "Pick a training file.",
    "purpose": "Pick the purpose the model is trained for.",
}


def when(epoch: int | None) -> str:
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


# --- the submit form ---------------------------------------------------------------------


@dataclass
class Choices:
    models: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    purposes: list[tuple[str, str]] = field(default_factory=list)


def _authorized(state: Runtime, principal: Principal, obj: str, act: str) -> Authorized | None:
    outcome = decide(state.policy, principal, obj, act, route="/console/jobs/new", method="GET")
    return outcome if isinstance(outcome, Authorized) else None


def choices(session: Session, *, state: Runtime, principal: Principal) -> Choices:
    """Active base models the person may list (the base-model list's own service), and the
    tenant's processed files from approved sources they may read or train on, with the
    purposes those sources allow. Only a menu: the gates decide, in the dry run and the
    submission alike."""
    found = Choices()
    listing = _authorized(state, principal, "base:*", "list")
    if listing is not None:
        bases, _ = base_models.list_visible(
            session, state=state, authorized=listing, status="active", after=None, limit=CHOICES
        )
        found.models = [(row.name, row.name) for row in bases]
    if not allows(state.policy, principal, "ds:*", "list"):
        return found
    rows = session.exec(
        select(TrainingFile, DataSource)
        .join(DataSource, col(DataSource.id) == col(TrainingFile.data_source_id))
        .where(
            col(TrainingFile.tenant) == principal.tenant,
            col(TrainingFile.purpose) == "fine-tune",
            col(TrainingFile.status) == "processed",
            col(TrainingFile.content_deleted_at).is_(None),
            col(TrainingFile.deleted_at).is_(None),
            col(DataSource.status) == "approved",
        )
        .order_by(col(TrainingFile.created_at).desc(), col(TrainingFile.id))
        .limit(CHOICES * 4)
    ).all()
    purposes: dict[str, list[str]] = {}
    for file, source in rows:
        obj = f"ds:{source.id}"
        if not (
            allows(state.policy, principal, obj, "read")
            or allows(state.policy, principal, obj, "train")
        ):
            continue
        if len(found.files) < CHOICES:
            label = f"{file.filename} · {file.examples} examples · {source.name} ({file.id})"
            found.files.append((file.id, label))
        for purpose in source.allowed_purposes or []:
            purposes.setdefault(purpose, [])
            if source.name not in purposes[purpose]:
                purposes[purpose].append(source.name)
    found.purposes = [
        (purpose, f"{purpose} (allowed by {', '.join(names)})")
        for purpose, names in sorted(purposes.items())
    ]
    return found


def _number(raw: Any, cast: type) -> Any:
    text = str(raw or "").strip()
    if text in ("", "auto"):
        return "auto"
    try:
        return cast(text)
    except ValueError:
        return text


def _optional(raw: Any) -> Any:
    text = str(raw or "").strip()
    return text or None


def body_of(form: Mapping[str, Any]) -> dict[str, Any]:
    """The form's fields as the API's JSON body would carry them."""
    hyperparameters = {
        "n_epochs": _number(form.get("n_epochs"), int),
        "batch_size": _number(form.get("batch_size"), int),
        "learning_rate_multiplier": _number(form.get("learning_rate_multiplier"), float),
    }
    lora = {
        "r": str(form.get("lora_r") or "").strip() or 16,
        "alpha": str(form.get("lora_alpha") or "").strip() or 32,
    }
    seed = _optional(form.get("seed"))
    return {
        "model": str(form.get("model") or ""),
        "training_file": str(form.get("training_file") or ""),
        "validation_file": _optional(form.get("validation_file")),
        "purpose": _optional(form.get("purpose")),
        "suffix": _optional(form.get("suffix")),
        "seed": seed,
        "hyperparameters": hyperparameters,
        "lora": lora,
        "evaluation": {"enabled": form.get("evaluation") == "true"},
    }


def checked_job(form: Mapping[str, Any]) -> tuple[JobCreate | None, dict[str, str]]:
    """The API's `JobCreate`, or None and {field: message} for the form."""
    errors = {name: message for name, message in REQUIRED.items() if not form.get(name)}
    try:
        body = JobCreate.model_validate(body_of(form))
    except ValidationError as exc:
        faults = sorted(exc.errors(include_url=False), key=lambda f: f["type"] == "literal_error")
        for fault in faults:
            errors.setdefault(*_placed(fault))
        return None, errors
    return (None, errors) if errors else (body, {})


def _placed(fault: Any) -> tuple[str, str]:
    loc = [str(part) for part in fault.get("loc", ())]
    message = str(fault.get("msg", "invalid")).removeprefix("Value error, ")
    pair = (loc[0], loc[1]) if len(loc) > 1 else None
    if pair in FIELD_OF:
        name = FIELD_OF[pair]
        if name in NUMBERS:
            message += " (or auto)"
        return name, message
    if not loc:
        return ("purpose" if "purpose" in message else "form"), message
    return (loc[0] if loc[0] in PLAIN else "form"), message


def form_values(form: Mapping[str, Any]) -> dict[str, Any]:
    return {key: str(value) for key, value in form.items() if key != "csrf"} | {
        "evaluation": form.get("evaluation") == "true"
    }


DEFAULTS = {
    "n_epochs": "auto",
    "batch_size": "auto",
    "learning_rate_multiplier": "auto",
    "lora_r": "16",
    "lora_alpha": "32",
    "evaluation": True,
}


# --- a job's page ------------------------------------------------------------------------


def facts(job: FineTuningJob) -> dict[str, Any]:
    return {
        "created": when(job.created_at),
        "finished": when(job.finished_at),
        "terminal": job.status in FINAL_STATUSES,
        "suspected_mislabels": _suspected_mislabels(job),
    }


SUSPECTS_SHOWN = 20


def _suspected_mislabels(job: FineTuningJob) -> list[Any]:
    """The first flagged lines (line order), read in the page's own session; the API
    pages through all of them (GET /v1/fine_tuning/jobs/{id}/suspected_mislabels)."""
    session = object_session(job)
    if session is None or not (job.compute or {}).get("suspected_mislabels"):
        return []
    rows, _ = mislabels.list_page(cast(Session, session), job=job, after=None, limit=SUSPECTS_SHOWN)
    return rows


def actions(state: Runtime, principal: Principal, job: FineTuningJob) -> dict[str, bool]:
    """The buttons shown: what the service would let this person do to the job now (the
    service decides again when one is pressed)."""
    stops = allows(state.policy, principal, f"job:{job.id}", "cancel")
    controls = stops and (
        job.created_by == principal.sub or allows(state.policy, principal, "tenant", "edit")
    )
    return {
        "cancel": stops and job.status not in FINAL_STATUSES,
        "pause": controls and job.status == "running" and not job.cancel_requested,
        "resume": controls and job.status == "paused",
    }


def all_events(session: Session, *, authorized: Authorized, job_id: str) -> list[JobEvent]:
    """The job's events, oldest first, through the API's own listing."""
    events: list[JobEvent] = []
    after = None
    for _ in range(EVENT_PAGES):
        rows, more = service.list_events(
            session, authorized=authorized, job_id=job_id, after=after, limit=500
        )
        events.extend(rows)
        if not more or not rows:
            break
        after = f"ftevent-{rows[-1].seq}"
    return events[::-1]


def loss_chart(events: list[JobEvent]) -> Markup:
    train: list[tuple[float, float]] = []
    valid: list[tuple[float, float]] = []
    for event in events:
        data = event.data or {}
        if event.type != "metrics" or "step" not in data:
            continue
        if isinstance(data.get("train_loss"), int | float):
            train.append((float(data["step"]), float(data["train_loss"])))
        elif isinstance(data.get("valid_loss"), int | float):
            valid.append((float(data["step"]), float(data["valid_loss"])))
    return charts.lines(
        [("training loss", train), ("validation loss", valid)],
        title="Loss",
        x_label="step",
        from_zero=False,
    )
