"""Writing a job's events (OpenAI's fine_tuning.job.event), for the gateway and workers
alike."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session

from gateway.jobs.models import JobEvent


def add_event(
    session: Session,
    *,
    job_id: str,
    message: str,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
    at: int | None = None,
) -> JobEvent:
    event = JobEvent(
        job_id=job_id,
        created_at=at or int(time.time()),
        level=level,
        type=type,
        message=message,
        data=data,
    )
    session.add(event)
    return event
