"""The witness's HTTP app (Starlette): `POST /add-checkpoint` per C2SP tlog-witness, and
`GET /healthz`. No authentication, as the spec says: the log's signature on the
checkpoint is what is checked.

A request is verified in a worker thread (the log's Ed25519 signature: the verify releases
the GIL, so requests verify in parallel), then handed to the store's group commit (one
transaction and one fsync for every request waiting, gateway.witness.store) without
holding a thread, and cosigned once that commit is on disk. `/add-checkpoint` is a bare
ASGI endpoint (no Request or Response objects): on the witness's hot path the framework's
per-request work cost about as much as the log signature's verify."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

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


_TEXT = b"text/plain; charset=utf-8"
VERIFY_THREADS = 4  # Ed25519 verifies at once (the GIL is released while they run)


class AddCheckpoint:
    """``POST /add-checkpoint`` as a bare ASGI app: read the body (413 past
    MAX_BODY_BYTES), verify it in a worker thread, await the group commit, cosign."""

    def __init__(self, witness: Witness, store: SqlStore) -> None:
        self.witness = witness
        self.store = store
        self.pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="witness-verify")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        if body is None:
            status, content_type, answer = 413, _TEXT, "request body too large\n"
        else:
            status, content_type, answer = await self._answer(body)
        data = answer.encode()
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _answer(self, body: bytes) -> tuple[int, bytes, str]:
        loop = asyncio.get_running_loop()
        try:
            verified = await loop.run_in_executor(self.pool, self.witness.verify, body)
            await self.store.save_async(verified)
        except WitnessRefusal as refusal:
            log.info("witness.refused", code=refusal.code, status=refusal.status)
            return refusal.status, f"{refusal.content_type}; charset=utf-8".encode(), refusal.body
        return 200, _TEXT, self.witness.cosign(verified.text, now=int(time.time()))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.store.close()


async def _body(receive: Receive) -> bytes | None:
    """The request body, or None once it is longer than MAX_BODY_BYTES (not read further)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""  # nobody to answer; an empty body is refused as malformed
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _closing(endpoint: AddCheckpoint):
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        endpoint.close()

    return lifespan


def create_witness_app(config: WitnessConfig | None = None) -> Starlette:
    config = config or WitnessConfig.from_env()
    witness = Witness(
        name=config.name, private_key=load_key(config.key_path), log_keys=log_keys(config.log_vkeys)
    )
    store = SqlStore.open(config.database_url, durable=config.fsync)
    endpoint = AddCheckpoint(witness, store)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def vkey(_request: Request) -> Response:
        return PlainTextResponse(cosigner_vkey(witness.name, witness.public_key) + "\n")

    app = Starlette(
        routes=[
            Route("/add-checkpoint", endpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/vkey", vkey, methods=["GET"]),
        ],
        lifespan=_closing(endpoint),
    )
    app.state.witness = witness
    app.state.store = store
    return app
