"""`tunegate jobs ...`: fine-tuning jobs, their dry runs, events and checkpoints."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from gateway.cli import follow as following
from gateway.cli import output
from gateway.cli.app import EXIT_FAILED, app
from gateway.cli.context import JsonFlag, client, emit, wants_json

jobs_app = typer.Typer(
    help="Fine-tuning jobs: create (or dry-run), follow, list, cancel, pause, resume.",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")

EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
JOB_COLUMNS = [
    ("id", "id"),
    ("status", "status"),
    ("model", "model"),
    ("purpose", "purpose"),
    ("fine_tuned_model", "fine-tuned model"),
    ("created_by", "by"),
    ("created_at", "created"),
]
JOB_FIELDS = [
    "id",
    "status",
    "model",
    "base_model",
    "parent_model",
    "purpose",
    "training_file",
    "validation_file",
    "hyperparameters",
    "lora",
    "seed",
    "fine_tuned_model",
    "trained_tokens",
    "estimated_finish",
    "error",
    "created_by",
    "created_at",
    "finished_at",
    "cancel_requested",
]


def _hyperparameters(
    raw: str | None, n_epochs: int | None, batch_size: int | None, lr: float | None
) -> dict[str, Any] | None:
    given = {
        key: value
        for key, value in (
            ("n_epochs", n_epochs),
            ("batch_size", batch_size),
            ("learning_rate_multiplier", lr),
        )
        if value is not None
    }
    if raw is None:
        return given or None
    if given:
        raise typer.BadParameter(
            "give --hyperparameters or --n-epochs/--batch-size/--learning-rate-multiplier",
            param_hint="--hyperparameters",
        )
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise typer.BadParameter("not JSON", param_hint="--hyperparameters") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--hyperparameters")
    return parsed


def _json_option(raw: str | None, name: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise typer.BadParameter("not JSON", param_hint=name) from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=name)
    return parsed


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        metadata[key] = value
    return metadata or None


@jobs_app.command("create")
def create(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="base model name, or ft:... to continue one")],
    training_file: Annotated[str, typer.Option(help="file id (file-...)")],
    validation_file: Annotated[str | None, typer.Option(help="file id")] = None,
    purpose: Annotated[str | None, typer.Option(help="why: one of the sources' purposes")] = None,
    hyperparameters: Annotated[
        str | None, typer.Option(help="JSON, e.g. '{\"n_epochs\": 3}'")
    ] = None,
    n_epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option(min=0.0)] = None,
    lora: Annotated[str | None, typer.Option(help='JSON, e.g. \'{"r": 8, "alpha": 16}\'')] = None,
    evaluation: Annotated[str | None, typer.Option(help="JSON evaluation settings")] = None,
    suffix: Annotated[str | None, typer.Option(help="part of the fine-tuned model's name")] = None,
    seed: Annotated[int | None, typer.Option(min=0)] = None,
    metadata: Annotated[
        list[str], typer.Option("--metadata", help="KEY=VALUE; repeat for several")
    ] = [],  # noqa: B006
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only the cost and every gate that would refuse")
    ] = False,
    follow: Annotated[bool, typer.Option("--follow", help="then follow it to its end")] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Submit a fine-tuning job (or, with --dry-run, check it without submitting)."""
    body: dict[str, Any] = {"model": model, "training_file": training_file}
    optional = {
        "validation_file": validation_file,
        "purpose": purpose,
        "hyperparameters": _hyperparameters(
            hyperparameters, n_epochs, batch_size, learning_rate_multiplier
        ),
        "lora": _json_option(lora, "--lora"),
        "evaluation": _json_option(evaluation, "--evaluation"),
        "suffix": suffix,
        "seed": seed,
        "metadata": _metadata(metadata),
    }
    body |= {key: value for key, value in optional.items() if value is not None}
    api = client(ctx)
    if dry_run:
        checked = api.post("/v1/fine_tuning/jobs/dry_run", json=body)
        emit(ctx, checked, json_flag=json_flag, human=show_dry_run)
        if not checked.get("would_pass"):
            raise typer.Exit(EXIT_FAILED)
        return
    job = api.post("/v1/fine_tuning/jobs", json=body)
    if follow:
        if not wants_json(ctx, json_flag):
            output.stdout.print(f"created [bold]{escape(job['id'])}[/] ({escape(job['status'])})")
        _follow(ctx, job["id"], json_flag)
        return
    emit(ctx, job, json_flag=json_flag, human=lambda j: output.fields(j, JOB_FIELDS))


def show_dry_run(checked: dict[str, Any]) -> None:
    estimate = checked.get("estimate")
    if estimate:
        hours = estimate.get("device_hours")
        output.stdout.print(
            f"[bold]estimate[/]: {estimate.get('tokens_processed'):,} tokens "
            f"({estimate.get('training_tokens'):,} x {estimate.get('n_epochs')} epochs), "
            f"~{hours:.3g} device-hours on {escape(str(estimate.get('device')))}"
        )
    else:
        output.stdout.print("[bold]estimate[/]: - (the model or the training file is unusable)")
    refusals = checked.get("refusals") or []
    if not refusals:
        output.stdout.print("[bold green]would pass[/]: no gate refuses")
        return
    output.table(
        refusals,
        [
            ("gate", "gate"),
            ("status", "HTTP"),
            ("code", "code"),
            ("param", "param"),
            ("message", "message"),
        ],
        title=f"{len(refusals)} gate(s) would refuse",
    )


@jobs_app.command("follow")
def follow_job(ctx: typer.Context, job_id: str, json_flag: JsonFlag = False) -> None:
    """Live view of a job to its end (status, steps, losses, tokens/s, ETA, verdict).
    Ctrl-C stops following; the job keeps running."""
    _follow(ctx, job_id, json_flag)


def _follow(ctx: typer.Context, job_id: str, json_flag: bool) -> None:
    try:
        final = following.follow(client(ctx), job_id, json_output=wants_json(ctx, json_flag))
    except KeyboardInterrupt:
        output.stderr.print(
            f"stopped following {escape(job_id)}; the job keeps running "
            f"(`tunegate jobs cancel {escape(job_id)}` cancels it)"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if final.get("status") != "succeeded":
        raise typer.Exit(EXIT_FAILED)


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    after: Annotated[str | None, typer.Option(help="cursor: the last job id shown")] = None,
    metadata: Annotated[
        list[str], typer.Option("--metadata", help="KEY=VALUE filter; repeat for several")
    ] = [],  # noqa: B006
    json_flag: JsonFlag = False,
) -> None:
    """The tenant's jobs, newest first."""
    params: dict[str, Any] = {"limit": limit, "after": after}
    params |= {f"metadata[{k}]": v for k, v in (_metadata(metadata) or {}).items()}
    page = client(ctx).get("/v1/fine_tuning/jobs", params=params)

    def human(data: dict[str, Any]) -> None:
        output.table(data.get("data", []), JOB_COLUMNS)
        if data.get("has_more") and data.get("data"):
            output.stderr.print(f"more: --after {escape(data['data'][-1]['id'])}")

    emit(ctx, page, json_flag=json_flag, human=human)


@jobs_app.command("get")
def get_job(ctx: typer.Context, job_id: str, json_flag: JsonFlag = False) -> None:
    """One job, with its estimate and the decisions that let it run."""
    job = client(ctx).get(f"/v1/fine_tuning/jobs/{job_id}")

    def human(data: dict[str, Any]) -> None:
        output.fields(data, JOB_FIELDS)
        output.fields(data, ["estimate", "compute"])

    emit(ctx, job, json_flag=json_flag, human=human)


@jobs_app.command("cancel")
def cancel(ctx: typer.Context, job_id: str, json_flag: JsonFlag = False) -> None:
    """Ask the job to stop (a running job stops at its next step)."""
    job = client(ctx).post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    emit(ctx, job, json_flag=json_flag, human=lambda j: output.fields(j, JOB_FIELDS))


@jobs_app.command("pause")
def pause(ctx: typer.Context, job_id: str, json_flag: JsonFlag = False) -> None:
    """Pause a running job: it checkpoints at its next step and frees its worker."""
    job = client(ctx).post(f"/v1/fine_tuning/jobs/{job_id}/pause")
    emit(ctx, job, json_flag=json_flag, human=lambda j: output.fields(j, JOB_FIELDS))


@jobs_app.command("resume")
def resume(ctx: typer.Context, job_id: str, json_flag: JsonFlag = False) -> None:
    """Resume a paused job: it is queued again and continues from its checkpoint."""
    job = client(ctx).post(f"/v1/fine_tuning/jobs/{job_id}/resume")
    emit(ctx, job, json_flag=json_flag, human=lambda j: output.fields(j, JOB_FIELDS))


@jobs_app.command("events")
def events(
    ctx: typer.Context,
    job_id: str,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    after: Annotated[str | None, typer.Option(help="cursor: an event id")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """The job's events, newest first (`jobs follow` streams them live)."""
    page = client(ctx).get(
        f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": limit, "after": after}
    )

    def human(data: dict[str, Any]) -> None:
        output.table(
            data.get("data", []),
            [
                ("id", "id"),
                ("created_at", "at"),
                ("level", "level"),
                ("type", "type"),
                ("message", "message"),
            ],
        )
        if data.get("has_more") and data.get("data"):
            output.stderr.print(f"more: --after {escape(data['data'][-1]['id'])}")

    emit(ctx, page, json_flag=json_flag, human=human)


@jobs_app.command("checkpoints")
def checkpoints(
    ctx: typer.Context,
    job_id: str,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    after: Annotated[str | None, typer.Option(help="cursor: a checkpoint id")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """The job's checkpoints (adapter snapshots with their metrics)."""
    page = client(ctx).get(
        f"/v1/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": limit, "after": after}
    )
    emit(
        ctx,
        page,
        json_flag=json_flag,
        human=lambda data: output.table(
            data.get("data", []),
            [
                ("id", "id"),
                ("step_number", "step"),
                ("fine_tuned_model_checkpoint", "name"),
                ("metrics", "metrics"),
                ("adapter_sha256", "adapter sha256"),
            ],
        ),
    )
