"""Governed inference fixtures: a gateway serving with the noop backend, a production
model and a candidate of the same base (rows as the worker writes them), and a real
uvicorn whose app the test can reach (to bring a backend of its own)."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator

import pytest
from sqlmodel import Session

from audit.encoding import now_ts
from gateway.data_sources.models import DataSource
from gateway.db import make_engine
from gateway.inference.backends.base import GenerationChunk, GenerationRequest
from gateway.inference.backends.noop import NoopBackend
from gateway.registry.models import ModelVersion
from tests.gateway.registry import factories

PURPOSE = "support-assistant"


@pytest.fixture
def gateway_settings(gateway_settings):
    return gateway_settings.model_copy(
        update={
            "inference_backend": "noop",
            "inference_max_input_tokens": 200,
            "inference_max_output_tokens": 64,
        }
    )


@pytest.fixture
def people(token):
    return {
        "dora": token("dora", "data-owner"),
        "carol": token("carol", "compliance-officer"),
        "bob": token("bob", "ml-engineer"),
        "eve": token("eve", "ml-engineer"),
        "ada": token("ada", "admin"),
        "mallory": token("mallory", "ml-engineer", tenant="other"),
    }


def _approved_source(settings) -> str:
    """An approved data source for support-assistant, as the data source API leaves it
    (written directly: the tests here are about inference, not about approval)."""
    source_id = f"ds-{secrets.token_hex(8)}"
    row = factories._with_required(
        DataSource,
        dict(
            id=source_id,
            tenant="default",
            name=f"support chats {source_id}",
            classification="internal",
            contains_personal_data=True,
            legal_basis="contract",
            allowed_purposes=[PURPOSE],
            owner="dora",
            retention_days=365,
            pii_action="block",
            min_examples=2,
            status="approved",
            proposed_by="dora",
            proposed_at=now_ts(),
            approved_by="carol",
            approved_at=now_ts(),
        ),
    )
    factories._write(settings, row)
    return source_id


@pytest.fixture
def models(client, gateway_settings):
    """bob's production model and his candidate of the same base, trained on a source
    approved for support-assistant."""
    source = _approved_source(gateway_settings)
    files = [
        {
            "id": "file-0123456789abcdef",
            "data_source": source,
            "sha256": "0" * 64,
            "content_sha256": "1" * 64,
        }
    ]
    factories.base_model(gateway_settings)
    production = factories.fine_tuned_model(
        gateway_settings, files=files, status="production", suffix="live"
    )
    candidate = factories.fine_tuned_model(
        gateway_settings, files=files, status="candidate", suffix="next"
    )
    return {"production": production, "candidate": candidate, "source": source}


def update_model(settings, model_id: str, **values) -> None:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            row = session.get(ModelVersion, model_id)
            assert row is not None
            for key, value in values.items():
                setattr(row, key, value)
            session.add(row)
            session.commit()
    finally:
        engine.dispose()


def chat(model: str, text: str = "hello there governed world", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def runtime_of(client):
    return client.app.state.gateway.inference_runtime()


def settle(client) -> None:
    """Every call record written and chained (the writer batches; the sequencer chains)."""
    runtime_of(client).writer.wait_idle()
    client.app.state.gateway.flush_audit_queue()


class SlowBackend(NoopBackend):
    """The noop backend, one word every ``delay`` seconds, remembering whether its
    iterator was closed before the end (a client that went away)."""

    name = "slow"

    def __init__(self, delay: float = 0.05, words: int = 400) -> None:
        self.delay = delay
        self.words = words
        self.closed = threading.Event()
        self.finished = threading.Event()
        self.started = threading.Event()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.started.set()
        try:
            for count in range(1, self.words + 1):
                await asyncio.sleep(self.delay)
                yield GenerationChunk(f" w{count}", count)
            self.finished.set()
            yield GenerationChunk("", self.words, finish_reason="length")
        finally:
            if not self.finished.is_set():
                self.closed.set()


@pytest.fixture
def served():
    """served(settings) -> (base URL, app) of the real app under uvicorn on loopback."""
    import uvicorn

    from gateway.main import create_app

    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings):
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        running.append((server, thread))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", app

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=30)
