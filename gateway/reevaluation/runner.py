"""The gateway's re-evaluation thread: every ``reevaluation_poll_seconds`` (or at once when
one is asked for) it queues the re-evaluations the schedule says are due, then runs the
queued ones, one at a time, in this thread.

In the gateway process rather than a job worker: a re-evaluation trains nothing and holds
no lease, and the evaluation is the trainer's own code (torch is loaded on the first
one). At start-up, those a stopped gateway left running are queued again; at shutdown the
running one stops between batches and goes back to the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from gateway.config import Settings
from gateway.reevaluation import service

log = structlog.get_logger()


class ReevaluationRunner:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        policy_version: Callable[[], str | None],
        notify: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.policy_version = policy_version
        self.notify = notify
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ReevaluationRunner:
        requeued = service.requeue_interrupted(self.engine)
        if requeued:
            log.info("model.reevaluations_requeued", count=requeued)
        self._thread = threading.Thread(target=self._loop, name="reevaluation", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("model.reevaluation_loop_failed")
            self._wake.wait(self.settings.reevaluation_poll_seconds)
            self._wake.clear()

    def tick(self) -> int:
        """Queues what is due, then runs what is queued; returns how many ran."""
        with Session(self.engine) as session:
            due = service.schedule_due(
                session, settings=self.settings, policy_version=self.policy_version()
            )
            session.commit()
        if due:
            self.notify()
        ran = 0
        while not self._stopping.is_set():
            claimed = service.claim_next(self.engine)
            if claimed is None:
                break
            self.notify()
            service.run(
                self.engine,
                settings=self.settings,
                reevaluation_id=claimed,
                should_stop=self._stopping.is_set,
            )
            self.notify()
            ran += 1
        return ran
