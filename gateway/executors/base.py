"""What the gateway asks of whatever runs its jobs."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Executor(Protocol):
    """Runs queued fine-tuning jobs. The database row is the source of truth: an executor
    only hears that a job is waiting (`submit`) or that its owner asked it to stop (`cancel`,
    after the row's `cancel_requested` flag was committed)."""

    name: str

    def start(self) -> None:
        """Bring up whatever runs jobs (worker processes, a Ray connection)."""

    def stop(self) -> None:
        """Stop taking jobs; a running job is handed back to the queue, not lost."""

    def submit(self, job_id: str) -> None:
        """A committed job is queued: run it when a slot is free."""

    def cancel(self, job_id: str) -> None:
        """The job's cancel flag is committed: make the run see it soon."""
