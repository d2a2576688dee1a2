"""Upload-side processing of one training file, in one streaming pass.

Bytes arrive in any block size (``IngestSession.feed`` or ``ingest`` on a binary stream).
Each block is counted against the size limit *before* it touches the disk, hashed
(SHA-256 of the raw bytes) and appended to a temporary file in ``dest_dir``. Whole lines are
cut into chunks and scanned (``scanner.scan_chunk``) in this process or, with a
``ScanPool``, in worker processes that read each chunk back from the temporary file (the
page cache) while this process reads the next; results are merged strictly in file order.
At the end the file is renamed to its content address ``dest_dir/<sha256>`` (the client's
filename is never used), its fingerprint written beside it, and with
``pii_action="redact"`` a redacted derivative is stored the same way with its lineage.

Any failure, or a refused file, leaves nothing behind in ``dest_dir`` (unless
``keep_rejected``): temporary files are removed and nothing is renamed into place.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

import numpy as np
import structlog

from ingest import conflicts, dedup, pii, structure
from ingest.formats import CHAT, FaultCode, LineFault
from ingest.report import PROCESSED, Datasheet, DatasheetBuilder
from ingest.scanner import (
    ChunkResult,
    ScanSettings,
    scan_chunk,
    scan_file_range,
    split_lines,
)
from ingest.tokens import APPROXIMATION, BpeTokenCounter

log = structlog.get_logger()

PiiAction = Literal["block", "redact", "allow"]
PII_ACTIONS: Final = ("block", "redact", "allow")
GIB: Final = 1 << 30
MIB: Final = 1 << 20
_DISK_CHECK_EVERY: Final = 64 * MIB


class IngestError(Exception):
    """A refused upload. ``code`` is machine-readable; the message never quotes content."""

    code = "ingest_failed"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class FileTooLarge(IngestError):
    """Over ``IngestLimits.max_bytes``: HTTP 413."""

    code = "file_too_large"


class InsufficientStorage(IngestError):
    """The store would drop below ``IngestLimits.min_free_bytes``: HTTP 507."""

    code = "insufficient_storage"


class InvalidIngestSettings(IngestError):
    code = "invalid_ingest_settings"


@dataclass(frozen=True)
class IngestLimits:
    max_bytes: int = GIB
    max_line_bytes: int = MIB
    min_free_bytes: int = 256 * MIB
    chunk_bytes: int = 4 * MIB


@dataclass(frozen=True)
class ReportSettings:
    near_duplicate_threshold: float = dedup.DEFAULT_THRESHOLD
    short_answer_chars: int = 8
    tokenizer_file: Path | None = None  # a tokenizer.json for exact counts (slow)
    conflict_threshold: float = conflicts.DEFAULT_THRESHOLD  # prompt similarity


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    bytes: int
    path: Path
    fingerprint: Path


@dataclass(frozen=True)
class RedactionLineage:
    input_sha256: str
    output_sha256: str
    recogniser_set: str
    settings: dict[str, Any]
    redacted_lines: int
    findings: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_sha256": self.input_sha256,
            "output_sha256": self.output_sha256,
            "recogniser_set": self.recogniser_set,
            "settings": dict(self.settings),
            "redacted_lines": self.redacted_lines,
            "findings": dict(self.findings),
        }


@dataclass(frozen=True)
class IngestResult:
    sha256: str
    bytes: int
    status: str  # "processed" | "error", as OpenAI's file object has it
    status_details: str | None
    report: Datasheet
    stored: StoredFile | None  # None when refused (unless keep_rejected)
    redacted: StoredFile | None = None
    lineage: RedactionLineage | None = None


def content_path(dest_dir: Path, sha256: str) -> Path:
    return Path(dest_dir) / sha256


class ScanPool:
    """Worker processes for chunk scans, shared by concurrent sessions (create it once, at
    start-up: spawning costs a second or two). ``spawn``, not ``fork``: the server is
    multi-threaded."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, chunk: bytes, first_line: int, settings: ScanSettings, prefer: str) -> Future:
        return self._executor.submit(scan_chunk, chunk, first_line, settings, prefer)

    def submit_range(
        self,
        path: Path,
        offset: int,
        length: int,
        first_line: int,
        settings: ScanSettings,
        prefer: str,
    ) -> Future:
        return self._executor.submit(
            scan_file_range, str(path), offset, length, first_line, settings, prefer
        )

    def warm(self) -> None:
        """Start every worker and import the scanner there before the first upload."""
        probe = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
        futures = [self.submit(probe, 1, ScanSettings(), CHAT) for _ in range(self.workers * 2)]
        for future in futures:
            future.result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ScanPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass
class _Output:
    """A file being written: temporary path, running hash, size, fingerprint rows."""

    directory: Path
    fd: int = -1
    path: Path | None = None
    hasher: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    fingerprint: dedup.FingerprintWriter | None = None
    sealed_fingerprint: Path | None = None

    def open(self) -> _Output:
        self.fd, name = tempfile.mkstemp(dir=self.directory, prefix=".upload-")
        self.path = Path(name)
        self.fingerprint = dedup.FingerprintWriter(self.directory)
        return self

    def write(self, data: bytes | memoryview) -> None:
        self.hasher.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def seal(self) -> StoredFile:
        """fsync and lay out the fingerprint, both still under temporary names."""
        assert self.path is not None and self.fingerprint is not None
        os.fsync(self.fd)
        self.close()
        fd, name = tempfile.mkstemp(dir=self.directory, prefix=".fp-sealed-")
        os.close(fd)
        self.sealed_fingerprint = Path(name)
        self.fingerprint.finish(self.sealed_fingerprint)
        sha = self.hasher.hexdigest()
        return StoredFile(
            sha256=sha, bytes=self.size, path=self.path, fingerprint=self.sealed_fingerprint
        )

    def store(self) -> StoredFile:
        """Rename the sealed file and fingerprint to the content address. An identical file
        stored earlier is replaced by identical bytes."""
        sealed = self.seal() if self.sealed_fingerprint is None else self._sealed()
        final = content_path(self.directory, sealed.sha256)
        fingerprint = dedup.fingerprint_path(final)
        os.replace(sealed.fingerprint, fingerprint)
        os.replace(sealed.path, final)
        self.path = self.sealed_fingerprint = None
        return StoredFile(
            sha256=sealed.sha256, bytes=self.size, path=final, fingerprint=fingerprint
        )

    def _sealed(self) -> StoredFile:
        assert self.path is not None and self.sealed_fingerprint is not None
        return StoredFile(
            sha256=self.hasher.hexdigest(),
            bytes=self.size,
            path=self.path,
            fingerprint=self.sealed_fingerprint,
        )

    def discard(self) -> None:
        self.close()
        for path in (self.path, self.sealed_fingerprint):
            if path is not None:
                path.unlink(missing_ok=True)
        self.path = self.sealed_fingerprint = None
        if self.fingerprint is not None:
            self.fingerprint.discard()


class IngestSession:
    """Feed bytes, then ``finish()``; ``abort()`` (or leaving a ``with`` block on an
    exception) removes everything written so far."""

    def __init__(
        self,
        *,
        dest_dir: Path,
        pii_action: PiiAction,
        limits: IngestLimits = IngestLimits(),
        report: ReportSettings = ReportSettings(),
        pool: ScanPool | None = None,
        declared_size: int | None = None,
        keep_rejected: bool = False,
    ) -> None:
        if pii_action not in PII_ACTIONS:
            raise InvalidIngestSettings("pii_action must be block, redact or allow")
        self.dest_dir = Path(dest_dir)
        self.pii_action = pii_action
        self.limits = limits
        self.report_settings = report
        self.pool = pool
        self.keep_rejected = keep_rejected
        if declared_size is not None and declared_size > limits.max_bytes:
            raise FileTooLarge(
                "file is larger than the upload limit",
                limit=limits.max_bytes,
                declared=declared_size,
            )
        self.dest_dir.mkdir(parents=True, exist_ok=True)
        self._check_free_space(declared_size or 0)
        self._started = time.perf_counter()
        self._settings = ScanSettings(
            max_line_bytes=limits.max_line_bytes,
            pii_action=pii_action,
            short_answer_chars=report.short_answer_chars,
            tokenizer_file=report.tokenizer_file,
        )
        self._builder = DatasheetBuilder(
            pii_action=pii_action, scan_pii=True, recogniser_set=pii.RECOGNISER_SET_VERSION
        )
        self._raw = _Output(self.dest_dir)
        self._prompts: dedup.TemporaryFingerprint | None = None  # conflicts: opened with _raw
        self._answers = structure.Observed()
        self._redacted = _Output(self.dest_dir) if pii_action == "redact" else None
        self._buffer = bytearray()
        self._next_line = 1
        self._skipping_long_line = False
        self._since_disk_check = 0
        self._pending: deque[tuple[Future | ChunkResult | LineFault, bytes]] = deque()
        self._redacted_line_count = 0
        self._closed = False
        try:
            self._raw.open()
            self._prompts = dedup.TemporaryFingerprint(self.dest_dir)
            if self._redacted is not None:
                self._redacted.open()
        except BaseException:
            self.abort()
            raise

    # --- input -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("this upload is already finished or aborted")
        try:
            received = self._raw.size + len(data)
            if received > self.limits.max_bytes:
                raise FileTooLarge(
                    "file is larger than the upload limit",
                    limit=self.limits.max_bytes,
                    received_at_least=received,
                )
            self._since_disk_check += len(data)
            if self._since_disk_check >= _DISK_CHECK_EVERY:
                self._since_disk_check = 0
                self._check_free_space(len(data))
            try:
                self._raw.write(data)
            except OSError as exc:
                raise InsufficientStorage("the store could not take the file") from exc
            self._take(data)
        except BaseException as exc:
            self._refused(exc)
            raise

    def _take(self, data: bytes) -> None:
        if self._skipping_long_line:
            newline = data.find(b"\n")
            if newline < 0:
                return
            self._skipping_long_line = False
            data = data[newline + 1 :]
        self._buffer += data
        if len(self._buffer) >= self.limits.chunk_bytes:
            cut = self._buffer.rfind(b"\n")
            if cut >= 0:
                self._emit(cut + 1, self._raw.size - len(self._buffer))
                del self._buffer[: cut + 1]
        if len(self._buffer) > self.limits.max_line_bytes and b"\n" not in self._buffer:
            limit = self.limits.max_line_bytes
            fault = LineFault(
                self._next_line, FaultCode.LINE_TOO_LONG, f"line is over the limit of {limit} bytes"
            )
            self._pending.append((fault, b""))
            self._next_line += 1
            self._buffer.clear()
            self._skipping_long_line = True
            self._drain(block=False)

    def _emit(self, length: int, offset: int) -> None:
        """Scan the buffer's first ``length`` bytes, found at ``offset`` in the raw file
        (already written there). A pool's workers read them from the file, so they are
        copied out of the buffer only to scan here or to write the redacted copy."""
        first_line = self._next_line
        ends_with_newline = self._buffer[length - 1] == ord("\n")
        self._next_line += self._buffer.count(b"\n", 0, length) + (0 if ends_with_newline else 1)
        prefer = self._builder.format or CHAT
        chunk = b""
        if self.pool is None or self._redacted is not None:
            with memoryview(self._buffer) as view:
                chunk = bytes(view[:length])
        kept = chunk if self._redacted is not None else b""  # the redacted copy needs it
        if self.pool is None:
            self._pending.append((scan_chunk(chunk, first_line, self._settings, prefer), kept))
        else:
            assert self._raw.path is not None
            future = self.pool.submit_range(
                self._raw.path, offset, length, first_line, self._settings, prefer
            )
            self._pending.append((future, kept))
        self._drain(block=False)

    def _drain(self, *, block: bool) -> None:
        in_flight = 2 * (self.pool.workers if self.pool else 1)
        while self._pending:
            head, chunk = self._pending[0]
            waiting = isinstance(head, Future) and not head.done()
            if waiting and not block and len(self._pending) <= in_flight:
                return
            self._pending.popleft()
            if isinstance(head, LineFault):
                self._builder.add_fault(head)
                self._builder.add_lines(1)
                self._raw_fingerprint_rows(np.zeros(1, "<u8"), None, 1)
                if self._redacted is not None:
                    assert self._redacted.fingerprint is not None
                    self._redacted.fingerprint.append(np.zeros(1, "<u8"), _empty_rows(1))
                continue
            result = head.result() if isinstance(head, Future) else head
            self._merge(result, chunk)

    def _raw_fingerprint_rows(
        self,
        exact: np.ndarray,
        rows: np.ndarray | None,
        count: int,
        prompts: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        assert self._raw.fingerprint is not None and self._prompts is not None
        self._raw.fingerprint.append(exact, rows if rows is not None else _empty_rows(count))
        if prompts is None:
            self._prompts.append(np.zeros(count, "<u8"), _empty_rows(count))
        else:
            self._prompts.append(*prompts)

    def _merge(self, result: ChunkResult, chunk: bytes) -> None:
        accepted = self._builder.add(result)
        exact = np.where(accepted, result.exact, 0).astype("<u8")
        rows = result.signatures
        if not accepted.all():
            rows = rows.copy()
            rows[~accepted] = dedup.EMPTY_BIN
        prompts = None
        if result.answer_keys is not None and result.prompt_signatures is not None:
            prompts = (np.where(accepted, result.answer_keys, 0), result.prompt_signatures)
        self._raw_fingerprint_rows(exact, rows, result.line_count, prompts)
        self._answers.merge(result.answers)
        if self._redacted is None:
            return
        assert self._redacted.fingerprint is not None
        if not result.redacted_lines:
            self._redacted.write(chunk)
            self._redacted.fingerprint.append(exact, rows)
            return
        lines = split_lines(chunk)
        red_exact, red_rows = exact.copy(), rows.copy()
        for index, line in result.redacted_lines.items():
            lines[index] = line
            red_exact[index] = result.redacted_exact[index]
            red_rows[index] = result.redacted_signatures[index]
        self._redacted_line_count += len(result.redacted_lines)
        self._redacted.write(b"\n".join(lines) + (b"\n" if chunk.endswith(b"\n") else b""))
        self._redacted.fingerprint.append(red_exact, red_rows)

    # --- output ----------------------------------------------------------------------------

    def finish(self) -> IngestResult:
        if self._closed:
            raise RuntimeError("this upload is already finished or aborted")
        try:
            return self._finish()
        except BaseException as exc:
            self._refused(exc)
            raise

    def _finish(self) -> IngestResult:
        if self._buffer and not self._skipping_long_line:
            self._emit(len(self._buffer), self._raw.size - len(self._buffer))
            self._buffer.clear()
        self._drain(block=True)
        sealed = self._raw.seal()
        fingerprint = dedup.Fingerprint(sealed.fingerprint)
        threshold = self.report_settings.near_duplicate_threshold
        report = self._builder.finish(
            sha256=sealed.sha256,
            size=sealed.bytes,
            tokenizer=self._tokenizer_name(),
            exact_duplicates=dedup.exact_duplicates(fingerprint.exact()),
            near_duplicates=dedup.near_duplicates(fingerprint, threshold=threshold),
            near_duplicate_threshold=threshold,
            short_answer_chars=self.report_settings.short_answer_chars,
            conflicts=self._conflicts(),
            structure=structure.infer(self._answers),
        )
        stored = redacted = lineage = None
        if report.status == PROCESSED or self.keep_rejected:
            stored = self._raw.store()
        else:
            self._raw.discard()
        if self._redacted is not None:
            if stored is not None and report.status == PROCESSED and self._redacted_line_count:
                redacted = self._redacted.store()
                lineage = RedactionLineage(
                    input_sha256=report.sha256,
                    output_sha256=redacted.sha256,
                    recogniser_set=pii.RECOGNISER_SET_VERSION,
                    settings={
                        "pii_action": "redact",
                        "placeholder": "[KIND]",
                        "kinds": list(pii.KINDS),
                    },
                    redacted_lines=self._redacted_line_count,
                    findings=dict(self._builder.pii_findings),
                )
            else:  # refused, or nothing to redact: the stored file is already the clean one
                self._redacted.discard()
        self._closed = True
        result = IngestResult(
            sha256=report.sha256,
            bytes=report.bytes,
            status=report.status,
            status_details=_status_details(report),
            report=report,
            stored=stored,
            redacted=redacted,
            lineage=lineage,
        )
        log.info(
            "dataset.ingested",
            sha256=report.sha256,
            bytes=report.bytes,
            lines=report.lines,
            examples=report.examples,
            status=report.status,
            faults=report.fault_count,
            pii_findings=report.pii.findings if report.pii else 0,
            pii_action=self.pii_action,
            redacted_sha256=redacted.sha256 if redacted else None,
            seconds=round(time.perf_counter() - self._started, 3),
        )
        return result

    def _conflicts(self) -> conflicts.Conflicts:
        """Conflict groups from the prompt fingerprint (in memory for most files, else a
        temporary file), which is then dropped."""
        assert self._prompts is not None
        prompts, self._prompts = self._prompts, None
        try:
            return conflicts.find(prompts.open(), threshold=self.report_settings.conflict_threshold)
        finally:
            prompts.discard()

    def abort(self) -> None:
        """Remove everything this session wrote; safe to call more than once."""
        self._closed = True
        if self._prompts is not None:
            self._prompts.discard()
            self._prompts = None
        for head, _chunk in self._pending:
            if isinstance(head, Future):
                head.cancel()
        self._pending.clear()
        self._raw.discard()
        if self._redacted is not None:
            self._redacted.discard()

    def _refused(self, exc: BaseException) -> None:
        self.abort()
        if isinstance(exc, IngestError):
            log.info("dataset.refused", code=exc.code, bytes_received=self._raw.size)

    def _check_free_space(self, incoming: int) -> None:
        free = shutil.disk_usage(self.dest_dir).free
        if free - incoming < self.limits.min_free_bytes:
            raise InsufficientStorage(
                "not enough free space in the store for this upload",
                reserve=self.limits.min_free_bytes,
            )

    def _tokenizer_name(self) -> str:
        if self.report_settings.tokenizer_file is None:
            return APPROXIMATION
        return BpeTokenCounter(self.report_settings.tokenizer_file).name

    def __enter__(self) -> IngestSession:
        return self

    def __exit__(self, exc_type: object, *_rest: object) -> None:
        if exc_type is not None and not self._closed:
            self.abort()


def _empty_rows(count: int) -> np.ndarray:
    return np.full((count, dedup.NUM_BINS), dedup.EMPTY_BIN, dtype=np.uint16)


def _status_details(report: Datasheet) -> str | None:
    if report.status == PROCESSED:
        return None
    first = report.faults[0] if report.faults else None
    where = f"; first at line {first.line}: {first.code}" if first else ""
    return f"{report.fault_count} fault(s){where}"


def ingest(
    source: BinaryIO,
    *,
    dest_dir: Path,
    pii_action: PiiAction,
    limits: IngestLimits = IngestLimits(),
    report: ReportSettings = ReportSettings(),
    pool: ScanPool | None = None,
    declared_size: int | None = None,
    keep_rejected: bool = False,
    read_bytes: int = MIB,
) -> IngestResult:
    """Validate, hash, store, scan and describe one uploaded file read from ``source``."""
    with IngestSession(
        dest_dir=dest_dir,
        pii_action=pii_action,
        limits=limits,
        report=report,
        pool=pool,
        declared_size=declared_size,
        keep_rejected=keep_rejected,
    ) as session:
        while block := source.read(read_bytes):
            session.feed(block)
        return session.finish()
