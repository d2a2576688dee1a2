"""The resolve cache (INFERENCE_RESOLVE_CACHE_SECONDS): a change committed by this process
reaches the very next call, whatever the session or engine that made it; one committed
around the ORM (another process, plain SQL) is seen once the cached rows are older than
the setting."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update
from sqlmodel import Session

from gateway.data_sources.models import DataSource
from gateway.db import make_engine
from gateway.registry.models import ModelVersion
from tests.gateway.inference.conftest import PURPOSE, chat, update_model


def _ask(client, people, model, who="eve", **extra):
    return client.post("/v1/chat/completions", json=chat(model, **extra), headers=people[who])


@pytest.fixture
def gateway_settings(gateway_settings):
    # far longer than any test: whatever is seen at once is seen through invalidation
    return gateway_settings.model_copy(update={"inference_resolve_cache_seconds": 60.0})


def test_a_change_made_here_reaches_the_next_call(client, people, models, gateway_settings):
    production, candidate = models["production"], models["candidate"]
    assert _ask(client, people, production).status_code == 200  # its rows now cached

    # the data source narrowed to another purpose, by a session on another engine
    engine = make_engine(gateway_settings.database_url)
    try:
        with Session(engine) as session:
            source = session.get(DataSource, models["source"])
            assert source is not None
            source.allowed_purposes = ["billing"]
            session.add(source)
            session.commit()
        refused = _ask(client, people, production)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "purpose_not_allowed"
        with Session(engine) as session:
            source = session.get(DataSource, models["source"])
            assert source is not None
            source.allowed_purposes = [PURPOSE]
            session.add(source)
            session.commit()
    finally:
        engine.dispose()
    assert _ask(client, people, production).status_code == 200

    # a split through the API: every call now goes to the candidate
    split = {"candidate": candidate, "percent": 100, "reason": "all traffic to the next one"}
    done = client.post(f"/v1/models/{production}/traffic_split", json=split, headers=people["ada"])
    assert done.status_code == 200, done.text
    assert _ask(client, people, production).json()["model"] == candidate
    # the candidate flagged: the production version serves again, at once
    update_model(gateway_settings, candidate, flags=[{"reason": "drift", "ref": "r", "at": "t"}])
    assert _ask(client, people, production).json()["model"] == production

    # retired through the API
    retired = client.post(f"/v1/models/{production}/retire", headers=people["carol"])
    assert retired.status_code == 200, retired.text
    gone = _ask(client, people, production)
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "model_retired"


class TestAroundTheOrm:
    TTL = 1.0

    @pytest.fixture
    def gateway_settings(self, gateway_settings):
        return gateway_settings.model_copy(update={"inference_resolve_cache_seconds": self.TTL})

    def test_a_change_from_elsewhere_is_seen_within_the_setting(
        self, client, people, models, gateway_settings
    ):
        """Plain SQL, as another process would commit it: no event of this process sees
        it, so the cached row may serve until it is TTL old, and not after."""
        production = models["production"]
        assert _ask(client, people, production).status_code == 200
        engine = make_engine(gateway_settings.database_url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    update(ModelVersion)
                    .where(ModelVersion.id == production)
                    .values(flags=[{"reason": "revoked elsewhere", "ref": "x", "at": "now"}])
                )
        finally:
            engine.dispose()
        time.sleep(self.TTL * 1.2)
        flagged = _ask(client, people, production)
        assert flagged.status_code == 409 and flagged.json()["error"]["code"] == "model_flagged"
