"""Where fine-tuning jobs run: ``make_executor(settings, engine)`` picks the executor the
settings name. The gateway calls ``start()`` at start-up, ``submit(job_id)`` after committing
a queued job, ``cancel(job_id)`` after committing its cancel flag, ``stop()`` at shutdown."""

from __future__ import annotations

from sqlalchemy import Engine

from gateway.config import Settings
from gateway.executors.base import Executor
from gateway.executors.local import LocalExecutor


def make_executor(settings: Settings, engine: Engine) -> Executor:
    if settings.heartbeat_seconds >= settings.lease_seconds:
        raise ValueError(
            "heartbeat_seconds must be shorter than lease_seconds, or running jobs would be "
            "taken back from live workers"
        )
    if settings.executor == "ray":
        # Imported only here: ray is an optional dependency the local executor never needs.
        from gateway.executors.ray import RayExecutor

        return RayExecutor(settings, engine)
    return LocalExecutor(settings, engine)


__all__ = ["Executor", "make_executor"]
