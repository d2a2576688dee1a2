"""POST /v1/chat/completions on the noop backend: the openai SDK against a real uvicorn,
the governance gates, the limits, the audit event's hashes, a client hanging up, the
canary split and the usage views. The backend answers at once (it echoes), so what is
tested is the gateway; tests/gateway/inference/test_chat_local.py serves the tiny model."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import httpx
import openai
import pytest
from sqlmodel import Session, select

from gateway.db import make_engine
from gateway.inference import canary
from gateway.inference.models import InferenceCall, InferenceTranscript
from tests.gateway.inference.conftest import (
    PURPOSE,
    SlowBackend,
    chat,
    runtime_of,
    settle,
    update_model,
)


def _bearer(headers: dict) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _calls(settings) -> list[InferenceCall]:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return list(
                session.scalars(select(InferenceCall).order_by(InferenceCall.created_ns)).all()
            )
    finally:
        engine.dispose()


def _events(client, people, action="inference.call") -> list[dict]:
    settle(client)
    response = client.get(
        "/v1/audit/events", params={"action": action, "limit": 1000}, headers=people["ada"]
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


class TestOpenAISdk:
    def test_chat_completions_streaming_and_not(
        self, live_server, gateway_settings, people, models
    ):
        base_url = live_server(gateway_settings) + "/v1"
        sdk = openai.OpenAI(base_url=base_url, api_key=_bearer(people["eve"]), max_retries=0)
        answer = sdk.chat.completions.create(
            model=models["production"],
            messages=[
                {"role": "system", "content": "You answer invoices."},
                {"role": "user", "content": "total of invoice 1042 please"},
            ],
            max_tokens=3,
            temperature=0,
            seed=7,
            stop=["never"],
        )
        assert answer.object == "chat.completion"
        assert answer.model == models["production"]
        assert answer.choices[0].message.content == "total of invoice"
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage.completion_tokens == 3
        assert answer.usage.total_tokens == answer.usage.prompt_tokens + 3

        stream = sdk.chat.completions.create(
            model=models["production"],
            messages=[{"role": "user", "content": "where is my parcel"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Tunegate-Purpose": PURPOSE},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "where is my parcel"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices == []

        listed = sdk.models.list(extra_query={"callable": "true"})
        ids = {model.id for model in listed}
        assert models["production"] in ids and models["candidate"] not in ids
        assert "tiny-llama" in ids  # an active base model the ml-engineer may infer with

        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(
                model=models["production"], messages=[{"role": "user", "content": "x"}], n=2
            )
        assert refused.value.status_code == 400


class TestRefusals:
    def test_no_grant_is_403_and_audited(self, client, people, models):
        refused = client.post(
            "/v1/chat/completions", json=chat(models["production"]), headers=people["dora"]
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "permission_denied"
        [denial] = _events(client, people, "authz.denied")
        assert denial["resource"] == f"model:{models['production']}"
        assert denial["details"]["act"] == "infer" and denial["policy_version"]

    def test_governance_gates(self, client, people, models, gateway_settings):
        production, candidate = models["production"], models["candidate"]

        def ask(model, who="eve", **extra):
            return client.post(
                "/v1/chat/completions", json=chat(model, **extra), headers=people[who]
            )

        # a candidate: its requester and a reviewer only
        assert ask(candidate).json()["error"]["code"] == "model_not_callable"
        assert ask(candidate).status_code == 403
        assert ask(candidate, "bob").status_code == 200
        assert ask(candidate, "carol").status_code == 200
        # another tenant's model does not exist for the caller
        other = ask(production, "mallory")
        assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
        # a purpose the training data was not approved for
        purpose = ask(production, purpose="marketing")
        assert purpose.status_code == 403
        assert purpose.json()["error"]["details"]["allowed_purposes"] == [PURPOSE]
        # an OpenAI parameter the gateway does not implement, and unknown fields
        tools = ask(production, tools=[{"type": "function", "function": {"name": "f"}}])
        assert tools.status_code == 400 and tools.json()["error"]["param"] == "tools"
        assert ask(production, frobnicate=1).status_code == 400
        # flagged, then retired
        update_model(
            gateway_settings,
            production,
            flags=[{"reason": "data_source_revoked", "ref": "ds-x", "at": "now"}],
        )
        flagged = ask(production)
        assert flagged.status_code == 409 and flagged.json()["error"]["code"] == "model_flagged"
        update_model(gateway_settings, production, flags=[])
        assert ask(production).status_code == 200
        retired = client.post(f"/v1/models/{production}/retire", headers=people["carol"])
        assert retired.status_code == 200, retired.text
        gone = ask(production)
        assert gone.status_code == 409 and gone.json()["error"]["code"] == "model_retired"

        settle(client)
        outcomes = [(c.outcome, c.status_code) for c in _calls(gateway_settings)]
        assert ("model_not_callable", 403) in outcomes
        assert ("model_flagged", 409) in outcomes and ("model_retired", 409) in outcomes
        assert ("model_not_found", 404) in outcomes


class TestLimits:
    def test_token_limits_are_400_with_the_numbers(self, client, people, models):
        long = " ".join(["word"] * 250)
        oversized = client.post(
            "/v1/chat/completions", json=chat(models["production"], long), headers=people["eve"]
        )
        assert oversized.status_code == 400
        error = oversized.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["details"] == {"prompt_tokens": 253, "limit": 200}
        too_many = client.post(
            "/v1/chat/completions",
            json=chat(models["production"], max_completion_tokens=65),
            headers=people["eve"],
        )
        assert too_many.status_code == 400
        assert too_many.json()["error"]["details"] == {"requested": 65, "limit": 64}

    @pytest.fixture
    def gateway_settings(self, gateway_settings):
        return gateway_settings.model_copy(update={"inference_tokens_per_minute": 100})

    def test_tenant_over_its_tokens_per_minute_is_429(self, client, people, models):
        body = chat(models["production"], max_tokens=64)  # 7 prompt + 64 reserved
        # each call reserves 71 tokens and settles to what it used (7 + 4): the fourth
        # does not fit in the minute's 100
        statuses = [
            client.post("/v1/chat/completions", json=body, headers=people[who]).status_code
            for who in ("eve", "bob", "eve")
        ]
        assert statuses == [200, 200, 200]
        over = client.post("/v1/chat/completions", json=body, headers=people["eve"])
        assert over.status_code == 429
        assert int(over.headers["retry-after"]) >= 1
        assert over.json()["error"]["code"] == "rate_limit_exceeded"
        assert over.json()["error"]["details"]["limit"] == 100
        # another tenant's quota is its own
        assert runtime_of(client).limiter.reserve("other", 50)


class TestQueueAndDisconnect:
    @pytest.fixture
    def gateway_settings(self, gateway_settings):
        return gateway_settings.model_copy(
            update={"inference_max_concurrent": 1, "inference_queue_size": 0}
        )

    def test_queue_full_is_503_and_a_hang_up_stops_generation(
        self, served, gateway_settings, people, models
    ):
        url, app = served(gateway_settings)
        slow = SlowBackend(delay=0.05, words=400)
        app.state.gateway.inference_runtime().use_backend(slow)
        body = chat(models["production"], stream=True, max_tokens=64)
        with httpx.Client(base_url=url, headers=people["eve"], timeout=30) as http:
            with http.stream("POST", "/v1/chat/completions", json=body) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                assert next(lines).startswith("data: ")
                assert slow.started.wait(10)
                # the one slot is busy and nothing may wait: 503, at once
                full = http.post("/v1/chat/completions", json=chat(models["production"]))
                assert full.status_code == 503
                assert full.headers["retry-after"] == "1"
                assert full.json()["error"]["code"] == "inference_queue_full"
                next(lines)
            # the client hung up after two events: the backend's iterator is closed
            assert slow.closed.wait(10), "the generation went on after the client left"
            assert not slow.finished.is_set()
            # and the slot is free again
            deadline = time.monotonic() + 10
            while runtime_of_app(app).queue.running and time.monotonic() < deadline:
                time.sleep(0.02)
            again = http.post("/v1/chat/completions", json=chat(models["production"], stream=False))
            assert again.status_code == 200, again.text
        runtime_of_app(app).writer.wait_idle()
        outcomes = [c.outcome for c in _calls(gateway_settings)]
        assert "client_disconnected" in outcomes and "inference_queue_full" in outcomes


def runtime_of_app(app):
    return app.state.gateway.inference_runtime()


class TestAuditEvent:
    def test_hashes_match_the_bytes(self, client, people, models, gateway_settings):
        raw = json.dumps(chat(models["production"], max_tokens=5)).encode()
        plain = client.post(
            "/v1/chat/completions",
            content=raw,
            headers={**people["eve"], "content-type": "application/json"},
        )
        assert plain.status_code == 200
        streamed_raw = json.dumps(chat(models["production"], stream=True)).encode()
        streamed = client.post(
            "/v1/chat/completions",
            content=streamed_raw,
            headers={**people["eve"], "content-type": "application/json"},
        )
        assert streamed.status_code == 200 and streamed.content.endswith(b"data: [DONE]\n\n")
        events = {e["details"]["call_id"]: e for e in _events(client, people)}
        first = events[plain.json()["id"]]
        assert first["details"]["request_sha256"] == hashlib.sha256(raw).hexdigest()
        assert first["details"]["response_sha256"] == hashlib.sha256(plain.content).hexdigest()
        assert first["actor"] == "eve" and first["tenant"] == "default"
        assert first["details"]["model_version"] == models["production"]
        assert first["details"]["purpose"] == PURPOSE
        assert first["details"]["prompt_tokens"] == 7
        assert first["details"]["completion_tokens"] == 4
        assert first["details"]["outcome"] == "ok" and first["policy_version"]
        stream_id = json.loads(streamed.content.split(b"\n\n")[0].removeprefix(b"data: "))["id"]
        second = events[stream_id]
        assert second["details"]["request_sha256"] == hashlib.sha256(streamed_raw).hexdigest()
        assert second["details"]["response_sha256"] == hashlib.sha256(streamed.content).hexdigest()
        # no text on the trail
        assert "hello" not in json.dumps(list(events.values()))
        rows = {row.id: row for row in _calls(gateway_settings)}
        row = rows[plain.json()["id"]]
        assert row.response_sha256 == first["details"]["response_sha256"]
        assert row.principal == "eve" and row.model_id == row.model_version_id
        assert row.created_at > 0 and row.created_ns > 0 and row.latency_ms >= 0


class TestCanary:
    def test_split_routes_close_to_its_ratio(self, client, people, models, gateway_settings):
        production, candidate = models["production"], models["candidate"]
        split = {"candidate": candidate, "percent": 30, "reason": "canary for the next version"}
        refused = client.post(
            f"/v1/models/{production}/traffic_split", json=split, headers=people["bob"]
        )
        assert refused.status_code == 403
        done = client.post(
            f"/v1/models/{production}/traffic_split", json=split, headers=people["ada"]
        )
        assert done.status_code == 200, done.text
        assert done.json()["percent"] == 30 and done.json()["set_by"] == "ada"

        served = {production: 0, candidate: 0}
        expected = 0
        for i in range(1000):
            request_id = f"req-{i}"
            expected += canary.to_candidate(request_id, 30)
            answer = client.post(
                "/v1/chat/completions",
                json=chat(production, max_tokens=2),
                headers={**people["eve"], "X-Request-ID": request_id},
            )
            assert answer.status_code == 200
            served[answer.json()["model"]] += 1
        assert served[candidate] == expected  # deterministic per request id
        assert 250 <= served[candidate] <= 350  # and close to the ratio

        [event] = _events(client, people, "model.traffic_split_set")
        assert event["actor"] == "ada" and event["details"]["percent"] == "30"
        traffic = client.get(f"/v1/models/{production}/traffic", headers=people["carol"]).json()
        shares = {v["model_version_id"]: v for v in traffic["versions"]}
        assert shares[candidate]["role"] == "candidate"
        assert shares[candidate]["calls_last_hour"] == expected
        assert shares[production]["calls_last_day"] == 1000 - expected
        assert abs(shares[candidate]["share_last_day"] - expected / 1000) < 1e-3
        assert shares[production]["error_rate_last_day"] == 0.0
        assert traffic["split"]["candidate_id"] == candidate

        ended = client.post(
            f"/v1/models/{production}/traffic_split",
            json={"candidate": None, "percent": 0, "reason": "canary ends here"},
            headers=people["ada"],
        )
        assert ended.status_code == 200 and ended.json()["candidate_id"] is None


class TestUsage:
    def test_usage_grouped_by_user_purpose_day(self, client, people, models):
        production = models["production"]
        for who, count in (("eve", 3), ("bob", 2)):
            for _ in range(count):
                ok = client.post(
                    "/v1/chat/completions", json=chat(production, "a b c"), headers=people[who]
                )
                assert ok.status_code == 200
        long = client.post(
            "/v1/chat/completions", json=chat(production, "x " * 300), headers=people["eve"]
        )
        assert long.status_code == 400
        settle(client)

        def usage(**params):
            response = client.get(
                f"/v1/models/{production}/usage", params=params, headers=people["carol"]
            )
            assert response.status_code == 200, response.text
            return response.json()

        total = usage()
        assert total["calls"] == 6 and total["errors"] == 1
        assert total["completion_tokens"] == 15
        by_user = {g["key"]: g for g in usage(group_by="user")["groups"]}
        assert by_user["eve"]["calls"] == 4 and by_user["eve"]["errors"] == 1
        assert by_user["bob"]["calls"] == 2 and by_user["bob"]["completion_tokens"] == 6
        assert [g["key"] for g in usage(group_by="purpose")["groups"]] == [PURPOSE]
        [day] = usage(group_by="day")["groups"]
        assert day["key"] == time.strftime("%Y-%m-%d", time.gmtime()) and day["calls"] == 6
        assert usage(since=int(time.time()) + 60)["calls"] == 0
        assert (
            client.get(f"/v1/models/{production}/usage", headers=people["mallory"]).status_code
            == 404
        )


class TestTextRetention:
    def test_kept_text_is_found_and_erased(self, client, people, models, gateway_settings):
        production = models["production"]
        body = {"keep_text": True, "retention_days": 30, "reason": "quality review of answers"}
        assert (
            client.post(
                f"/v1/models/{production}/text_retention", json=body, headers=people["ada"]
            ).status_code
            == 403
        )
        turned_on = client.post(
            f"/v1/models/{production}/text_retention", json=body, headers=people["carol"]
        )
        assert turned_on.status_code == 200, turned_on.text
        said = client.post(
            "/v1/chat/completions",
            json=chat(production, "please write to jane.roe@example.org today"),
            headers=people["eve"],
        )
        assert said.status_code == 200
        settle(client)
        [event] = _events(client, people, "model.text_retention_set")
        assert event["actor"] == "carol" and event["details"]["retention_days"] == 30
        transcripts = _transcripts(gateway_settings)
        assert [t.call_id for t in transcripts] == [said.json()["id"]]
        assert "jane.roe@example.org" in transcripts[0].prompt

        asked = client.post(
            "/v1/erasure_requests",
            json={"subject": "Jane.Roe@example.org"},
            headers=people["carol"],
        )
        assert asked.status_code == 201, asked.text
        assert asked.json()["findings"]["transcripts"] == [said.json()["id"]]
        decided = client.post(
            f"/v1/erasure_requests/{asked.json()['id']}/decide",
            json={"decision": "delete_data"},
            headers=people["carol"],
        )
        assert decided.status_code == 200, decided.text
        assert _transcripts(gateway_settings) == []


def _transcripts(settings) -> list[InferenceTranscript]:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(InferenceTranscript)).all())
    finally:
        engine.dispose()


def test_concurrent_calls_each_leave_one_record(client, people, models, gateway_settings):
    """Calls from many threads at once: every one answered and recorded exactly once."""
    answers: list[int] = []

    def call() -> None:
        for _ in range(10):
            answers.append(
                client.post(
                    "/v1/chat/completions", json=chat(models["production"]), headers=people["eve"]
                ).status_code
            )

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 40
    settle(client)
    assert len(_calls(gateway_settings)) == 40
    assert len(_events(client, people)) == 40
