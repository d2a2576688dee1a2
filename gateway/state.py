"""What one gateway process holds for its lifetime: settings, the database engine, the
token verifier, the policy engine (kept in step with the database by a poller thread), the
audit checkpoint signer and sequencer, the executor and the job writer.

The composition root: it builds the parts the domains provide, so no domain imports it.
Services receive it as ``state``, typed by the narrow Protocols of gateway.runtime."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import structlog
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from audit import chain
from audit.chain import ChainError
from audit.checkpoints import Signer, load_or_create_signer, load_signer
from audit.sequencer import AuditSequencer
from gateway.config import Settings
from gateway.db import make_engine, read_only
from gateway.erasure.search import ErasureSearcher
from gateway.errors import ServiceUnavailable
from gateway.executors import Executor, make_executor
from gateway.inference.service import InferenceRuntime
from gateway.jobs.snapshots import UsableRows
from gateway.jobs.writer import Submission, SubmissionWriter
from gateway.migrations import alembic_config
from gateway.reevaluation.runner import ReevaluationRunner
from gateway.security import TokenVerifier
from ingest import ScanPool
from policies.enforcer import PolicyEngine, Refresher

log = structlog.get_logger()


class SchemaNotReadyError(RuntimeError):
    """The database is not at the newest migration: run `tunegate db upgrade`."""


def check_schema_at_head(engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise SchemaNotReadyError(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `tunegate db upgrade`"
        )


def load_audit_signer(settings: Settings) -> Signer:
    if settings.audit_signing_key is not None and settings.audit_signing_key.exists():
        return load_signer(settings.audit_signing_key)
    if settings.env != "dev":
        raise FileNotFoundError(f"audit signing key not found: {settings.audit_signing_key}")
    return load_or_create_signer(settings.effective_signing_key_path)


@dataclass
class GatewayState:
    settings: Settings
    engine: Engine
    token_verifier: TokenVerifier
    policy: PolicyEngine
    signer: Signer
    refresher: Refresher | None = None
    sequencer: AuditSequencer | None = None
    sequencer_engine: Engine | None = None
    executor: Executor | None = None
    usable_rows: UsableRows = field(default_factory=UsableRows)
    job_writer: SubmissionWriter | None = None
    erasure_searcher: ErasureSearcher | None = None
    witness_pusher: Any = None  # gateway.witness.pusher.WitnessPusher (issue 16 §2)
    reevaluations: ReevaluationRunner | None = None
    retention: Any = None  # gateway.retention.runner.RetentionRunner (issue 16 §3)
    _scan_pool: ScanPool | None = None
    _scan_pool_lock: threading.Lock = field(default_factory=threading.Lock)
    # inference (issue 15): built on the first chat completion (gateway.inference)
    _inference: InferenceRuntime | None = None

    @classmethod
    def start(cls, settings: Settings) -> GatewayState:
        token_verifier = TokenVerifier(settings)
        # As many connections as request threads (anyio's 40) and then some: a request
        # must never wait on the pool while holding SQLite's write lock.
        engine = make_engine(settings.database_url, pool_size=10, max_overflow=50)
        check_schema_at_head(engine)
        policy = PolicyEngine.from_db(engine)
        state = cls(
            settings=settings,
            engine=engine,
            token_verifier=token_verifier,
            policy=policy,
            signer=load_audit_signer(settings),
        )
        state.refresher = policy.start_refresher(
            read_only(engine), interval=settings.policy_poll_seconds
        )
        # The sequencer gets a pool of its own: holding the chain's write lock, it must
        # never wait for a connection that request threads (queued behind that very
        # lock) are holding.
        state.sequencer_engine = make_engine(settings.database_url, pool_size=2, max_overflow=2)
        state.sequencer = AuditSequencer(
            state.sequencer_engine,
            signer=state.signer,
            checkpoint_every=settings.audit_checkpoint_every,
        ).start()
        if settings.audit_witnesses:
            from gateway.witness.pusher import start_pusher

            state.witness_pusher = start_pusher(settings, engine, state.signer)
        state.executor = make_executor(settings, engine)
        state.executor.start()
        state.erasure_searcher = ErasureSearcher(
            state,
            poll_seconds=settings.erasure_search_poll_seconds,
            lease_seconds=settings.erasure_search_lease_seconds,
        ).start()
        state.job_writer = SubmissionWriter(
            engine,
            on_committed=state._jobs_written,
            quota_concurrent_jobs=settings.quota_concurrent_jobs,
            quota_device_hours_per_month=settings.quota_device_hours_per_month,
        )
        if settings.reevaluation_worker:
            state.reevaluations = ReevaluationRunner(
                engine,
                settings,
                policy_version=lambda: state.policy.policy_version,
                notify=state.notify_sequencer,
            ).start()
        if settings.retention_worker:
            from gateway.retention.runner import RetentionRunner

            state.retention = RetentionRunner(
                engine, settings, notify=state.notify_sequencer
            ).start()
        return state

    def _jobs_written(self, submissions: list[Submission]) -> None:
        self.notify_sequencer()
        if self.executor is not None:
            for submission in submissions:
                self.executor.submit(submission.job.id)

    def stop(self) -> None:
        if self.erasure_searcher is not None:
            self.erasure_searcher.stop()
        if self.witness_pusher is not None:
            self.witness_pusher.stop()
        if self._inference is not None:
            self._inference.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.reevaluations is not None:
            self.reevaluations.stop()
        if self.job_writer is not None:
            self.job_writer.stop()
        if self.executor is not None:
            self.executor.stop()
        if self.refresher is not None:
            self.refresher.stop()
        if self.sequencer is not None:
            self.sequencer.stop()
        if self._scan_pool is not None:
            self._scan_pool.close()
        if self.sequencer_engine is not None:
            self.sequencer_engine.dispose()
        self.engine.dispose()

    def scan_pool(self) -> ScanPool | None:
        """Upload scanning processes, started on the first upload rather than at start-up:
        spawning them costs a second or two that most gateway starts never need."""
        if self.settings.ingest_workers == 0:
            return None
        with self._scan_pool_lock:
            if self._scan_pool is None:
                self._scan_pool = ScanPool(workers=self.settings.ingest_workers)
            return self._scan_pool

    def inference_runtime(self) -> InferenceRuntime:
        """The inference backend, quota, queue and usage writer (gateway.inference)."""
        if self._inference is not None:
            return self._inference
        with self._scan_pool_lock:
            if self._inference is None:
                self._inference = InferenceRuntime(self)
            return self._inference

    async def aclose_inference(self) -> None:
        """Releases the inference backend (its close is a coroutine); before stop()."""
        if self._inference is not None:
            await self._inference.aclose()

    def refresh_policy(self) -> None:
        self.policy.refresh(read_only(self.engine))

    def notify_sequencer(self) -> None:
        if self.sequencer is not None:
            self.sequencer.notify()

    def flush_audit_queue(self) -> None:
        try:
            chain.flush(
                self.engine,
                signer=self.signer,
                checkpoint_every=self.settings.audit_checkpoint_every,
            )
        except ChainError as exc:
            log.error("audit.flush_failed", error=str(exc))
            raise ServiceUnavailable(
                "the audit trail cannot be brought up to date; see the server log",
                code="audit_sequencer_stalled",
            ) from None

    @property
    def sequencer_healthy(self) -> bool:
        return self.sequencer is not None and self.sequencer.alive
