"""The witness's HTTP app (Starlette): `POST /add-checkpoint` per C2SP tlog-witness, and
`GET /healthz`. No authentication, as the spec says: the log's signature on the
checkpoint is what is checked."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from audit.cosignature import cosigner_vkey
from audit.note import Verifier, parse_vkey
from audit.witness import MAX_BODY_BYTES, Witness, WitnessRefusal
from gateway.witness.store import SqlStore

log = structlog.get_logger()


@dataclass
class WitnessConfig:
    name: str
    key_path: Path
    database_url: str
    log_vkeys: Sequence[str] = field(default_factory=list)
    fsync: bool = True  # SQLite: fsync each commit before answering (see SqlStore.open)

    @classmethod
    def from_env(cls) -> WitnessConfig:
        """TUNEGATE_WITNESS_NAME, _KEY, _DB (a path or an SQLAlchemy URL) and _LOGS (vkeys,
        whitespace-separated; `origin=vkey` when the key name is not the origin)."""
        return cls(
            name=os.environ.get("TUNEGATE_WITNESS_NAME", "tunegate-witness.local/w1"),
            key_path=Path(os.environ.get("TUNEGATE_WITNESS_KEY", "./var/witness-key.pem")),
            database_url=database_url(os.environ.get("TUNEGATE_WITNESS_DB", "./var/witness.db")),
            log_vkeys=os.environ.get("TUNEGATE_WITNESS_LOGS", "").split(),
            fsync=os.environ.get("TUNEGATE_WITNESS_FSYNC", "1") not in ("0", "false", "no"),
        )


def database_url(path_or_url: str) -> str:
    return path_or_url if "://" in path_or_url else f"sqlite:///{path_or_url}"


def log_keys(vkeys: Sequence[str]) -> dict[str, list[Verifier]]:
    """origin -> trusted keys, from `vkey` (origin = the key's name) or `origin=vkey`."""
    keys: dict[str, list[Verifier]] = {}
    for entry in vkeys:
        origin, sep, vkey = entry.partition("=")
        verifier = parse_vkey(vkey if sep else entry)
        keys.setdefault(origin if sep else verifier.name, []).append(verifier)
    return keys


# --- the key file ---------------------------------------------------------------------------


def create_key(path: Path) -> Ed25519PrivateKey:
    """Write a new Ed25519 key to ``path`` (PKCS#8 PEM, mode 0600); refuses to overwrite."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


# --- the app ---------------------------------------------------------------------------------


def _closing(store: SqlStore):
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    return lifespan


def create_witness_app(config: WitnessConfig | None = None) -> Starlette:
    config = config or WitnessConfig.from_env()
    witness = Witness(
        name=config.name, private_key=load_key(config.key_path), log_keys=log_keys(config.log_vkeys)
    )
    store = SqlStore.open(config.database_url, durable=config.fsync)

    async def add_checkpoint(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return PlainTextResponse("request body too large\n", status_code=413)
        try:
            # The log's signature in a worker thread (Ed25519 verify releases the GIL, so
            # requests verify in parallel), then the group-committed check-and-save, then
            # the cosignature: answered only once the state is on disk.
            verified = await run_in_threadpool(witness.verify, body)
            await store.save_async(verified)
            line = witness.cosign(verified.text, now=int(time.time()))
        except WitnessRefusal as refusal:
            log.info("witness.refused", code=refusal.code, status=refusal.status)
            return Response(
                refusal.body, status_code=refusal.status, media_type=refusal.content_type
            )
        return PlainTextResponse(line)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def vkey(_request: Request) -> Response:
        return PlainTextResponse(cosigner_vkey(witness.name, witness.public_key) + "\n")

    app = Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/vkey", vkey, methods=["GET"]),
        ],
        lifespan=_closing(store),
    )
    app.state.witness = witness
    app.state.store = store
    return app
