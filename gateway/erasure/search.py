"""The erasure search: which stored file versions of a tenant mention a data subject.

Small tenants are searched inside the request that files it (``find_files``). Above
``erasure_inline_search_bytes`` the request is filed with status ``searching`` and a plan
(the distinct contents to read, in order), and ``ErasureSearcher``, a thread in every
gateway process, carries it out:

- one process holds a search at a time, under a lease it renews while it reads; a process
  that dies (kill -9) loses the lease and another, or the restarted one, resumes;
- progress (contents and lines read, of their totals) and the matches found so far are
  committed after every content read and about once a second within one, so a resumed
  search starts at the content it was reading, never at the beginning;
- the start, every resumption, the end (or the giving up) are audited; the end, the models
  flagged and the request turning ``open`` are one transaction.

The identifier is never logged. While a background search needs it, it is kept beside the
salt (``erasure_salts.pending_subject``, outside the chain, never returned) and cleared in
the transaction that ends the search.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from audit import chain
from audit.encoding import now_ts
from gateway.db import read_only
from gateway.erasure.models import ErasureRequest, ErasureSalt
from gateway.files.models import TrainingFile
from gateway.files.service import stored_content
from gateway.registry.service import flag_models
from gateway.runtime import Runtime
from ingest import find_subject_lines

log = structlog.get_logger()

SHOWN_LINES = 100
SEARCH_ACTOR = "system:erasure-search"
MAX_ATTEMPTS = 3
PROGRESS_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class Content:
    """One distinct stored content and the file versions that hold it."""

    files: list[dict[str, Any]]  # [{file_id, data_source, content_sha256}], in file order
    bytes: int
    lines: int

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "bytes": self.bytes, "lines": self.lines}


def plan(state: Runtime, *, tenant: str) -> list[Content]:
    """Every stored content of the tenant, once, in the order of its first file version,
    read from a snapshot of its own (no write lock is held)."""
    with Session(read_only(state.engine)) as session:
        rows = session.scalars(
            select(TrainingFile)
            .where(
                col(TrainingFile.tenant) == tenant,
                col(TrainingFile.content_deleted_at).is_(None),
                col(TrainingFile.content_sha256).is_not(None),
            )
            .order_by(col(TrainingFile.created_at), col(TrainingFile.id))
        ).all()
    by_path: dict[str, Content] = {}
    for row in rows:
        path = stored_content(state.settings, row)
        if path is None:
            continue
        entry = {
            "file_id": row.id,
            "data_source": row.data_source_id,
            "content_sha256": row.content_sha256,
        }
        content = by_path.get(str(path))
        if content is None:
            by_path[str(path)] = Content(
                files=[entry], bytes=int(row.content_bytes or row.bytes), lines=row.examples
            )
        else:
            content.files.append(entry)
    return list(by_path.values())


def _content_path(state: Runtime, content: dict[str, Any]) -> str | None:
    """Where a planned content is now (None: erased or gone since it was planned)."""
    with Session(read_only(state.engine)) as session:
        for entry in content["files"]:
            row = session.get(TrainingFile, entry["file_id"])
            path = stored_content(state.settings, row) if row is not None else None
            if path is not None and path.is_file():
                return str(path)
    return None


def _matches(content: dict[str, Any], lines: list[int]) -> list[dict[str, Any]]:
    return [
        {
            **entry,
            "matching_lines": len(lines),
            "line_numbers": lines[:SHOWN_LINES],
        }
        for entry in content["files"]
    ]


def find_files(state: Runtime, *, tenant: str, subject: str) -> dict[str, Any]:
    """The whole search, here and now: what a request below the background threshold
    carries from the moment it is filed."""
    matches: list[dict[str, Any]] = []
    contents = plan(state, tenant=tenant)
    for content in contents:
        path = _content_path(state, content.to_json())
        if path is None:
            continue
        found = find_subject_lines(path, subject)  # type: ignore[arg-type]
        if found.count:
            matches.extend(_matches(content.to_json(), found.lines))
    return {"files": matches, "scanned_files": len(contents)}


def new_search(contents: list[Content]) -> dict[str, Any]:
    """A background search's record before any of it has run."""
    return {
        "status": "queued",
        "contents": [content.to_json() for content in contents],
        "files_total": len(contents),
        "files_done": 0,
        "bytes_total": sum(content.bytes for content in contents),
        "bytes_scanned": 0,
        "lines_total": sum(content.lines for content in contents),
        "lines_scanned": 0,
        "matches": [],
        "attempts": 0,
        "resumed": 0,
        "started_at": None,
        "finished_at": None,
        "error": None,
    }


class _LeaseLost(Exception):
    """Another process holds the search now (or this one is stopping)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class ErasureSearcher:
    """Runs background erasure searches in one thread of this process."""

    def __init__(
        self,
        state: Runtime,
        *,
        poll_seconds: float,
        lease_seconds: float,
        owner: str | None = None,
    ) -> None:
        self.state = state
        self.poll_seconds = poll_seconds
        self.lease_ms = int(lease_seconds * 1000)
        self.owner = owner or f"{os.getpid()}-{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ErasureSearcher:
        self._thread = threading.Thread(target=self._loop, name="erasure-search", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        """A search was just filed: look now rather than at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # a broken database must not end the thread
                log.exception("erasure.search_loop_failed")
                worked = False
            if not worked:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    # -- one search ------------------------------------------------------------------

    def run_once(self) -> bool:
        """Claims one search that nobody holds and runs it to its end (or until the lease
        is lost); False when there was none."""
        request_id = self._claim()
        if request_id is None:
            return False
        try:
            self._run(request_id)
        except _LeaseLost:
            log.info("erasure.search_paused", request_id=request_id)
        except Exception as error:  # an unreadable file, a full disk: retried, then given up
            log.exception("erasure.search_attempt_failed", request_id=request_id)
            self._attempt_failed(request_id, error)
        return True

    def _claim(self) -> str | None:
        engine = self.state.engine
        now = _now_ms()
        with Session(engine) as session:
            candidate = session.scalars(
                select(ErasureRequest.id)
                .where(
                    col(ErasureRequest.status) == "searching",
                    or_(
                        col(ErasureRequest.search_owner).is_(None),
                        col(ErasureRequest.search_lease_until) < now,
                    ),
                )
                .order_by(col(ErasureRequest.requested_at), col(ErasureRequest.id))
                .limit(1)
            ).first()
            if candidate is None:
                return None
            taken = session.execute(
                update(ErasureRequest)
                .where(
                    col(ErasureRequest.id) == candidate,
                    col(ErasureRequest.status) == "searching",
                    or_(
                        col(ErasureRequest.search_owner).is_(None),
                        col(ErasureRequest.search_lease_until) < now,
                    ),
                )
                .values(search_owner=self.owner, search_lease_until=now + self.lease_ms)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return None
            request = session.get(ErasureRequest, candidate)
            assert request is not None and request.search is not None
            search = dict(request.search)
            first = search["status"] == "queued"
            search["status"] = "running"
            if first:
                search["started_at"] = now_ts()
            else:
                search["resumed"] = int(search.get("resumed") or 0) + 1
            request.search = search
            session.add(request)
            self._audit(
                session,
                request,
                "erasure.search_started" if first else "erasure.search_resumed",
                {
                    "files_total": search["files_total"],
                    "files_done": search["files_done"],
                    "bytes_total": search["bytes_total"],
                    "owner": self.owner,
                },
            )
            session.commit()
        self.state.notify_sequencer()
        log.info(
            "erasure.search_claimed", request_id=candidate, resumed=not first, owner=self.owner
        )
        return str(candidate)

    def _run(self, request_id: str) -> None:
        with Session(self.state.engine) as session:
            request = session.get(ErasureRequest, request_id)
            salt = session.get(ErasureSalt, request_id)
            assert request is not None and request.search is not None
            search = dict(request.search)
            subject = salt.pending_subject if salt is not None else None
        if not subject:
            raise RuntimeError("the subject is no longer held for this search")
        contents = search["contents"]
        for index in range(int(search["files_done"]), len(contents)):
            self._read_one(request_id, index, contents[index], subject)
        self._finish(request_id)

    def _read_one(self, request_id: str, index: int, content: dict[str, Any], subject: str) -> None:
        path = _content_path(self.state, content)
        seen = {"lines": 0, "bytes": 0}
        last = time.monotonic()

        def progress(lines: int, size: int) -> None:
            nonlocal last
            if self._stop.is_set():
                raise _LeaseLost
            seen["lines"] += lines
            seen["bytes"] += size
            if time.monotonic() - last >= PROGRESS_EVERY_SECONDS:
                last = time.monotonic()
                self._save(request_id, lambda s: _reading(s, seen))

        lines: list[int] = []
        if path is not None:
            lines = find_subject_lines(path, subject, progress=progress).lines  # type: ignore[arg-type]

        def done(search: dict[str, Any]) -> None:
            if int(search["files_done"]) != index:
                raise _LeaseLost  # someone else read it meanwhile
            search["files_done"] = index + 1
            search["done_bytes"] = int(search.get("done_bytes") or 0) + int(content["bytes"])
            search["done_lines"] = int(search.get("done_lines") or 0) + seen["lines"]
            search["bytes_scanned"] = search["done_bytes"]
            search["lines_scanned"] = search["done_lines"]
            if lines:
                search["matches"] = [*search["matches"], *_matches(content, lines)]

        self._save(request_id, done)

    def _save(self, request_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Applies ``change`` to the search record and renews the lease, if still ours."""
        with Session(self.state.engine) as session:
            request = self._held(session, request_id)
            search = dict(request.search or {})
            change(search)
            request.search = search
            request.search_lease_until = _now_ms() + self.lease_ms
            session.add(request)
            session.commit()

    def _held(self, session: Session, request_id: str) -> ErasureRequest:
        request = session.get(ErasureRequest, request_id, with_for_update=True)
        if (
            request is None
            or request.status != "searching"
            or request.search_owner != self.owner
            or self._stop.is_set()
        ):
            raise _LeaseLost
        return request

    def _finish(self, request_id: str) -> None:
        with Session(self.state.engine) as session:
            request = self._held(session, request_id)
            search = dict(request.search or {})
            matches = list(search["matches"])
            models = flag_models(
                session,
                tenant=request.tenant,
                file_ids=[match["file_id"] for match in matches],
                reason="erasure_requested",
                ref=request.id,
            )
            request.findings = {
                **(request.findings or {}),  # what the filing found (kept transcripts)
                "files": matches,
                "scanned_files": int(search["files_done"]),
                "models": models,
            }
            self._end(session, request, search, status="done")
            self._audit(
                session,
                request,
                "erasure.search_completed",
                {
                    "scanned_files": int(search["files_done"]),
                    "lines_scanned": int(search["lines_scanned"]),
                    "files": [
                        {k: m[k] for k in ("file_id", "content_sha256", "matching_lines")}
                        for m in matches
                    ],
                    "models": models,
                },
            )
            session.commit()
        self.state.notify_sequencer()
        log.info("erasure.search_completed", request_id=request_id, files=len(matches))

    def _attempt_failed(self, request_id: str, error: Exception) -> None:
        """Released for a retry after the lease; after MAX_ATTEMPTS the request opens with
        what was found so far, marked incomplete, so a person decides what to do."""
        with Session(self.state.engine) as session:
            try:
                request = self._held(session, request_id)
            except _LeaseLost:
                return
            search = dict(request.search or {})
            search["attempts"] = int(search.get("attempts") or 0) + 1
            search["error"] = type(error).__name__
            if search["attempts"] < MAX_ATTEMPTS:
                request.search = search
                request.search_owner = None
                request.search_lease_until = _now_ms() + self.lease_ms  # back off one lease
                session.add(request)
                session.commit()
                return
            matches = list(search["matches"])
            request.findings = {
                **(request.findings or {}),
                "files": matches,
                "scanned_files": int(search["files_done"]),
                "models": flag_models(
                    session,
                    tenant=request.tenant,
                    file_ids=[match["file_id"] for match in matches],
                    reason="erasure_requested",
                    ref=request.id,
                ),
                "incomplete": True,
            }
            self._end(session, request, search, status="failed")
            self._audit(
                session,
                request,
                "erasure.search_failed",
                {
                    "error": search["error"],
                    "attempts": search["attempts"],
                    "files_done": search["files_done"],
                    "files_total": search["files_total"],
                },
            )
            session.commit()
        self.state.notify_sequencer()

    def _end(
        self, session: Session, request: ErasureRequest, search: dict[str, Any], *, status: str
    ) -> None:
        search["status"] = status
        search["finished_at"] = now_ts()
        search["matches"] = []  # now in findings
        search["contents"] = []  # the plan is spent
        request.search = search
        request.status = "open"
        request.search_owner = None
        request.search_lease_until = None
        session.add(request)
        salt = session.get(ErasureSalt, request.id)
        if salt is not None:
            salt.pending_subject = None
            session.add(salt)

    def _audit(
        self, session: Session, request: ErasureRequest, action: str, details: dict[str, Any]
    ) -> None:
        chain.enqueue(
            session,
            actor=SEARCH_ACTOR,
            tenant=request.tenant,
            action=action,
            resource=f"erasure:{request.id}",
            decision="allow",
            details={"subject_hmac_sha256": request.subject_sha256, **details},
        )


def _reading(search: dict[str, Any], seen: dict[str, int]) -> None:
    search["bytes_scanned"] = int(search.get("done_bytes") or 0) + seen["bytes"]
    search["lines_scanned"] = int(search.get("done_lines") or 0) + seen["lines"]
