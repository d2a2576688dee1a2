from __future__ import annotations

import threading
import time

import pytest
import uvicorn


def serve_in_thread(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    """``app`` under a real uvicorn on a loopback port of its own."""
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
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture
def witness_server(tmp_path):
    """witness_server(log_vkeys) -> (url, app): a real witness (own key, own SQLite file)."""
    from gateway.witness.app import WitnessConfig, create_key, create_witness_app

    started = []

    def start(log_vkeys: list[str], name: str = "witness.test/w1"):
        key_path = tmp_path / f"{name.replace('/', '_')}.pem"
        create_key(key_path)
        config = WitnessConfig(
            name=name,
            key_path=key_path,
            database_url=f"sqlite:///{tmp_path / (name.replace('/', '_') + '.db')}",
            log_vkeys=log_vkeys,
        )
        app = create_witness_app(config)
        url, server, thread = serve_in_thread(app)
        started.append((server, thread))
        return url, app

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=30)
