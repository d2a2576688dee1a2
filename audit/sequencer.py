"""A background thread that chains queued audit events (audit.chain.sequence).

The gateway starts one per process and calls ``notify()`` after every commit that
enqueued events; the thread also wakes every ``interval`` seconds, so events enqueued by
other processes, or whose notify was lost to a crash, are chained all the same. Several
sequencers, in one process or many, take turns on the chain head lock.

An exception in a round is logged and the round retried after ``interval``; the thread
only ends through ``stop()``, which chains what is queued one last time.

After a wake-up it lingers ``linger`` seconds before chaining, so that events committed
together are chained in one transaction rather than one each (each chaining transaction
has a fixed cost: the head lock, a commit, on PostgreSQL a WAL flush).

Under load it wakes for nearly every commit, so ``audit.sequenced`` sums its rounds:
one line at most every ``log_every`` seconds (and one at stop), not one per round.
"""

from __future__ import annotations

import threading
import time

import structlog
from sqlalchemy import Engine

from audit.chain import DEFAULT_MAX_BATCH, DEFAULT_MAX_BATCHES, sequence
from audit.checkpoints import Signer

log = structlog.get_logger()


class AuditSequencer:
    def __init__(
        self,
        engine: Engine,
        *,
        signer: Signer | None = None,
        checkpoint_every: int | None = None,
        interval: float = 1.0,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batches: int = DEFAULT_MAX_BATCHES,
        linger: float = 0.005,
        log_every: float = 10.0,
        name: str = "audit-sequencer",
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.engine = engine
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.interval = interval
        self.max_batch = max_batch
        self.max_batches = max_batches
        self.linger = linger
        self.log_every = log_every
        self.chained = 0  # events this sequencer has chained
        self.failures = 0  # rounds that raised
        self._unlogged = _Tally()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> AuditSequencer:
        self._thread.start()
        return self

    def notify(self) -> None:
        """Events were committed to the queue: chain them soon. Cheap; never blocks."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Chain what is queued one last time, then end the thread."""
        if self._thread.ident is None:  # never started
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            if self.linger:
                self._stopping.wait(self.linger)
            self._wake.clear()  # before the round: a notify during it wakes the next one
            stopping = self._stopping.is_set()
            try:
                ok = self._round()
                self._log_progress(force=stopping)
            except Exception:  # logging itself failed; the thread must not end
                ok = False
            if stopping:
                return
            if not ok:
                self._stopping.wait(self.interval)

    def _round(self) -> bool:
        """Chain until the queue is empty; False when a call raised."""
        bound = self.max_batch * self.max_batches
        try:
            while True:
                started = time.perf_counter()
                count = sequence(
                    self.engine,
                    signer=self.signer,
                    checkpoint_every=self.checkpoint_every,
                    max_batch=self.max_batch,
                    max_batches=self.max_batches,
                )
                self.chained += count
                if count:
                    self._unlogged.add(count, time.perf_counter() - started)
                if count < bound:
                    return True
        except Exception:
            self.failures += 1
            log.exception("audit.sequence_failed", retry_in_s=self.interval)
            return False

    def _log_progress(self, *, force: bool) -> None:
        tally = self._unlogged
        if tally.events and (force or time.monotonic() - tally.since >= self.log_every):
            log.info(
                "audit.sequenced",
                events=tally.events,
                calls=tally.calls,
                slowest_call_ms=round(tally.slowest_s * 1000, 1),
                chained_total=self.chained,
            )
            self._unlogged = _Tally()


class _Tally:
    """What the sequencer chained since it last logged."""

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.events = 0
        self.calls = 0
        self.slowest_s = 0.0

    def add(self, events: int, seconds: float) -> None:
        self.events += events
        self.calls += 1
        self.slowest_s = max(self.slowest_s, seconds)
