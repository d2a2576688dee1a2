"""What the client CLI's tests share: one real gateway (uvicorn on loopback, SQLite) per
test module, tokens for the usual cast, and two ways to run `tunegate`: typer's runner
in-process, and a subprocess for the progress and event-stream paths. Every output goes
into `outputs`, so a module can check at its end that no token ever showed up."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.config import Settings

ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The real app under a real uvicorn on a free loopback port, for a whole module
    (tests/conftest.py's live_server, scoped wider)."""
    import uvicorn

    from gateway.main import create_app

    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
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
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def cli_settings(databases, tmp_path_factory, **overrides) -> Settings:
    """A gateway over a new migrated, seeded SQLite database (the CLI talks HTTP: what
    runs behind it is the API's tests' business, so PostgreSQL adds nothing here)."""
    from gateway.bootstrap import seed_policy

    engine = databases.engine("sqlite")
    seed_policy(engine)
    values = {
        "database_url": engine.url.render_as_string(hide_password=False),
        "env": "dev",
        "artifact_dir": tmp_path_factory.mktemp("artifacts"),
        "audit_checkpoint_every": 50,
        "policy_poll_seconds": 0.2,
        "ingest_workers": 0,
        "local_workers": 0,
    }
    return Settings(**(values | overrides))


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@dataclass
class Cli:
    """`tunegate` against one gateway, as a given person."""

    url: str
    settings: Settings
    config_dir: Path
    outputs: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, sub: str, *roles: str) -> str:
        from gateway.security import mint_dev_token

        if sub not in self.tokens:
            self.tokens[sub] = mint_dev_token(
                self.settings, sub=sub, roles=list(roles), tenant="default", ttl=3600
            )
        return self.tokens[sub]

    def env(self, as_: str | None, **extra: str) -> dict[str, str]:
        env = {
            "TUNEGATE_CONFIG_DIR": str(self.config_dir),
            "TUNEGATE_URL": self.url,
            "COLUMNS": "160",
            "NO_COLOR": "1",
        }
        if as_ is not None:
            env["TUNEGATE_TOKEN"] = self.tokens[as_]
        return env | extra

    def __call__(
        self, *args: str, as_: str | None = None, input: str | None = None, **env: str
    ) -> Result:
        """In-process, through typer's runner."""
        from gateway.cli import app

        runner = CliRunner()
        outcome = runner.invoke(app, list(args), env=self.env(as_, **env), input=input)
        if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
            raise outcome.exception
        result = Result(outcome.exit_code, outcome.stdout, outcome.stderr)
        self.outputs += [result.stdout, result.stderr]
        return result

    def spawn(self, *args: str, as_: str | None = None, **env: str) -> subprocess.Popen:
        """A real `tunegate` process (python -m gateway.cli), its output piped."""
        full_env = {**os.environ, **self.env(as_, **env), "PYTHONUNBUFFERED": "1"}
        if as_ is None:
            full_env.pop("TUNEGATE_TOKEN", None)
        return subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "gateway.cli", *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, as_: str | None = None, timeout: float = 300, **env: str) -> Result:
        process = self.spawn(*args, as_=as_, **env)
        stdout, stderr = process.communicate(timeout=timeout)
        self.outputs += [stdout, stderr]
        return Result(process.returncode, stdout, stderr)

    def assert_no_token_shown(self) -> None:
        for token in self.tokens.values():
            for text in self.outputs:
                assert token not in text
                # nor a recognisable piece of one (its signature)
                assert token.rsplit(".", 1)[-1] not in text


def cast(cli: Cli) -> None:
    """The usual people, by role."""
    cli.token("dora", "data-owner")
    cli.token("carol", "compliance-officer")
    cli.token("cora", "compliance-officer")
    cli.token("bob", "ml-engineer")
    cli.token("eve", "ml-engineer")
    cli.token("ada", "admin")


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tunegate-config")
