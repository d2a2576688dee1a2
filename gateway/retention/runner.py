"""The gateway's retention thread: every ``retention_sweep_seconds`` one sweep
(gateway.retention.service.sweep) in a transaction of its own, then the audit sequencer is
woken for the events it queued."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from gateway.config import Settings
from gateway.retention import service

log = structlog.get_logger()


class RetentionRunner:
    def __init__(self, engine: Engine, settings: Settings, *, notify: Callable[[], None]) -> None:
        self.engine = engine
        self.settings = settings
        self.notify = notify
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RetentionRunner:
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("retention.sweep_failed")
            self._stopping.wait(self.settings.retention_sweep_seconds)

    def tick(self, now: int | None = None) -> service.SweepResult:
        with Session(self.engine) as session:
            result = service.sweep(session, settings=self.settings, now=now)
            session.commit()
        if result.deleted or result.warned:
            self.notify()
            log.info("retention.swept", deleted=len(result.deleted), warned=len(result.warned))
        return result
