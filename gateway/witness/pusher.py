"""The gateway's side of C2SP tlog-witness: a background thread that sends the newest
audit checkpoint to every configured witness and stores the cosignatures it gets back.

It never blocks a request: it polls the checkpoints table every ``interval`` seconds (and
when ``notify()``-ed). Per witness it remembers the size the witness holds; a 409 tells it
that size, and it retries at once from there with a consistency proof from that size. A
witness that cannot be reached is retried with exponential backoff. A *refusal* (403,
404, 422, or a 409 naming a size above ours or the same size with another root) is what a
rewritten history looks like from outside: it is counted in
``tunegate_witness_refusals_total`` and, when fewer than ``quorum`` witnesses are left in
good standing, /readyz fails its ``witnesses`` check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from audit import query
from audit.checkpoints import Signer
from audit.cosignature import CosignatureError, CosignerKey, parse_cosigner_vkey, verify_line
from audit.merkle import consistency_proof
from audit.witness import SIZE_CONTENT_TYPE, format_add_checkpoint, split_note
from gateway import metrics
from gateway.witness.models import AuditCosignature

log = structlog.get_logger()

# (session) -> (tree size, root hash, signed note) of the newest checkpoint, or None
NoteSource = Callable[[Session], "CheckpointNote | None"]
# (session, first, second) -> RFC 6962 consistency proof between the two sizes
ProofSource = Callable[[Session, int, int], list[bytes]]


@dataclass(frozen=True)
class CheckpointNote:
    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class WitnessEndpoint:
    url: str  # the submission prefix: POST <url>/add-checkpoint
    key: CosignerKey

    @classmethod
    def parse(cls, entry: str) -> WitnessEndpoint:
        """``URL VKEY`` (the form of the audit_witnesses setting)."""
        parts = entry.split()
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise ValueError(f"a witness is 'URL VKEY', not {entry!r}")
        return cls(parts[0].rstrip("/"), parse_cosigner_vkey(parts[1]))


def stored_tree_proof(session: Session, first: int, second: int) -> list[bytes]:
    """A consistency proof read off the gateway's own tree (audit_tree_nodes + bodies)."""
    tree = query._StoredTree(session, second)
    return consistency_proof(first, second, tree.subtree)


@dataclass
class _Standing:
    size: int = 0  # what we believe the witness holds for our origin
    refused: str | None = None  # the code of the last refusal, until a success
    failures: int = 0  # consecutive unreachable / bad responses
    next_attempt: float = 0.0
    last_status: int | None = None


@dataclass
class PushOutcome:
    witness: str
    status: str  # cosigned, up_to_date, refused, unreachable, bad_response
    code: str | None = None


class WitnessPusher:
    def __init__(
        self,
        engine: Engine,
        *,
        witnesses: Sequence[WitnessEndpoint],
        quorum: int,
        note_source: NoteSource,
        proof_source: ProofSource = stored_tree_proof,
        interval: float = 2.0,
        timeout: float = 5.0,
        max_backoff: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        name: str = "witness-pusher",
    ) -> None:
        if not 0 <= quorum <= len(witnesses):
            raise ValueError(f"audit_witness_quorum {quorum} of {len(witnesses)} witnesses")
        self.engine = engine
        self.witnesses = list(witnesses)
        self.quorum = quorum
        self.note_source = note_source
        self.proof_source = proof_source
        self.interval = interval
        self.max_backoff = max_backoff
        self.standing = {w.key.name: _Standing() for w in self.witnesses}
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._round_lock = threading.Lock()  # the thread's rounds and direct calls take turns
        self._load_sizes()

    def _load_sizes(self) -> None:
        """What each witness last cosigned for us, from the stored cosignatures."""
        with Session(self.engine) as session:
            for witness in self.witnesses:
                size = session.scalars(
                    select(col(AuditCosignature.tree_size))
                    .where(col(AuditCosignature.witness) == witness.key.name)
                    .order_by(col(AuditCosignature.tree_size).desc())
                    .limit(1)
                ).first()
                self.standing[witness.key.name].size = int(size or 0)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> WitnessPusher:
        self._thread.start()
        return self

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self._http.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        """At least ``quorum`` witnesses have not refused our latest checkpoint."""
        good = sum(1 for s in self.standing.values() if s.refused is None)
        return good >= self.quorum and (self.alive or self._thread.ident is None)

    def status(self) -> dict[str, Any]:
        return {
            name: {"size": s.size, "refused": s.refused, "failures": s.failures}
            for name, s in self.standing.items()
        }

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.push_once()
            except Exception:  # the thread must not end
                log.exception("witness.push_round_failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    # --- one round ---------------------------------------------------------------------

    def push_once(self, *, force: bool = False) -> list[PushOutcome]:
        """Offer the newest checkpoint to every witness that is due (all with ``force``)."""
        with self._round_lock:
            return self._push_round(force=force)

    def _push_round(self, *, force: bool) -> list[PushOutcome]:
        with Session(self.engine) as session:
            latest = self.note_source(session)
        if latest is None:
            return []
        now = time.monotonic()
        outcomes = []
        for witness in self.witnesses:
            standing = self.standing[witness.key.name]
            if standing.size == latest.size and standing.refused is None:
                continue
            if not force and now < standing.next_attempt:
                continue
            outcome = self._push(witness, standing, latest)
            outcomes.append(outcome)
            if outcome.status in ("unreachable", "bad_response", "refused"):
                standing.failures += 1
                backoff = min(self.max_backoff, self.interval * 2 ** min(standing.failures, 16))
                standing.next_attempt = time.monotonic() + backoff
            else:
                standing.failures = 0
                standing.next_attempt = 0.0
        return outcomes

    def _push(
        self, witness: WitnessEndpoint, standing: _Standing, latest: CheckpointNote
    ) -> PushOutcome:
        name = witness.key.name
        old = standing.size if standing.size <= latest.size else 0
        for _attempt in range(2):  # the second try follows a 409's size
            try:
                with Session(self.engine) as session:
                    proof = (
                        self.proof_source(session, old, latest.size)
                        if 0 < old < latest.size
                        else []
                    )
            except (LookupError, ValueError) as exc:
                log.warning("witness.proof_unavailable", witness=name, old=old, error=str(exc))
                return self._refused(standing, name, "proof_unavailable", None)
            body = format_add_checkpoint(old, proof, latest.note)
            try:
                response = self._http.post(f"{witness.url}/add-checkpoint", content=body)
            except httpx.HTTPError as exc:
                metrics.WITNESS_PUSH_ERRORS.labels(kind="unreachable").inc()
                log.warning("witness.unreachable", witness=name, error=type(exc).__name__)
                return PushOutcome(name, "unreachable")
            standing.last_status = response.status_code
            if response.status_code == 200:
                return self._store(witness, standing, latest, response.text)
            if response.status_code == 409:
                size = _size_body(response)
                if size is None:
                    break
                if size > latest.size or size == old:
                    # it holds a larger tree than ours, or ours at that size has another root
                    standing.size = size
                    return self._refused(standing, name, "witness_size_conflict", 409)
                old = size  # the witness is behind (or we forgot): prove from its size
                continue
            if response.status_code in (400, 403, 404, 422):
                return self._refused(
                    standing, name, _REFUSAL_CODES[response.status_code], response.status_code
                )
            break
        metrics.WITNESS_PUSH_ERRORS.labels(kind="bad_response").inc()
        log.warning("witness.bad_response", witness=name, status=standing.last_status)
        return PushOutcome(name, "bad_response")

    def _refused(
        self, standing: _Standing, name: str, code: str, status: int | None
    ) -> PushOutcome:
        first = standing.refused != code
        standing.refused = code
        metrics.WITNESS_REFUSALS.labels(status=str(status or "none")).inc()
        if first:
            log.error("witness.refused", witness=name, code=code, status=status)
        return PushOutcome(name, "refused", code)

    def _store(
        self, witness: WitnessEndpoint, standing: _Standing, latest: CheckpointNote, text: str
    ) -> PushOutcome:
        name = witness.key.name
        body, _ = split_note(latest.note)
        valid = []
        for line in text.splitlines():
            try:
                valid.append((line, verify_line(body, line, witness.key)))
            except CosignatureError:
                continue  # another key of that witness's, or noise: ignored, as the spec says
        if not valid:
            metrics.WITNESS_PUSH_ERRORS.labels(kind="bad_response").inc()
            log.warning("witness.no_valid_cosignature", witness=name)
            return PushOutcome(name, "bad_response")
        with Session(self.engine) as session:
            for line, cosignature in valid:
                session.add(
                    AuditCosignature(
                        tree_size=latest.size,
                        root_hash=latest.root,
                        witness=name,
                        key_id=cosignature.key_id.hex(),
                        timestamp=cosignature.timestamp,
                        line=line,
                    )
                )
            try:
                session.commit()
            except IntegrityError:  # already stored (another gateway process pushed it)
                session.rollback()
        standing.size = latest.size
        standing.refused = None
        metrics.WITNESS_COSIGNATURES.inc()
        log.info("witness.cosigned", witness=name, tree_size=latest.size)
        return PushOutcome(name, "cosigned")


_REFUSAL_CODES = {
    400: "witness_request_malformed",
    403: "witness_unknown_key",
    404: "witness_unknown_log",
    422: "witness_bad_proof",
}


def _size_body(response: httpx.Response) -> int | None:
    if not response.headers.get("content-type", "").startswith(SIZE_CONTENT_TYPE):
        return None
    text = response.text
    if not text.endswith("\n") or not text[:-1].isdigit():
        return None
    return int(text[:-1])


# --- wiring -----------------------------------------------------------------------------


def note_source_for(signer: Signer) -> NoteSource:
    """The newest stored checkpoint as the C2SP signed note the audit API serves
    (``Signer.checkpoint_note``: deterministic, and only for a row whose own signature
    verifies)."""

    def latest(session: Session) -> CheckpointNote | None:
        checkpoint = query.latest_checkpoint(session)
        if checkpoint is None or checkpoint.tree_size == 0:
            return None
        note = signer.checkpoint_note(checkpoint)
        return CheckpointNote(checkpoint.tree_size, checkpoint.root_hash, note)

    return latest


def start_pusher(settings: Any, engine: Engine, signer: Signer) -> WitnessPusher | None:
    """The pusher for ``settings.audit_witnesses`` (None when there are none)."""
    if not settings.audit_witnesses:
        return None
    return WitnessPusher(
        engine,
        witnesses=[WitnessEndpoint.parse(entry) for entry in settings.audit_witnesses],
        quorum=settings.audit_witness_quorum,
        note_source=note_source_for(
            signer.with_origin(settings.audit_origin, settings.audit_key_name)
        ),
        interval=settings.audit_witness_push_seconds,
    ).start()
