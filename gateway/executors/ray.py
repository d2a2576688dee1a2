"""The Ray executor: each job is one Ray task that claims that job's lease and calls
``run_job``, the code local workers run, so events, checkpoints, re-hashing and registration
do not depend on where the job ran.

The database stays the source of truth. The driver (the gateway process) keeps one thread
that takes back expired ``ray`` leases (local workers reap only their own executor's jobs),
launches a task for every queued ``ray`` job it is not already running (jobs queued while
the gateway was down, or re-queued to resume from a checkpoint, need no ``submit``) and
forces out tasks that ignore a cancel. The driver imports no torch; only the tasks do.

Data parallel (``ray_train_workers`` > 1): the job's task still claims it and runs
``run_job``, so the lease, heartbeat, cancel flag, events and completion (re-hash and
registration) are done once, there. Only the training call changes: instead of running the
recipe in its own process, the task starts a Ray Train ``TorchTrainer`` of N workers (1 CPU
and ``ray_num_gpus`` GPUs each; gloo on CPU, nccl on GPU) whose loop runs the same
``trainer.recipe.train`` as one rank of the process group, and waits for it. The task itself
then holds 1 CPU and no GPU. A small actor, the job's channel, joins the two sides: rank 0
sends its events through it, the task relays them to its JobMonitor; the task's stop (cancel
flag, lost lease, interrupt) and pause are set on it, rank 0 polls them before each step and
the recipe stops (or pauses) every rank together; rank 0 hands its TrainResult back through
it. A forced kill of the task takes the trainer with it (Ray ties the controller and its
workers to their owner).

Rank 0 writes checkpoints and final artifacts under the spec's ``output_dir`` (in
``artifact_dir``), and the task re-hashes them there before registering: this assumes
``artifact_dir`` is the same storage on every node that runs a worker or a job's task (one
machine, or a shared filesystem). Where it is not, the re-hash finds nothing and the job
fails rather than registering unseen bytes. Ray Train's own run state goes to
``output_dir/.ray-train`` and is removed when the trainer ends.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import structlog
from sqlalchemy import Engine
from sqlmodel import Session, select

from gateway.config import Settings
from gateway.db import make_engine
from gateway.executors.completion import LeaseLost, cancel_job, locked_if_ours
from gateway.executors.leases import claim, pause_job, reap_expired, requeue
from gateway.executors.run import run_job
from gateway.jobs.events import add_event
from gateway.jobs.models import FineTuningJob
from gateway.logging import configure_logging
from trainer.spec import TrainSpec

if TYPE_CHECKING:
    from trainer.results import TrainEvent, TrainResult

log = structlog.get_logger(__name__)

EXECUTOR = "ray"
POLL_SECONDS = 2.0
CANCEL_GRACE_SECONDS = 60.0
STOP_GRACE_SECONDS = 30.0
NOT_CLAIMED = "not_claimed"
RAY_TRAIN_DIR_NAME = ".ray-train"
RELAY_SECONDS = 0.25
STOP_POLL_SECONDS = 0.5


def _run_claimed(settings: Settings, engine: Engine, job_id: str, worker_id: str) -> str:
    """run_job in a helper thread: a non-forced ``ray.cancel`` raises KeyboardInterrupt in
    the task's main thread, which would otherwise abort the run wherever it was and leave
    its heartbeat thread renewing a lease nobody uses. Here it only asks the run to stop at
    the next step, which records the cancel (flag set) or hands the job back (stop)."""
    stop, finished = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            train = None
            if settings.ray_train_workers > 1:
                train = functools.partial(train_on_workers, settings, job_id)
            result["outcome"] = run_job(
                settings, job_id, worker_id, engine=engine, shutdown=stop.is_set, train=train
            )
        except BaseException as exc:  # re-raised in the task's thread, where Ray sees it
            result["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name=f"run-{job_id}", daemon=True).start()
    # Not Thread.join: on Python 3.11 a KeyboardInterrupt inside join() leaves the thread
    # marked stopped while it still runs, and the task would return before the run has.
    while not finished.is_set():
        try:
            finished.wait(0.5)
        except KeyboardInterrupt:
            stop.set()
            log.info("job.ray_interrupt", job_id=job_id, worker=worker_id)
    if "error" in result:
        raise result["error"]
    return result["outcome"]


class _Channel:
    """The job's actor between its task and rank 0: events one way, stop and result the
    other. Calls from one caller run in order, so every event rank 0 sent before its result
    is here when the result is."""

    def __init__(self) -> None:
        self._events: list[TrainEvent] = []
        self._stop = False
        self._pause = False
        self._result: TrainResult | None = None

    def push(self, event: TrainEvent) -> None:
        self._events.append(event)

    def drain(self) -> list[TrainEvent]:
        events, self._events = self._events, []
        return events

    def request_stop(self) -> None:
        self._stop = True

    def stop_requested(self) -> bool:
        return self._stop

    def request_pause(self) -> None:
        self._pause = True

    def pause_requested(self) -> bool:
        return self._pause

    def set_result(self, result: TrainResult) -> None:
        self._result = result

    def result(self) -> TrainResult | None:
        return self._result


class _Relay:
    """The task's thread that passes rank 0's events to ``on_event`` and the task's stop
    and pause to the channel."""

    def __init__(
        self,
        channel: Any,
        on_event: Callable[[TrainEvent], None],
        should_stop: Callable[[], bool],
        should_pause: Callable[[], bool],
    ) -> None:
        self.channel, self.on_event, self.should_stop = channel, on_event, should_stop
        self.should_pause = should_pause
        self._stop_sent = self._pause_sent = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ray-train-relay", daemon=True)

    def start(self) -> _Relay:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and pass on what is left."""
        self._closed.set()
        self._thread.join()
        self._pass_on()

    def _loop(self) -> None:
        while not self._closed.wait(RELAY_SECONDS):
            try:
                self._pass_on()
            except Exception:
                log.exception("job.ray_train_relay_failed")

    def _pass_on(self) -> None:
        if not self._stop_sent and self.should_stop():
            ray.get(self.channel.request_stop.remote())
            self._stop_sent = True
        if not self._pause_sent and self.should_pause():
            ray.get(self.channel.request_pause.remote())
            self._pause_sent = True
        for event in ray.get(self.channel.drain.remote()):
            self.on_event(event)


class _StopPoll:
    """Rank 0's should_stop (or should_pause): one of the channel's flags, asked at most
    every STOP_POLL_SECONDS."""

    def __init__(self, channel: Any, flag: str = "stop_requested") -> None:
        self.channel, self.flag, self.stopped, self._next_at = channel, flag, False, 0.0

    def __call__(self) -> bool:
        if not self.stopped and time.monotonic() >= self._next_at:
            self.stopped = ray.get(getattr(self.channel, self.flag).remote())
            self._next_at = time.monotonic() + STOP_POLL_SECONDS
        return self.stopped


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: one rank of the recipe (Ray Train set up the process group)."""
    # Here, not at the top: they load torch, which the driver (the gateway) never needs.
    import ray.train
    import torch

    from trainer import recipe

    if torch.cuda.is_available():
        from ray.train.torch import get_device

        torch.cuda.set_device(get_device())
    channel = config["channel"]
    spec = TrainSpec.from_dict(config["spec"])
    if ray.train.get_context().get_world_rank() != 0:
        recipe.train(spec)
        return
    result = recipe.train(
        spec,
        on_event=channel.push.remote,
        should_stop=_StopPoll(channel),
        should_pause=_StopPoll(channel, "pause_requested"),
    )
    ray.get(channel.set_result.remote(result))


def train_on_workers(
    settings: Settings,
    job_id: str,
    spec: TrainSpec,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    should_pause: Callable[[], bool] | None = None,
) -> TrainResult:
    """``trainer.recipe.train`` on ``ray_train_workers`` Ray Train workers, seen from the
    calling task as if it ran here: events, stop and pause through the job's channel, rank 0's
    TrainResult returned. A worker's exception is raised as itself (rank 0's first)."""
    # Here, not at the top: Ray Train's torch integration loads torch.
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = settings.ray_num_gpus > 0
    resources = {"CPU": 1.0, **({"GPU": settings.ray_num_gpus} if use_gpu else {})}
    storage = Path(spec.output_dir) / RAY_TRAIN_DIR_NAME
    channel = ray.remote(num_cpus=0, max_restarts=0)(_Channel).remote()
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"spec": spec.to_dict(), "channel": channel},
        scaling_config=ScalingConfig(
            num_workers=settings.ray_train_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        # Retrying is the lease's job, as for a task.
        run_config=RunConfig(
            name=job_id,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    log.info(
        "job.ray_train_started", job_id=job_id, workers=settings.ray_train_workers, use_gpu=use_gpu
    )
    relay = _Relay(
        channel,
        on_event or (lambda event: None),
        should_stop or (lambda: False),
        should_pause or (lambda: False),
    )
    relay.start()
    try:
        try:
            trainer.fit()
        except Exception as exc:
            failures = getattr(exc, "worker_failures", None)
            if failures:
                raise failures[min(failures)] from exc
            raise
        finally:
            relay.close()
            shutil.rmtree(storage, ignore_errors=True)
        result = ray.get(channel.result.remote())
    finally:
        ray.kill(channel)
    if result is None:
        raise RuntimeError("the Ray Train workers ended without rank 0's result")
    return result


def run_ray_job(settings_data: dict[str, Any], job_id: str, worker_id: str) -> str:
    """The body of a job's Ray task: claim ``job_id`` (only that one) and run it."""
    # A fresh Ray worker takes seconds to import torch and transformers; done after the
    # claim, that would eat the lease before the first heartbeat (and the gateway that
    # imports this module must not pay for it: hence here, not at the top).
    import trainer.recipe  # noqa: F401

    settings = Settings(**settings_data)
    if settings.ray_train_workers > 1:
        # Likewise Ray Train's torch integration, which train_on_workers needs.
        from ray.train import torch as _ray_train_torch  # noqa: F401
    configure_logging(json_logs=settings.json_logs)
    engine = make_engine(settings.database_url)
    try:
        claimed = claim(
            engine,
            worker_id=worker_id,
            lease_seconds=settings.lease_seconds,
            executor=EXECUTOR,
            job_id=job_id,
        )
        if claimed is None:
            # Cancelled while queued, or another gateway's task got there first.
            return NOT_CLAIMED
        outcome = _run_claimed(settings, engine, job_id, worker_id)
        log.info("job.finished", job_id=job_id, outcome=outcome, worker=worker_id)
        return outcome
    finally:
        engine.dispose()


@dataclass
class _Task:
    ref: Any
    worker_id: str
    force_at: float | None = None


class RayExecutor:
    name = EXECUTOR

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        poll_seconds: float = POLL_SECONDS,
        cancel_grace_seconds: float = CANCEL_GRACE_SECONDS,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.settings, self.engine = settings, engine
        self.poll_seconds = poll_seconds
        self.cancel_grace_seconds = cancel_grace_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self._settings_data = settings.model_dump(mode="json")
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._owns_ray = False
        self._remote: Any = None

    # --- the Executor protocol

    def start(self) -> None:
        # Telemetry off unless the operator asked for it: a governance gateway should not
        # phone home from the cluster it starts.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._owns_ray = not ray.is_initialized()
        ray.init(
            address=self.settings.ray_address,
            ignore_reinit_error=True,
            log_to_driver=False,
            include_dashboard=False,
        )
        data_parallel = self.settings.ray_train_workers > 1
        self._remote = ray.remote(
            num_cpus=1,
            # Data parallel: the GPUs go to the Ray Train workers, not to the claiming task.
            num_gpus=0 if data_parallel else self.settings.ray_num_gpus,
            # Retrying is the lease's job: a crashed task's job is re-queued from its last
            # checkpoint by the reaper, with the attempt counted.
            max_retries=0,
        )(run_ray_job)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ray-executor", daemon=True)
        self._thread.start()
        log.info(
            "executor.started",
            executor=self.name,
            address=self.settings.ray_address or "local",
            num_gpus=self.settings.ray_num_gpus,
            train_workers=self.settings.ray_train_workers,
        )

    def stop(self) -> None:
        """Running tasks are interrupted (their runs hand the jobs back to the queue at the
        next step); ones still alive after the grace period are killed, leaving their
        leases to lapse. Ray is shut down only if ``start`` brought it up."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.poll_seconds + 30)
            self._thread = None
        with self._lock:
            running = list(self._tasks.items())
            self._tasks.clear()
        # The hand-back is decided in the database, not by the interrupt below: a task's
        # interrupt is not always delivered (we saw it lost on a busy machine), whereas a
        # run whose lease is revoked stops at its next monitor tick and can no longer
        # register anything.
        for job_id, task in running:
            self._hand_back(job_id, task.worker_id)
        refs = [task.ref for _job_id, task in running]
        for ref in refs:
            ray.cancel(ref, force=False)
        if refs:
            _, alive = ray.wait(refs, num_returns=len(refs), timeout=self.stop_grace_seconds)
            for ref in alive:
                log.warning("executor.task_killed", executor=self.name)
                ray.cancel(ref, force=True)
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
        log.info("executor.stopped", executor=self.name, tasks=len(refs))

    def _hand_back(self, job_id: str, worker_id: str) -> None:
        """Queues a running job again (from its newest checkpoint when there is one),
        without using up an attempt, and takes the lease from its task."""
        try:
            with Session(self.engine) as session:
                job = locked_if_ours(session, job_id, worker_id)
                if job.status == "pausing" and not job.cancel_requested:
                    pause_job(session, job=job, worker_id=worker_id, step=None)
                    session.commit()
                elif job.status == "running" and not job.cancel_requested:
                    if not requeue(
                        session, job=job, reason="executor_stopped", worker_id=worker_id
                    ):
                        job.status, job.lease_owner, job.lease_expires_at = "queued", None, None
                        add_event(
                            session,
                            job_id=job.id,
                            level="warn",
                            message="Job handed back: the executor stopped",
                        )
                    # Going on (or starting over) on another worker uses up no attempt.
                    job.attempts = max(0, job.attempts - 1)
                    session.add(job)
                    session.commit()
                    log.info("job.handed_back", job_id=job_id, worker=worker_id)
        except LeaseLost:
            pass  # not claimed yet, or already ended: nothing to hand back

    def submit(self, job_id: str) -> None:
        self._launch(job_id)

    def cancel(self, job_id: str) -> None:
        """The run sees the committed flag within a tick; the interrupt makes a task see it
        even between ticks, and the kill after the grace period covers a run stuck inside
        one step. A job still waiting for a slot is closed here, without a task."""
        with self._lock:
            task = self._tasks.get(job_id)
            if task is not None and task.force_at is None:
                task.force_at = time.monotonic() + self.cancel_grace_seconds
        if task is not None:
            ray.cancel(task.ref, force=False)
        self._close_if_queued(job_id)
        self._wake.set()

    # --- the driver's thread

    def _launch(self, job_id: str) -> None:
        with self._lock:
            if self._remote is None or job_id in self._tasks or self._stop.is_set():
                return
            worker_id = f"ray-{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            ref = self._remote.remote(self._settings_data, job_id, worker_id)
            self._tasks[job_id] = _Task(ref=ref, worker_id=worker_id)
        log.info("job.submitted", executor=self.name, job_id=job_id, worker=worker_id)

    def _close_if_queued(self, job_id: str) -> None:
        # With the cancel flag committed, claim closes a queued job and never starts it.
        claimed = claim(
            self.engine,
            worker_id="ray-driver",
            lease_seconds=self.settings.lease_seconds,
            executor=EXECUTOR,
            job_id=job_id,
        )
        if claimed is not None:
            # cancel() before the flag was committed: nobody runs it, so its lease lapses
            # and the reaper takes it back.
            log.error("executor.claimed_without_cancel_flag", job_id=job_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("executor.tick_failed", executor=self.name)
            if self._wake.wait(self.poll_seconds):
                self._wake.clear()

    def _tick(self) -> None:
        reaped = reap_expired(
            self.engine, max_attempts=self.settings.max_attempts, executor=EXECUTOR
        )
        for job_id, status in reaped:
            log.warning("job.lease_expired", job_id=job_id, status=status)
        self._collect_finished()
        self._force_overdue()
        with Session(self.engine) as session:
            queued = session.exec(
                select(FineTuningJob.id, FineTuningJob.cancel_requested)
                .where(FineTuningJob.status == "queued", FineTuningJob.executor == EXECUTOR)
                .order_by(FineTuningJob.created_ns, FineTuningJob.id)
            ).all()
        for job_id, cancel_requested in queued:
            if self._stop.is_set():
                return
            if cancel_requested:
                self._close_if_queued(job_id)
            else:
                self._launch(job_id)

    def _collect_finished(self) -> None:
        with self._lock:
            tasks = dict(self._tasks)
        if not tasks:
            return
        refs = {task.ref: job_id for job_id, task in tasks.items()}
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in done:
            job_id = refs[ref]
            try:
                outcome = ray.get(ref, timeout=0)
                log.info("job.task_done", executor=self.name, job_id=job_id, outcome=outcome)
            except ray.exceptions.TaskCancelledError:
                log.info("job.task_cancelled", executor=self.name, job_id=job_id)
            except Exception as exc:
                # The lease decides what happens to the job; this is only the task's end.
                log.warning(
                    "job.task_failed",
                    executor=self.name,
                    job_id=job_id,
                    error_type=type(exc).__name__,
                )
            with self._lock:
                if self._tasks.get(job_id) is tasks[job_id]:
                    del self._tasks[job_id]

    def _force_overdue(self) -> None:
        now = time.monotonic()
        with self._lock:
            overdue = {
                job_id: task
                for job_id, task in self._tasks.items()
                if task.force_at is not None and task.force_at <= now
            }
            for job_id in overdue:
                del self._tasks[job_id]
        for job_id, task in overdue.items():
            log.warning("job.cancel_forced", executor=self.name, job_id=job_id)
            ray.cancel(task.ref, force=True)
            self._close_killed(job_id, task.worker_id)

    def _close_killed(self, job_id: str, worker_id: str) -> None:
        """A killed task cannot record its cancel; the driver does it for the worker it
        named, unless the run got there first (or the job is no longer that worker's)."""
        with Session(self.engine) as session:
            try:
                job = locked_if_ours(session, job_id, worker_id)
            except LeaseLost:
                return
            cancel_job(session, job=job, worker_id=worker_id, step=None)
            session.commit()
