"""The embedded executor: worker processes on this machine, one job at a time each.

Workers find work in the database, not in a message queue: each loop reaps expired
leases, then claims the oldest queued job. The gateway starts ``local_workers`` of them
(``spawn``ed, so no thread or lock of the server is inherited); ``tunegate worker`` runs one
on its own. ``submit`` only wakes the gateway's workers early; polling finds the job anyway.
This module imports no torch: the gateway process never pays for it, only the workers do.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
from typing import Any

import structlog
from sqlalchemy import Engine

from gateway.config import Settings
from gateway.db import make_engine
from gateway.executors.leases import claim, reap_expired
from gateway.executors.run import run_job
from gateway.logging import configure_logging

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 30.0


def new_worker_id(index: int | None = None) -> str:
    suffix = "" if index is None else f"-{index}"
    return f"worker-{socket.gethostname()[:64]}-{os.getpid()}{suffix}"


def work(
    settings: Settings,
    *,
    worker_id: str,
    engine: Engine | None = None,
    stop: Any = None,
    wake: Any = None,
    until_idle: bool = False,
    poll_seconds: float = POLL_SECONDS,
) -> int:
    """The worker loop; returns the number of jobs run. ``stop``/``wake`` are Event-like
    (threading or multiprocessing); ``until_idle`` returns once the queue is empty."""
    own_engine = engine is None
    engine = engine or make_engine(settings.database_url)
    stop = stop or threading.Event()
    wake = wake or threading.Event()
    ran = 0
    log.info("worker.started", worker=worker_id)
    try:
        while not stop.is_set():
            for job_id, status in reap_expired(engine, max_attempts=settings.max_attempts):
                log.warning("job.lease_expired", job_id=job_id, status=status)
            claimed = claim(engine, worker_id=worker_id, lease_seconds=settings.lease_seconds)
            if claimed is not None:
                outcome = run_job(
                    settings, claimed.job_id, worker_id, engine=engine, shutdown=stop.is_set
                )
                log.info("job.finished", job_id=claimed.job_id, outcome=outcome, worker=worker_id)
                ran += 1
                continue
            if until_idle:
                break
            if wake.wait(poll_seconds):
                wake.clear()
    finally:
        log.info("worker.stopped", worker=worker_id, jobs=ran)
        if own_engine:
            engine.dispose()
    return ran


def pin_device(index: int) -> None:
    """One job per device: worker N trains on CUDA device N (mod the count) when there is
    one; on a CPU-only machine every worker shares the CPU."""
    # Here, not at the top: only a worker process loads torch, never the gateway.
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(index % torch.cuda.device_count())


def _worker_process(settings_data: dict[str, Any], index: int, stop: Any, wake: Any) -> None:
    settings = Settings(**settings_data)
    configure_logging(json_logs=settings.json_logs)
    pin_device(index)
    work(settings, worker_id=new_worker_id(index), stop=stop, wake=wake)


class LocalExecutor:
    name = "local"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self._context = multiprocessing.get_context("spawn")
        # Made only when there are workers to share them with: each is a set of OS
        # semaphores, and a gateway without local workers has no use for them.
        self._stop: Any = None
        self._wake: Any = None
        self._processes: list[multiprocessing.process.BaseProcess] = []

    def start(self) -> None:
        if self.settings.local_workers == 0:
            return
        self._stop = self._context.Event()
        self._wake = self._context.Event()
        data = self.settings.model_dump(mode="json")
        for index in range(self.settings.local_workers):
            process = self._context.Process(
                target=_worker_process,
                args=(data, index, self._stop, self._wake),
                name=f"tunegate-worker-{index}",
                daemon=True,
            )
            process.start()
            self._processes.append(process)
        if self._processes:
            log.info("executor.started", executor=self.name, workers=len(self._processes))

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """Workers hand a running job back to the queue (from its last checkpoint) and
        exit; one that does not within ``timeout`` is terminated, and its lease lapses."""
        if self._stop is None:
            return
        self._stop.set()
        self._wake.set()
        for process in self._processes:
            process.join(timeout)
            if process.is_alive():
                log.warning("executor.worker_terminated", pid=process.pid)
                process.terminate()
                process.join(5)
        self._processes.clear()
        # Dropping them frees their semaphores now, not in the resource tracker at exit
        # (which reports them as leaked).
        self._stop = self._wake = None

    def submit(self, job_id: str) -> None:
        if self._wake is not None:
            self._wake.set()

    def cancel(self, job_id: str) -> None:
        """The committed flag is what a worker watches (within a second); nothing to do."""

    @property
    def workers_alive(self) -> int:
        return sum(process.is_alive() for process in self._processes)
