"""The model registry: listing base and fine-tuned models, retirement, deletion, adapter
downloads and the flags that revocations and erasure requests leave (and their clearing).
Never commits. (Promotion, a request then an approval, is gateway.registry.promotions';
lineage and the dossier, which read across the domains, are gateway.dossier's.)

Fine-tuned versions are tenant-scoped: another tenant's version answers 404 exactly like
one that does not exist. Rows are written by the job worker; this module only retires a
version, marks it deleted, and appends or clears flags."""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import structlog
from sqlmodel import Session, col, select

from audit.encoding import now_ts
from gateway.audit_api.service import record, record_allowed
from gateway.authz import Authorized, allows
from gateway.base_models import service as base_models
from gateway.base_models.models import RegisteredBaseModel
from gateway.db import after_commit
from gateway.errors import Conflict, Gone, NotFound
from gateway.pagination import visible_page
from gateway.registry.models import ModelVersion, PromotionRequest
from gateway.registry.schemas import FINE_TUNED_ID, FINE_TUNED_PREFIX
from gateway.runtime import Runtime
from gateway.security import Principal

log = structlog.get_logger()

VISIBLE_WITH = "read"
FLAG_REASONS = ("data_source_revoked", "erasure_requested")
TAR_BLOCK = 512
READ_CHUNK = 1 << 20
# An actor for audit events no request made (a flag raised without an authorized caller).
SYSTEM_ACTOR = "system:registry"


def policy_object(model_id: str) -> str:
    return f"model:{model_id}"


def is_fine_tuned(model_id: str) -> bool:
    return model_id.startswith(FINE_TUNED_PREFIX)


def kind_of(state: Runtime, principal: Principal, values: dict[str, str]) -> dict[str, str]:
    """The authorization resolver for GET /v1/models/{model_id}: a fine-tuned id is a
    `model:` object, anything else names a base model (`base:`). Decided on the id's form
    alone, so nothing about existence leaks to a caller the policy refuses."""
    return {"kind": "model" if is_fine_tuned(values.get("model_id", "")) else "base"}


# --- reading ----------------------------------------------------------------------------


def get_in_tenant(
    session: Session, *, tenant: str, model_id: str, for_update: bool = False
) -> ModelVersion:
    row = None
    if FINE_TUNED_ID.match(model_id):
        row = session.get(ModelVersion, model_id, with_for_update=for_update)
    if row is None or row.tenant != tenant:
        raise NotFound(f"model {model_id!r} not found", code="model_not_found", param="model_id")
    return row


def get_visible(
    session: Session, *, authorized: Authorized, model_id: str
) -> RegisteredBaseModel | ModelVersion:
    if is_fine_tuned(model_id):
        return get_in_tenant(session, tenant=authorized.principal.tenant, model_id=model_id)
    try:
        return base_models.get_visible(session, authorized=authorized, name=model_id)
    except NotFound:
        raise NotFound(
            f"model {model_id!r} not found", code="model_not_found", param="model_id"
        ) from None


def _fine_tuned_visible(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    status: str | None,
    flagged: bool | None,
    include_deleted: bool,
    after: str | None,
    limit: int,
    callable_only: bool = False,
) -> tuple[list[ModelVersion], bool]:
    principal = authorized.principal

    def wanted(row: ModelVersion) -> bool:
        if flagged is not None and bool(row.flags) != flagged:
            return False
        if callable_only:
            return _callable(state, principal, row)
        return allows(state.policy, principal, policy_object(row.id), VISIBLE_WITH)

    query = select(ModelVersion).where(col(ModelVersion.tenant) == principal.tenant)
    if not include_deleted:
        query = query.where(col(ModelVersion.deleted_at).is_(None))
    if status is not None:
        query = query.where(col(ModelVersion.status) == status)
    return visible_page(
        session,
        query,
        keys=[col(ModelVersion.id)],
        after=None if after is None else [after],
        visible=wanted,
        limit=limit,
    )


CALL_WITH = "infer"


def _callable(state: Runtime, principal: Principal, row: ModelVersion) -> bool:
    """What /v1/chat/completions would serve the caller (gateway.inference.resolve): `infer`
    on a production version, or on a candidate the caller asked for or may review."""
    if row.deleted_at is not None or row.flags or row.status == "retired":
        return False
    if not allows(state.policy, principal, policy_object(row.id), CALL_WITH):
        return False
    return row.status == "production" or (
        principal.sub == row.requested_by
        or allows(state.policy, principal, policy_object(row.id), "approve")
    )


def _row_id(row: RegisteredBaseModel | ModelVersion) -> str:
    return row.name if isinstance(row, RegisteredBaseModel) else row.id


def list_visible(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    status: str | None,
    flagged: bool | None,
    after: str | None,
    limit: int,
    include_deleted: bool = False,
    callable_only: bool = False,
) -> tuple[list[RegisteredBaseModel | ModelVersion], str | None]:
    """Base models and the tenant's fine-tuned versions the caller may read, in id order
    (base names never start with "ft:", so the two never collide). Base models carry no
    production state and no flags: a filter on those leaves them out. Deleted versions are
    left out (as OpenAI's list does) unless asked for. ``callable_only``: only what the
    caller may call through /v1/chat/completions (`infer`; active base models, servable
    versions)."""
    rows: list[RegisteredBaseModel | ModelVersion] = []
    more = False
    base_status = status if status in (None, "active", "retired") else "none"
    if callable_only:
        base_status = "active" if base_status in (None, "active") else "none"
        include_deleted = False
    if base_status != "none" and not flagged:
        bases, next_base = base_models.list_visible(
            session,
            state=state,
            authorized=authorized,
            status=base_status,
            after=after,
            limit=limit,
        )
        if callable_only:
            principal = authorized.principal
            bases = [
                b for b in bases if allows(state.policy, principal, f"base:{b.name}", CALL_WITH)
            ]
        rows.extend(bases)
        more = more or next_base is not None
    if status != "active":
        tuned, tuned_more = _fine_tuned_visible(
            session,
            state=state,
            authorized=authorized,
            status=status,
            flagged=flagged,
            include_deleted=include_deleted,
            after=after,
            limit=limit,
            callable_only=callable_only,
        )
        rows.extend(tuned)
        more = more or tuned_more
    rows.sort(key=_row_id)
    more = more or len(rows) > limit
    page = rows[:limit]
    return page, (_row_id(page[-1]) if more and page else None)


# --- promotion and retirement -----------------------------------------------------------


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def withdraw_pending(
    session: Session, *, authorized: Authorized, model_id: str, why: str
) -> list[str]:
    """Closes the model's pending promotion requests (it is no longer a candidate): each
    becomes withdrawn, decided by whoever retired or deleted the model. Their ids."""
    pending = session.scalars(
        select(PromotionRequest)
        .where(
            col(PromotionRequest.model_id) == model_id, col(PromotionRequest.status) == "pending"
        )
        .with_for_update()
    ).all()
    for request in pending:
        request.status = "withdrawn"
        request.decided_by = authorized.principal.sub
        request.decided_at = int(time.time())
        request.decision_reason = why
        request.decision_policy_version = authorized.policy_version
        session.add(request)
    return [request.id for request in pending]


def retire(session: Session, *, authorized: Authorized, model_id: str) -> ModelVersion:
    principal = authorized.principal
    row = get_in_tenant(session, tenant=principal.tenant, model_id=model_id, for_update=True)
    if row.status == "retired":
        raise Conflict("model is already retired", code="already_retired")
    previous = row.status
    row.status = "retired"
    row.retired_by = principal.sub
    row.retired_at = int(time.time())
    session.add(row)
    withdrawn = withdraw_pending(session, authorized=authorized, model_id=row.id, why="retired")
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="model.retired",
        details={
            "model_id": row.id,
            "previous_status": previous,
            "adapter_sha256": row.adapter_sha256,
            "withdrawn_requests": withdrawn,
        },
    )
    log.info("model.retired", model_id=row.id, previous_status=previous)
    return row


# --- flags ------------------------------------------------------------------------------


def _descendants(rows: Sequence[ModelVersion], roots: set[str]) -> dict[str, str]:
    """model id -> the ancestor through which it is affected, for every version built on
    top of an affected one (an adapter trained from a parent carries the parent's data)."""
    children: dict[str, list[str]] = {}
    for row in rows:
        if row.parent_model_id is not None:
            children.setdefault(row.parent_model_id, []).append(row.id)
    inherited: dict[str, str] = {}
    frontier = sorted(roots)
    while frontier:
        parent = frontier.pop()
        for child in children.get(parent, ()):
            if child not in roots and child not in inherited:
                inherited[child] = parent
                frontier.append(child)
    return inherited


def flag_models(
    session: Session,
    *,
    tenant: str,
    data_source_id: str | None = None,
    file_ids: Iterable[str] = (),
    reason: str,
    ref: str,
    authorized: Authorized | None = None,
) -> list[str]:
    """Flags every version of the tenant trained on the data source or on one of the
    files, and every version fine-tuned from one of those; returns their ids (sorted).
    A version already flagged for the same reason and ref is listed but not flagged again.
    Each new flag is audited as `model.flagged`, under the caller's decision when one is
    given."""
    if reason not in FLAG_REASONS:
        raise ValueError(f"unknown flag reason {reason!r}")
    wanted_files = set(file_ids)
    if data_source_id is None and not wanted_files:
        return []
    rows = session.scalars(
        select(ModelVersion)
        .where(col(ModelVersion.tenant) == tenant)
        .order_by(col(ModelVersion.id))
        .with_for_update()
    ).all()
    direct: dict[str, str] = {}
    for row in rows:
        for entry in row.data_files:
            if data_source_id is not None and entry.get("data_source") == data_source_id:
                direct[row.id] = f"data_source:{data_source_id}"
                break
            if entry.get("file_id") in wanted_files:
                direct[row.id] = f"file:{entry['file_id']}"
                break
    via = {
        **{child: f"parent:{parent}" for child, parent in _descendants(rows, set(direct)).items()},
        **direct,
    }
    at = now_ts()
    for row in rows:
        if row.id not in via:
            continue
        seen = (*row.flags, *row.cleared_flags)  # a cleared flag is not raised again
        if any(flag.get("reason") == reason and flag.get("ref") == ref for flag in seen):
            continue
        flag = {"reason": reason, "ref": ref, "at": at, "via": via[row.id]}
        row.flags = [*row.flags, flag]  # a new list, so the JSON column sees the change
        session.add(row)
        details = {
            "model_id": row.id,
            "reason": reason,
            "ref": ref,
            "via": via[row.id],
            "status": row.status,
        }
        if authorized is not None:
            record_allowed(
                session,
                authorized=authorized,
                action="model.flagged",
                resource=policy_object(row.id),
                details=details,
            )
        else:
            record(
                session,
                actor=SYSTEM_ACTOR,
                tenant=tenant,
                action="model.flagged",
                resource=policy_object(row.id),
                decision="allow",
                details=details,
            )
    session.flush()
    flagged = sorted(via)
    if flagged:
        log.info("model.flagged", reason=reason, ref=ref, models=len(flagged))
    return flagged


def clear_flags(
    session: Session, *, authorized: Authorized, model_id: str, reason: str, ref: str | None
) -> ModelVersion:
    """A compliance officer's review clears the model's flags (only those of ``ref`` when
    given): each moves to ``cleared_flags`` with who, when and why, and is audited with the
    reason's sha256 (the text stays on the row)."""
    principal = authorized.principal
    row = get_in_tenant(session, tenant=principal.tenant, model_id=model_id, for_update=True)
    clearing = [flag for flag in row.flags if ref is None or flag.get("ref") == ref]
    if not clearing:
        raise Conflict(
            "the model has no such flag" if ref is not None else "the model is not flagged",
            code="not_flagged",
            details={"ref": ref, "flags": len(row.flags)},
        )
    at = now_ts()
    reason_sha256 = _sha256_text(reason)
    cleared = [
        {
            **flag,
            "cleared_by": principal.sub,
            "cleared_at": at,
            "clear_reason": reason,
            "clear_reason_sha256": reason_sha256,
        }
        for flag in clearing
    ]
    # new lists, so the JSON columns see the change
    row.flags = [flag for flag in row.flags if flag not in clearing]
    row.cleared_flags = [*row.cleared_flags, *cleared]
    session.add(row)
    session.flush()
    for flag in clearing:
        record_allowed(
            session,
            authorized=authorized,
            action="model.flag_cleared",
            details={
                "model_id": row.id,
                "reason": flag.get("reason"),
                "ref": flag.get("ref"),
                "via": flag.get("via"),
                "clear_reason_sha256": reason_sha256,
                "flags_left": len(row.flags),
            },
        )
    log.info("model.flag_cleared", model_id=row.id, cleared=len(clearing), left=len(row.flags))
    return row


# --- deleting -----------------------------------------------------------------------------


def _remove_adapter(directory: Path, files: list[dict[str, Any]], model_id: str) -> None:
    """After the commit: the recorded adapter files go, then the folders they leave empty.
    A file that cannot be removed is logged (the row already says the bytes are gone)."""
    parents: set[Path] = set()
    for entry in files:
        relative = PurePosixPath(str(entry.get("relative_path", "")))
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            continue
        path = directory / relative
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.exception("model.adapter_not_removed", model_id=model_id, file=str(relative))
        parents.update(p for p in path.parents if p.is_relative_to(directory))
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    log.info("model.adapter_removed", model_id=model_id, files=len(files))


def delete_model(
    session: Session, *, state: Runtime, authorized: Authorized, model_id: str
) -> ModelVersion:
    """OpenAI's models.delete, with governance semantics: the adapter bytes go (after the
    commit), the version, its lineage and its dossier stay, marked deleted. A production
    model must be retired first; a candidate is retired with the delete; base models are
    not deleted this way. The audit event carries the hashes of what was removed."""
    principal = authorized.principal
    if not is_fine_tuned(model_id):
        get_visible(session, authorized=authorized, model_id=model_id)  # 404 when unknown
        raise Conflict(
            "a base model is not deleted here: retire it (POST /v1/base_models/{name}/retire)",
            code="base_model_not_deletable",
        )
    row = get_in_tenant(session, tenant=principal.tenant, model_id=model_id, for_update=True)
    if row.deleted_at is not None:
        raise Conflict("the model was already deleted", code="model_deleted")
    if row.status == "production":
        raise Conflict(
            "the model is in production: retire it first",
            code="model_in_production",
            details={"status": row.status},
        )
    directory = adapter_directory(state.settings, row)
    previous = row.status
    now = int(time.time())
    if row.status == "candidate":
        row.status, row.retired_by, row.retired_at = "retired", principal.sub, now
    row.deleted_at, row.deleted_by = now, principal.sub
    session.add(row)
    withdrawn = withdraw_pending(session, authorized=authorized, model_id=row.id, why="deleted")
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="model.deleted",
        details={
            "model_id": row.id,
            "previous_status": previous,
            "adapter_sha256": row.adapter_sha256,
            "removed": [
                {key: entry.get(key) for key in ("relative_path", "sha256", "bytes")}
                for entry in row.adapter_files
            ],
            "withdrawn_requests": withdrawn,
        },
    )
    files = list(row.adapter_files)
    after_commit(session, lambda: _remove_adapter(directory, files, model_id))
    log.info("model.deleted", model_id=row.id, previous_status=previous)
    return row


# --- adapter download -------------------------------------------------------------------


@dataclass
class AdapterDownload:
    filename: str
    adapter_sha256: str
    chunks: Iterator[bytes]


def adapter_directory(settings: Any, row: ModelVersion) -> Path:
    """Where the version's files are: its recorded directory, which must lie inside the
    artifact store (a relative one is taken relative to it)."""
    store = Path(settings.artifact_dir).resolve()
    directory = Path(row.artifact_dir)
    if not directory.is_absolute():
        directory = store / directory
    directory = directory.resolve()
    if not directory.is_relative_to(store):
        log.error("model.artifact_outside_store", model_id=row.id)
        raise Conflict(
            "the model's artifacts are not in the artifact store", code="adapter_unavailable"
        )
    return directory


def _open_verified(directory: Path, row: ModelVersion) -> list[tuple[str, IO[bytes], int]]:
    """Opens every recorded adapter file and checks its bytes against the recorded sha256
    before a byte is sent; the stream then reads the same open files, so what was checked
    is what goes out."""
    opened: list[tuple[str, IO[bytes], int]] = []
    try:
        for entry in row.adapter_files:
            relative = PurePosixPath(str(entry.get("relative_path", "")))
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise Conflict(
                    "the model records an adapter file outside its directory",
                    code="adapter_unavailable",
                )
            path = (directory / relative).resolve()
            if not path.is_relative_to(directory) or not path.is_file():
                log.error("model.adapter_file_missing", model_id=row.id, file=str(relative))
                raise Gone(
                    "an adapter file is missing from the artifact store",
                    code="adapter_missing",
                    details={"file": str(relative)},
                )
            handle = open(path, "rb")  # noqa: SIM115 (closed by the stream or below)
            opened.append((relative.as_posix(), handle, 0))
            digest = hashlib.sha256()
            size = 0
            while chunk := handle.read(READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            if digest.hexdigest() != entry.get("sha256"):
                log.error("model.adapter_hash_mismatch", model_id=row.id, file=str(relative))
                raise Conflict(
                    "an adapter file no longer matches its recorded sha256",
                    code="adapter_hash_mismatch",
                    details={"file": str(relative)},
                )
            handle.seek(0)
            opened[-1] = (relative.as_posix(), handle, size)
    except BaseException:
        for _, each, _ in opened:
            each.close()
        raise
    return opened


def _tar_stream(files: list[tuple[str, IO[bytes], int]], mtime: int) -> Iterator[bytes]:
    """A ustar/pax archive written block by block: memory stays at one read chunk however
    large the adapter."""
    try:
        for name, handle, size in files:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mtime = mtime
            info.mode = 0o644
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            sent = 0
            while sent < size and (chunk := handle.read(min(READ_CHUNK, size - sent))):
                sent += len(chunk)
                yield chunk
            if sent != size:  # the file shrank under us: end the archive broken, loudly
                raise OSError(f"{name} shrank while it was sent")
            if size % TAR_BLOCK:
                yield b"\0" * (TAR_BLOCK - size % TAR_BLOCK)
        yield b"\0" * (2 * TAR_BLOCK)
    finally:
        for _, handle, _ in files:
            handle.close()


def download_name(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in model_id) + ".tar"


def open_adapter(
    session: Session, *, state: Runtime, authorized: Authorized, model_id: str
) -> AdapterDownload:
    row = get_in_tenant(session, tenant=authorized.principal.tenant, model_id=model_id)
    if row.deleted_at is not None:
        raise Gone("the model's adapter was deleted", code="model_deleted")
    if row.status == "retired":
        raise Conflict("the model is retired", code="model_retired")
    files = _open_verified(adapter_directory(state.settings, row), row)
    try:
        record_allowed(
            session,
            authorized=authorized,
            action="model.adapter_downloaded",
            details={
                "model_id": row.id,
                "adapter_sha256": row.adapter_sha256,
                "files": len(files),
                "bytes": sum(size for _, _, size in files),
            },
        )
    except BaseException:
        for _, handle, _ in files:
            handle.close()
        raise
    return AdapterDownload(
        filename=download_name(row.id),
        adapter_sha256=row.adapter_sha256,
        chunks=_tar_stream(files, mtime=row.created_at),
    )
