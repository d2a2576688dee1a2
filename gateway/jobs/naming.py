"""The names of what a job registers: its fine-tuned model and its checkpoints' models,
as OpenAI spells them (``ft:<base>:<org>:<suffix>:<job id>``, and ``...:ckpt-step-<N>``)."""

from __future__ import annotations

from gateway.jobs.models import FineTuningJob

MODEL_ID_MAX = 122  # the job's model: room left for nothing but itself
NAME_MAX = 128  # any registered model's id (model_versions.id)


def model_version_id(job: FineTuningJob) -> str:
    """OpenAI's naming, ft:<base>:<tenant>:<suffix>:<job id>; the job id is what makes it
    unique, so it is what survives when the name is cut to fit."""
    if job.fine_tuned_model:
        return job.fine_tuned_model
    tail = f":{job.id}"
    head = f"ft:{job.base_model}:{job.tenant}:{job.suffix or 'tuned'}"
    return head[: MODEL_ID_MAX - len(tail)] + tail


def checkpoint_model_id(job: FineTuningJob, step: int) -> str:
    """The model a checkpoint registers as: the job's model name with ``:ckpt-step-<N>``;
    the head is cut when the whole would not fit, never the job id or the step."""
    suffix = f":ckpt-step-{step}"
    name = model_version_id(job)
    if len(name) + len(suffix) <= NAME_MAX:
        return name + suffix
    tail = f":{job.id}{suffix}"
    head = name.removesuffix(f":{job.id}")
    return head[: NAME_MAX - len(tail)] + tail
