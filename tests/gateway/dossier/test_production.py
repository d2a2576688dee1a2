"""The dossier's "Use in production" section: usage from the inference usage table (rows
inserted directly here, as gateway.inference's writer records them: one per call, the
version actually served), and cost and break-even from the recorded training compute and
the measured calls."""

from __future__ import annotations

import hashlib

import pytest
from sqlmodel import Session

from gateway.config import Settings
from gateway.db import make_engine
from gateway.dossier import production
from gateway.inference.models import InferenceCall
from gateway.registry.models import ModelVersion

COMPUTE = {"device": "cpu", "seconds": 7200.0, "device_hours": 2.0, "trained_tokens": 50_000}
OTHER = "ft:tiny-llama:default:support:ftjob-elsewhere"


@pytest.fixture
def gateway_settings(gateway_settings):
    return gateway_settings.model_copy(
        update={"device_hour_price": 2.0, "hosted_price_per_1k_tokens": 0.01}
    )


def _call(n, *, asked, served, who, purpose, prompt, completion, ms, at, outcome="ok"):
    return InferenceCall(
        id=f"call-{n}",
        tenant="default",
        model_id=asked,
        model_version_id=served,
        base_model="tiny-llama",
        principal=who,
        purpose=purpose,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=ms,
        outcome=outcome,
        status_code=200 if outcome == "ok" else 429,
        request_sha256=hashlib.sha256(f"q{n}".encode()).hexdigest(),
        response_sha256=hashlib.sha256(f"a{n}".encode()).hexdigest(),
        created_at=at,
        created_ns=at * 10**9,
    )


@pytest.fixture
def served(trained, gateway_settings):
    """The trained version, with its compute recorded and calls it served (one of them
    asked for under another model's name: a canary share), and a call another served."""
    model_id = trained["model_id"]
    engine = make_engine(gateway_settings.database_url)
    try:
        with Session(engine) as session:
            row = session.get(ModelVersion, model_id)
            row.compute, row.status, row.promoted_at = COMPUTE, "production", 900
            session.add(row)
            mine = dict(asked=model_id, served=model_id)
            session.add_all(
                [
                    _call(
                        1,
                        **mine,
                        who="alice",
                        purpose="support",
                        prompt=100,
                        completion=50,
                        ms=1500,
                        at=1000,
                    ),
                    _call(
                        2,
                        **mine,
                        who="alice",
                        purpose="support",
                        prompt=200,
                        completion=100,
                        ms=3000,
                        at=2000,
                    ),
                    _call(
                        3,
                        **mine,
                        who="bob",
                        purpose="triage",
                        prompt=10,
                        completion=0,
                        ms=5,
                        at=3000,
                        outcome="rate_limit_exceeded",
                    ),
                    _call(
                        4,
                        asked=OTHER,
                        served=model_id,
                        who="carol",
                        purpose="support",
                        prompt=300,
                        completion=150,
                        ms=4500,
                        at=4000,
                    ),
                    _call(
                        5,
                        asked=model_id,
                        served=OTHER,
                        who="dave",
                        purpose="support",
                        prompt=999,
                        completion=999,
                        ms=9999,
                        at=5000,
                    ),
                ]
            )
            session.commit()
    finally:
        engine.dispose()
    return model_id


def _dossier(client, people, model_id, **params):
    response = client.get(f"/v1/models/{model_id}/dossier", headers=people["carol"], params=params)
    assert response.status_code == 200, response.text
    return response


class TestUseInProduction:
    def test_usage_is_what_the_version_served(self, client, people, served):
        section = _dossier(client, people, served).json()["production"]
        assert section["status"] == "production" and section["promoted_at"] == 900
        usage = section["usage"]
        assert usage["model_version_id"] == served
        assert (usage["calls"], usage["errors"]) == (4, 1)
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["tokens"]) == (
            610,
            300,
            910,
        )
        assert (usage["first_call_at"], usage["last_call_at"]) == (1000, 4000)
        purposes = {
            p["purpose"]: (p["calls"], p["tokens"], p["errors"]) for p in usage["by_purpose"]
        }
        assert purposes == {"support": (3, 900, 0), "triage": (1, 10, 1)}
        users = [
            (u["principal"], u["calls"], u["first_call_at"], u["last_call_at"])
            for u in usage["users"]
        ]
        assert users == [("alice", 2, 1000, 2000), ("bob", 1, 3000, 3000), ("carol", 1, 4000, 4000)]
        assert usage["users_total"] == 3
        assert {n["model_id"]: n["calls"] for n in usage["asked_as"]} == {served: 3, OTHER: 1}

    def test_cost_and_break_even_come_from_the_recorded_figures(self, client, people, served):
        cost = _dossier(client, people, served).json()["production"]["cost"]
        assert cost["training"] == {
            "device": "cpu",
            "device_hours": 2.0,
            "trained_tokens": 50_000,
            "cost": 4.0,
        }
        serving = cost["serving"]
        # The three successful calls: 900 tokens in 9 s of device time.
        assert (serving["calls_measured"], serving["tokens_measured"]) == (3, 900)
        assert serving["device_hours"] == pytest.approx(9 / 3600)
        assert serving["tokens_per_second"] == pytest.approx(100.0)
        assert serving["device_hours_per_1k_tokens"] == pytest.approx(9 / 3600 / 0.9)
        serving_price = 2.0 * 9 / 3600 / 0.9
        assert serving["price_per_1k_tokens"] == pytest.approx(serving_price)
        assert cost["saving_per_1k_tokens"] == pytest.approx(0.01 - serving_price)
        # 4.0 of training over a saving of 0.00444 per 1k tokens: 900k tokens, 3,000 calls.
        assert cost["break_even_tokens"] == pytest.approx(900_000)
        assert cost["break_even_calls"] == pytest.approx(3_000)
        assert cost["note"] is None

    def test_the_markdown_tells_it_with_the_formula(self, client, people, served):
        text = _dossier(client, people, served, format="markdown").text
        assert "## 11. Use in production" in text and "### Cost" in text
        assert "| alice | 2 | 450 | 0 | 1000 | 2000 |" in text
        assert "| break-even (tokens) | 900000" in text
        assert "break_even_tokens = 1000 × training_cost / " in text

    def test_unpriced_or_unused_says_why_there_is_no_break_even(self, trained, gateway_settings):
        engine = make_engine(gateway_settings.database_url)
        try:
            with Session(engine) as session:
                row = session.get(ModelVersion, trained["model_id"])
                unpriced = production.cost(session, row, job=None, settings=Settings())
                unused = production.cost(session, row, job=None, settings=gateway_settings)
        finally:
            engine.dispose()
        assert unpriced.break_even_tokens is None and "device_hour_price" in unpriced.note
        assert unused.serving.calls_measured == 0
        assert unused.break_even_tokens is None and "no successful call" in unused.note
