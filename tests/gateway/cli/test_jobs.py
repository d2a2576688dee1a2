"""`tunegate jobs ...` and `tunegate models ...` against a real gateway with a real local
worker training the tiny model: the dry run names every refusing gate, `jobs follow`
survives a dropped connection without losing or repeating an event, Ctrl-C leaves the job
running, and the trained model's adapter downloads with its sha256 checked."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time

import pytest

from gateway.client import Client
from tests.gateway.cli.cli_support import Cli, cast, cli_settings, config_dir, serving
from tests.gateway.conftest import SOURCE, TINY_BASE, good_file

__all__ = ["config_dir"]

PURPOSE = "support-assistant"
DROP_AFTER_BYTES = 1500


class DroppingProxy:
    """A TCP proxy in front of the gateway that cuts the first event stream that passes
    through it after DROP_AFTER_BYTES of its response: the server side of that connection
    is closed mid-stream, as a restarting load balancer would. Later requests pass."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.dropped = threading.Event()
        self._armed = False
        self._lock = threading.Lock()

    def start(self) -> DroppingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(
                target=self._requests, args=(downstream, upstream), daemon=True
            ).start()
            threading.Thread(
                target=self._responses, args=(upstream, downstream), daemon=True
            ).start()

    def _requests(self, source: socket.socket, target: socket.socket) -> None:
        while data := _recv(source):
            with self._lock:
                self.requests.append(data)
                if b"/events/stream" in data and not self.dropped.is_set():
                    self._armed = True
            target.sendall(data)
        _close(target)

    def _responses(self, source: socket.socket, target: socket.socket) -> None:
        sent = 0
        while data := _recv(source):
            with self._lock:
                cut = self._armed and not self.dropped.is_set()
            if cut:
                sent += len(data)
                if sent > DROP_AFTER_BYTES:
                    target.sendall(data[: len(data) // 2])  # half an event, then nothing
                    self.dropped.set()
                    _close(source)
                    _close(target)
                    return
            target.sendall(data)
        _close(target)

    def stop(self) -> None:
        self.listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture(scope="module")
def cli(databases, tmp_path_factory, config_dir, tiny_model_root):
    settings = cli_settings(
        databases,
        tmp_path_factory,
        model_import_roots=[tiny_model_root],
        local_workers=1,
        heartbeat_seconds=2.0,
        lease_seconds=30.0,
    )
    with serving(settings) as url:
        tool = Cli(url, settings, config_dir)
        cast(tool)
        yield tool
    tool.assert_no_token_shown()


def _api(cli: Cli, who: str) -> Client:
    return Client(cli.url, cli.tokens[who])


@pytest.fixture(scope="module")
def world(cli, tiny_model_root):
    """A base model, an approved source with a training and a validation file, and bob
    allowed to train on it (set up over the API: the CLI's own tests are below)."""
    with _api(cli, "ada") as ada, _api(cli, "dora") as dora, _api(cli, "carol") as carol:
        ada.post(
            "/v1/base_models",
            json={
                "name": TINY_BASE,
                "license": "apache-2.0",
                "source": {"directory": str(tiny_model_root / TINY_BASE)},
            },
        )
        source = dora.post("/v1/data_sources", json={**SOURCE, "min_examples": 10})
        carol.post(f"/v1/data_sources/{source['id']}/approve")
        files = {}
        for role, content in (
            ("training", good_file(20)),
            ("validation", good_file(5, start=1000)),
        ):
            files[role] = dora.post(
                "/v1/files",
                data={"purpose": "fine-tune", "data_source": source["id"]},
                files={"file": (f"{role}.jsonl", content, "application/jsonl")},
            )
        rule = ["user:bob", "default", f"ds:{source['id']}", "train", "allow"]
        ada.post("/v1/policies/rules", json={"rules": [{"ptype": "p", "values": rule}]})
    return {"source": source, **files}


def _create_args(world, *extra: str) -> list[str]:
    return [
        "jobs",
        "create",
        "--model",
        TINY_BASE,
        "--training-file",
        world["training"]["id"],
        "--validation-file",
        world["validation"]["id"],
        "--purpose",
        PURPOSE,
        "--n-epochs",
        "2",
        "--batch-size",
        "4",
        "--lora",
        '{"r": 4, "alpha": 8}',
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(cli, world):
    """Bob's job, followed to its end through a proxy that drops the stream once."""
    created = cli("--json", *_create_args(world, "--seed", "3"), as_="bob")
    assert created.exit_code == 0, created.stderr
    job = json.loads(created.stdout)
    proxy = DroppingProxy(cli.url).start()
    try:
        followed = cli.run("--json", "jobs", "follow", job["id"], as_="bob", TUNEGATE_URL=proxy.url)
    finally:
        proxy.stop()
    return {"job": job, "followed": followed, "proxy": proxy}


class TestDryRun:
    def test_every_refusing_gate_is_listed_with_the_estimate(self, cli, world):
        args = _create_args(world, "--dry-run")
        args[args.index("--validation-file") + 1] = world["training"]["id"]  # overlaps
        args[args.index("--purpose") + 1] = "marketing"
        result = cli(*args, as_="eve")  # eve holds no grant on the source
        assert result.exit_code == 1
        for code in ("permission_denied", "purpose_not_allowed", "train_validation_overlap"):
            assert code in result.stdout
        assert "device-hours" in result.stdout

        checked = json.loads(cli("--json", *args, as_="eve").stdout)
        assert checked["would_pass"] is False
        assert [r["gate"] for r in checked["refusals"]] == [
            "policy",
            "purpose",
            "train_validation_overlap",
        ]
        assert checked["estimate"]["training_tokens"] > 0

    def test_a_submission_that_would_pass_says_so_and_creates_nothing(self, cli, world):
        before = json.loads(cli("--json", "jobs", "list", as_="bob").stdout)["data"]
        result = cli(*_create_args(world, "--dry-run"), as_="bob")
        assert result.exit_code == 0, result.stdout
        assert "would pass" in result.stdout
        assert json.loads(cli("--json", "jobs", "list", as_="bob").stdout)["data"] == before


class TestFollow:
    def test_a_dropped_stream_resumes_without_losing_or_repeating_an_event(self, cli, trained):
        followed, proxy = trained["followed"], trained["proxy"]
        assert followed.exit_code == 0, followed.stderr
        assert proxy.dropped.is_set() and "connection lost" in followed.stderr
        resumed = [r for r in proxy.requests if b"/events/stream" in r]
        assert len(resumed) >= 2 and b"last-event-id: ftevent-" in resumed[1].lower()

        shown = [json.loads(line)["id"] for line in followed.stdout.splitlines()]
        with _api(cli, "bob") as bob:
            page = bob.get(
                f"/v1/fine_tuning/jobs/{trained['job']['id']}/events", params={"limit": 100}
            )
        recorded = [event["id"] for event in reversed(page["data"])]
        assert shown == recorded  # every event once, in order

    def test_the_live_view_ends_with_the_verdict_and_the_model(self, cli, trained):
        result = cli.run("jobs", "follow", trained["job"]["id"], as_="bob")
        assert result.exit_code == 0, result.stderr
        assert "Ctrl-C stops following; it does not cancel the job" in result.stderr
        assert "succeeded" in result.stdout and "model ft:" in result.stdout
        assert "verdict" in result.stdout and "loss" in result.stdout

    def test_ctrl_c_stops_following_and_leaves_the_job_running(self, cli, world, trained):
        job = json.loads(cli("--json", *_create_args(world), as_="bob").stdout)
        process = cli.spawn("jobs", "follow", job["id"], as_="bob")
        banner = process.stderr.readline()
        assert "does not cancel the job" in banner
        time.sleep(1.0)  # well inside the stream by now
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        cli.outputs += [banner, stdout, stderr]
        assert process.returncode == 130
        assert "keeps running" in stderr
        with _api(cli, "bob") as bob:
            after = bob.get(f"/v1/fine_tuning/jobs/{job['id']}")
        assert (
            after["status"] in ("queued", "running", "succeeded") and not after["cancel_requested"]
        )

        cancelled = cli("--json", "jobs", "cancel", job["id"], as_="bob")
        assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["cancel_requested"]
        ended = cli.run("jobs", "follow", job["id"], as_="bob", timeout=120)
        assert ended.exit_code == 1 and "cancelled" in ended.stdout


class TestJobViews:
    def test_get_events_and_checkpoints(self, cli, trained):
        job_id = trained["job"]["id"]
        got = json.loads(cli("--json", "jobs", "get", job_id, as_="bob").stdout)
        assert got["status"] == "succeeded" and got["fine_tuned_model"].startswith("ft:")
        events = cli("jobs", "events", job_id, "--limit", "5", as_="bob")
        assert events.exit_code == 0 and "more: --after ftevent-" in events.stderr
        assert cli("jobs", "checkpoints", job_id, as_="bob").exit_code == 0

    def test_pause_and_resume_name_the_status_that_refuses_them(self, cli, trained):
        job_id = trained["job"]["id"]
        paused = cli("jobs", "pause", job_id, as_="bob")
        assert paused.exit_code == 1 and "job_not_running (409)" in paused.stderr
        resumed = cli("jobs", "resume", job_id, as_="bob")
        assert resumed.exit_code == 1 and "job_not_paused (409)" in resumed.stderr


class TestModels:
    @pytest.fixture
    def model(self, trained, cli):
        with _api(cli, "bob") as bob:
            return bob.get(f"/v1/fine_tuning/jobs/{trained['job']['id']}")["fine_tuned_model"]

    def test_list_get_lineage_and_dossier(self, cli, model, tmp_path):
        listed = json.loads(
            cli("--json", "models", "list", "--status", "candidate", as_="bob").stdout
        )
        assert model in [m["id"] for m in listed["data"]]
        assert model in cli("models", "get", model, as_="bob").stdout
        assert TINY_BASE in cli("models", "lineage", model, as_="bob").stdout
        target = tmp_path / "dossier.md"
        written = cli("models", "dossier", model, "--format", "md", "-o", str(target), as_="carol")
        assert written.exit_code == 0, written.stderr
        assert model in target.read_text()
        as_json = cli("models", "dossier", model, "--format", "json", as_="carol")
        assert json.loads(as_json.stdout)["general"]["model_id"] == model

    def test_the_adapter_downloads_with_its_sha256_checked(self, cli, model, tmp_path):
        target = tmp_path / "adapter"
        result = cli.run("--json", "models", "adapter", model, "-o", str(target), as_="bob")
        assert result.exit_code == 0, result.stderr
        done = json.loads(result.stdout)
        with _api(cli, "bob") as bob:
            assert done["adapter_sha256"] == bob.get(f"/v1/models/{model}")["adapter_sha256"]
        assert (target / "adapter" / "adapter_model.safetensors").is_file()
        again = cli("models", "adapter", model, "-o", str(target), as_="bob")
        assert again.exit_code == 2  # not an empty directory

    def test_promotion_is_asked_then_approved_then_retired_and_deleted(self, cli, model):
        asked = cli(
            "--json",
            "models",
            "promote",
            model,
            "--reason",
            "answers the tickets",
            "--override-reason",
            "tiny",
            as_="eve",
        )
        assert asked.exit_code == 0, asked.stderr
        request = json.loads(asked.stdout)
        assert request["status"] == "pending" and request["requested_by"] == "eve"
        queue = json.loads(
            cli("--json", "promotions", "list", "--status", "pending", as_="carol").stdout
        )
        assert request["id"] in [r["id"] for r in queue["data"]]
        refused = cli("promotions", "approve", request["id"], as_="eve")
        assert refused.exit_code == 1 and "may not approve" in refused.stderr
        unflagged = cli("models", "clear-flag", model, "--reason", "reviewed", as_="carol")
        assert unflagged.exit_code == 1 and "not_flagged" in unflagged.stderr
        approved = cli("--json", "promotions", "approve", request["id"], as_="carol")
        assert approved.exit_code == 0, approved.stderr
        assert json.loads(approved.stdout)["decided_by"] == "carol"
        assert json.loads(cli("--json", "models", "get", model, as_="bob").stdout)["status"] == (
            "production"
        )
        in_production = cli("models", "delete", model, as_="ada")
        assert in_production.exit_code == 1  # retire it first
        retired = cli("--json", "models", "retire", model, as_="carol")
        assert retired.exit_code == 0, retired.stderr
        assert json.loads(retired.stdout)["status"] == "retired"
        deleted = cli("--json", "models", "delete", model, as_="ada")
        assert deleted.exit_code == 0, deleted.stderr
        assert json.loads(deleted.stdout) == {"id": model, "object": "model", "deleted": True}
