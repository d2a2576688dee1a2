"""`tunegate models ...`: base and fine-tuned models, their lineage and dossier, the
adapter download (checked against the sha256 the gateway states), promotion and
retirement."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from gateway.cli import output, progress
from gateway.cli.app import EXIT_FAILED, app
from gateway.cli.context import JsonFlag, client, emit, wants_json
from gateway.cli.promotions import show as show_request

models_app = typer.Typer(
    help="Models: list, lineage, dossier, adapter download, promote, clear-flag, retire, delete.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

WEIGHTS_NAME = "adapter_model.safetensors"  # the file whose sha256 is the adapter's identity
MODEL_COLUMNS = [
    ("id", "id"),
    ("kind", "kind"),
    ("status", "status"),
    ("base_model", "base"),
    ("verdict", "verdict"),
    ("purpose", "purpose"),
    ("created", "created"),
]
MODEL_FIELDS = [
    "id",
    "kind",
    "status",
    "base_model",
    "base_manifest_sha256",
    "parent_model_id",
    "job_id",
    "purpose",
    "requested_by",
    "verdict",
    "adapter_sha256",
    "data_files",
    "flags",
    "promoted_by",
    "promoted_at",
    "retired_by",
    "retired_at",
    "created",
]


@models_app.command("list")
def list_models(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="candidate, production, retired (fine-tuned); active")
    ] = None,
    flagged: Annotated[bool, typer.Option("--flagged", help="only flagged versions")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    after: Annotated[str | None, typer.Option(help="cursor from the page before")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Base models and your tenant's fine-tuned versions."""
    page = client(ctx).get(
        "/v1/models",
        params={
            "status": status,
            "flagged": "true" if flagged else None,
            "limit": limit,
            "after": after,
        },
    )

    def human(data: dict[str, Any]) -> None:
        output.table(data.get("data", []), MODEL_COLUMNS)
        if data.get("next_after"):
            output.stderr.print(f"more: --after {escape(str(data['next_after']))}")

    emit(ctx, page, json_flag=json_flag, human=human)


@models_app.command("get")
def get_model(ctx: typer.Context, model_id: str, json_flag: JsonFlag = False) -> None:
    """One model."""
    model = client(ctx).get(f"/v1/models/{model_id}")
    emit(ctx, model, json_flag=json_flag, human=lambda m: output.fields(m, MODEL_FIELDS))


@models_app.command("lineage")
def lineage(ctx: typer.Context, model_id: str, json_flag: JsonFlag = False) -> None:
    """The chain of versions down to the base model, with data hashes and decisions."""
    found = client(ctx).get(f"/v1/models/{model_id}/lineage")

    def human(data: dict[str, Any]) -> None:
        for depth, version in enumerate(data.get("chain", [])):
            indent = "  " * depth + ("└─ " if depth else "")
            output.stdout.print(
                f"{indent}[bold]{escape(version['id'])}[/] ({escape(version['status'])}, "
                f"verdict {escape(str(version.get('verdict')))}) job {escape(version['job_id'])}"
                f" by {escape(version['requested_by'])}, adapter {version['adapter_sha256'][:16]}"
            )
            for file in version.get("data_files", []):
                output.stdout.print(
                    f"{indent}   data {escape(str(file.get('role')))} "
                    f"{escape(str(file.get('file_id')))} sha256 "
                    f"{escape(str(file.get('sha256') or '')[:16])}"
                )
        base = data.get("base_model") or {}
        output.stdout.print(
            f"base [bold]{escape(str(base.get('name')))}[/] manifest "
            f"{escape(str(base.get('manifest_sha256'))[:16])}"
        )
        if data.get("broken_at"):
            output.stderr.print(f"[red]lineage broken at {escape(data['broken_at'])}[/]")

    emit(ctx, found, json_flag=json_flag, human=human)


@models_app.command("dossier")
def dossier(
    ctx: typer.Context,
    model_id: str,
    format: Annotated[str, typer.Option("--format", help="md or json")] = "md",
    out: Annotated[Path | None, typer.Option("-o", "--output", help="file to write")] = None,
) -> None:
    """The model's technical dossier (Annex IV style), as Markdown or JSON."""
    if format not in ("md", "json"):
        raise typer.BadParameter("md or json", param_hint="--format")
    api = client(ctx)
    if format == "md":
        text = api.get(f"/v1/models/{model_id}/dossier", params={"format": "markdown"})
    else:
        text = _json_text(api.get(f"/v1/models/{model_id}/dossier"))
    if out is None:
        output.stdout.file.write(text if text.endswith("\n") else text + "\n")
        return
    _write_atomically(out, text.encode("utf-8"))
    output.stderr.print(f"wrote {escape(str(out))}")


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Chunks:
    """The response body as a file for tarfile's stream mode, counting bytes."""

    def __init__(self, chunks: Iterator[bytes], on_bytes) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._on_bytes(len(chunk))
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


@models_app.command("adapter")
def adapter(
    ctx: typer.Context,
    model_id: str,
    out: Annotated[Path, typer.Option("-o", "--output", help="directory to create")],
    json_flag: JsonFlag = False,
) -> None:
    """Download the adapter into DIR, checking its weights against the sha256 the
    gateway states; nothing is left in DIR when they differ."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise typer.BadParameter(f"{out} exists and is not an empty directory", param_hint="-o")
    api = client(ctx)
    stated = api.get(f"/v1/models/{model_id}").get("adapter_sha256")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with api.stream("GET", f"/v1/models/{model_id}/adapter") as response:
            header = response.headers.get("x-adapter-sha256")
            with progress.transfer() as bar:
                task = bar.add_task(f"downloading {escape(model_id)}", total=None)
                files = _extract(
                    _Chunks(response.iter_bytes(), lambda n: bar.advance(task, n)), staging
                )
        result = _checked(model_id, files, stated=stated, header=header)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result["directory"] = str(out)
    if wants_json(ctx, json_flag):
        output.print_json(result)
    else:
        output.stdout.print(
            f"[bold green]verified[/]: {len(files)} files in {escape(str(out))}, adapter sha256 "
            f"{result['adapter_sha256']}"
        )


def _extract(stream: _Chunks, into: Path) -> dict[str, str]:
    """Every regular file of the tar stream written under ``into`` with its sha256; no
    member may name a path outside it."""
    digests: dict[str, str] = {}
    with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
        for member in archive:
            name = PurePosixPath(member.name)
            if not member.isfile() or name.is_absolute() or ".." in name.parts:
                _refuse(
                    "adapter_archive_invalid",
                    f"the archive holds {member.name!r}, which is not a plain file inside it",
                )
            target = into.joinpath(*name.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            digest = hashlib.sha256()
            with target.open("wb") as handle:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
            digests[name.as_posix()] = digest.hexdigest()
    return digests


def _refuse(code: str, message: str) -> NoReturn:
    output.print_error(code=code, message=message)
    raise typer.Exit(EXIT_FAILED)


def _checked(
    model_id: str, files: dict[str, str], *, stated: str | None, header: str | None
) -> dict[str, Any]:
    weights = sorted(
        (path for path in files if PurePosixPath(path).name == WEIGHTS_NAME),
        key=lambda path: (path.count("/"), path),
    )
    actual = files[weights[0]] if weights else None
    expected = {value for value in (stated, header) if value is not None}
    if actual is None or len(expected) != 1 or actual not in expected:
        _refuse(
            "adapter_hash_mismatch",
            f"the downloaded adapter of {model_id} has sha256 {actual}; the gateway states "
            f"{', '.join(sorted(expected)) or 'nothing'}: nothing was kept",
        )
    return {"model": model_id, "adapter_sha256": actual, "files": files}


@models_app.command("promote")
def promote(
    ctx: typer.Context,
    model_id: str,
    reason: Annotated[str, typer.Option(help="why the model should go to production")],
    override_reason: Annotated[
        str | None, typer.Option(help="why anyway, when the evaluation did not pass")
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Ask for a candidate to go to production: a pending request that a compliance officer
    approves (`tunegate promotions approve`)."""
    body: dict[str, str] = {"reason": reason}
    if override_reason:
        body["override_reason"] = override_reason
    asked = client(ctx).post(f"/v1/models/{model_id}/promotion_requests", json=body)
    emit(ctx, asked, json_flag=json_flag, human=_show_request)


def _show_request(request: dict[str, Any]) -> None:
    show_request(request)
    output.stderr.print(
        f"a compliance officer approves it: tunegate promotions approve {escape(request['id'])}"
    )


@models_app.command("clear-flag")
def clear_flag(
    ctx: typer.Context,
    model_id: str,
    reason: Annotated[str, typer.Option(help="what the review found")],
    ref: Annotated[str | None, typer.Option(help="clear only the flags of this ref")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Clear a model's flags after review (compliance officer), so it can be promoted."""
    body = {"reason": reason} | ({"ref": ref} if ref else {})
    model = client(ctx).post(f"/v1/models/{model_id}/clear_flag", json=body)
    emit(ctx, model, json_flag=json_flag, human=lambda m: output.fields(m, MODEL_FIELDS))


@models_app.command("delete")
def delete(ctx: typer.Context, model_id: str, json_flag: JsonFlag = False) -> None:
    """Delete a fine-tuned model (the tenant's admin): its adapter bytes go; the version,
    lineage and dossier stay, marked deleted. Retire a production model first."""
    deleted = client(ctx).delete(f"/v1/models/{model_id}")
    emit(
        ctx,
        deleted,
        json_flag=json_flag,
        human=lambda d: output.stdout.print(f"deleted {escape(str(d.get('id')))}"),
    )


@models_app.command("retire")
def retire(ctx: typer.Context, model_id: str, json_flag: JsonFlag = False) -> None:
    """Retire a model: it is no longer downloaded or continued."""
    model = client(ctx).post(f"/v1/models/{model_id}/retire")
    emit(ctx, model, json_flag=json_flag, human=lambda m: output.fields(m, MODEL_FIELDS))
