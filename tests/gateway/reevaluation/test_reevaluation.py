"""Re-evaluation after release, on a tiny model a real job trained and evaluated: the
schedule re-runs the held-out set and the OOD probe of a production version, an unchanged
adapter stays unflagged, and a worse adapter swapped in is flagged `degraded` (with the
numbers), audited and listed in "waiting for me"."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from gateway.console import home
from gateway.main import create_app
from gateway.reevaluation import service
from gateway.reevaluation.models import Reevaluation
from gateway.security import Principal, mint_dev_token
from tests.gateway.executors.conftest import TENANT
from tests.gateway.reevaluation.conftest import WEIGHTS, model_row

DAY = 86_400


def drain(world) -> list[str]:
    """Runs every queued re-evaluation, as the gateway's thread does."""
    ran = []
    while (claimed := service.claim_next(world.engine)) is not None:
        service.run(world.engine, settings=world.settings, reevaluation_id=claimed)
        ran.append(claimed)
    return ran


def reevaluations_of(world, model_id: str) -> list[Reevaluation]:
    with Session(world.engine) as session:
        return service.for_model(session, model_id)


def actions(world, model_id: str) -> list[str]:
    return [action for action, _, _ in world.audit(f"model:{model_id}")]


def headers(world, sub: str, role: str) -> dict[str, str]:
    value = mint_dev_token(world.settings, sub=sub, roles=[role], tenant=TENANT, ttl=600)
    return {"Authorization": f"Bearer {value}"}


class TestTheSchedule:
    def test_an_unchanged_adapter_is_reevaluated_when_due_and_not_flagged(self, world, release):
        model_id = release("same", promoted_at=int(time.time()) - 40 * DAY)
        recent = release("recent")
        with Session(world.engine) as session:
            queued = service.schedule_due(session, settings=world.settings, policy_version="pv-x")
            session.commit()
        assert [r.model_id for r in map(lambda i: _row(world, i), queued)].count(model_id) == 1
        assert not reevaluations_of(world, recent)  # promoted today: not due
        drain(world)

        (done,) = reevaluations_of(world, model_id)
        assert done.status == "succeeded" and done.progress == 1.0 and done.trigger == "schedule"
        assert done.decision["setting"] == "reevaluate_every_days"
        assert done.decision["policy_version"] == "pv-x"
        assert done.degraded is False and done.comparison["degraded"] is False
        # The same held-out set, few-shot pool and OOD text: the same figures as at training.
        trained = model_row(world, model_id).evaluation
        assert done.report["held_out_examples"] == trained["held_out_examples"]
        assert done.comparison["ood_probe"]["now"] == pytest.approx(
            trained["ood_probe"]["loss_after"], rel=1e-4
        )
        assert {m["name"] for m in done.comparison["metrics"]} == {"exact_match", "token_f1"}
        assert all(abs(m["change"]) < 1e-6 for m in done.comparison["metrics"])
        assert model_row(world, model_id).flags == []
        assert actions(world, model_id) == [
            "model.reevaluation_requested",
            "model.reevaluation_started",
            "model.reevaluation_succeeded",
        ]
        # Re-evaluated just now: not due again.
        with Session(world.engine) as session:
            again = service.schedule_due(session, settings=world.settings, policy_version="pv-x")
            session.commit()
        assert model_id not in [_row(world, i).model_id for i in again]

    def test_zero_days_turns_the_schedule_off(self, world, release):
        release("off", promoted_at=int(time.time()) - 400 * DAY)
        settings = world.settings.model_copy(update={"reevaluate_every_days": 0})
        with Session(world.engine) as session:
            assert service.schedule_due(session, settings=settings, policy_version=None) == []


def _row(world, reevaluation_id: str) -> Reevaluation:
    with Session(world.engine) as session:
        row = session.get(Reevaluation, reevaluation_id)
        assert row is not None
        return row


class TestOnDemand:
    @pytest.fixture
    def client(self, world):
        with TestClient(create_app(world.settings)) as client:
            yield client

    def test_a_worse_adapter_is_flagged_degraded(self, world, release, client):
        model_id = release("worse", worse=True)
        carol = headers(world, "carol", "compliance-officer")
        url = f"/v1/models/{model_id}/reevaluations"
        refused = client.post(url, headers=headers(world, "bob", "ml-engineer"))
        assert refused.status_code == 403

        asked = client.post(url, headers=carol)
        assert asked.status_code == 202, asked.text
        body = asked.json()
        assert body["status"] == "queued" and body["trigger"] == "on_demand"
        assert body["decision"]["action"] == "evaluate" and body["decision"]["policy_version"]
        twice = client.post(url, headers=carol)
        assert twice.status_code == 409
        assert twice.json()["error"]["code"] == "reevaluation_in_progress"

        assert body["id"] in drain(world)
        listed = client.get(url, headers=carol).json()["data"]
        assert [item["id"] for item in listed] == [body["id"]]
        done = listed[0]
        assert done["status"] == "succeeded" and done["degraded"] is True
        # The re-initialised adapter answers as the base model does: its token F1 is gone.
        fell = {m["name"]: m for m in done["comparison"]["metrics"] if m["degraded"]}
        assert "token_f1" in fell and fell["token_f1"]["at_promotion"] > 0.05
        assert fell["token_f1"]["change"] < -0.05

        (flag,) = model_row(world, model_id).flags
        assert flag["reason"] == "degraded" and flag["ref"] == body["id"]
        assert "token_f1" in [m["name"] for m in flag["metrics"]]
        # (queued events first, then chained ones: compared as a set of actions)
        audited = {
            action: (actor, details) for action, actor, details in world.audit(f"model:{model_id}")
        }
        assert sorted(audited) == [
            "authz.denied",  # bob's refusal
            "model.degraded",
            "model.reevaluation_requested",
            "model.reevaluation_started",
            "model.reevaluation_succeeded",
        ]
        actor, details = audited["model.reevaluation_requested"]
        assert actor == "carol" and details["act"] == "evaluate"
        degraded = audited["model.degraded"][1]
        assert degraded["reevaluation_id"] == body["id"] and degraded["reason"] == "degraded"

        # "Waiting for me": the compliance officer sees it, with its numbers.
        state = client.app.state.gateway
        with Session(world.engine) as session:
            panels = home.waiting_for(
                session,
                state=state,
                principal=Principal(sub="carol", tenant=TENANT, roles=("compliance-officer",)),
            )
            engineer = home.waiting_for(
                session,
                state=state,
                principal=Principal(sub="bob", tenant=TENANT, roles=("ml-engineer",)),
            )
        (panel,) = [p for p in panels if p.title == "Models degraded after release"]
        assert any(text.startswith(model_id) and "token_f1" in text for text, _ in panel.items)
        assert not [p for p in engineer if p.title == "Models degraded after release"]

        # Flagged: not promoted, nor listed as healthy; the dossier tells the re-evaluation.
        dossier = client.get(f"/v1/models/{model_id}/dossier", headers=carol).json()
        (told,) = dossier["production"]["reevaluations"]
        assert told["id"] == body["id"] and told["degraded"] is True

    def test_refusals(self, world, release, client, trained):
        carol = headers(world, "carol", "compliance-officer")
        missing = client.post(
            f"/v1/models/ft:tiny-llama:{TENANT}:nope:x/reevaluations", headers=carol
        )
        assert missing.status_code == 404
        model_id = release("plain")
        with Session(world.engine) as session:
            row = session.get(type(trained), model_id)
            row.evaluation = None
            session.add(row)
            session.commit()
        unevaluated = client.post(f"/v1/models/{model_id}/reevaluations", headers=carol)
        assert unevaluated.status_code == 409
        assert unevaluated.json()["error"]["code"] == "no_evaluation_to_compare"

    def test_a_tampered_adapter_fails_the_reevaluation(self, world, release, client):
        model_id = release("tampered")
        carol = headers(world, "carol", "compliance-officer")
        asked = client.post(f"/v1/models/{model_id}/reevaluations", headers=carol).json()
        weights = model_row(world, model_id).artifact_dir + "/" + WEIGHTS
        with open(weights, "ab") as handle:
            handle.write(b"\0")
        drain(world)
        done = _row(world, asked["id"])
        assert done.status == "failed" and done.error["code"] == "reevaluation_adapter_mismatch"
        assert "model.reevaluation_failed" in actions(world, model_id)
        assert model_row(world, model_id).flags == []


class TestCompare:
    AT_PROMOTION = {
        "systems": {"tuned": {"exact_match": 0.6, "token_f1": 0.8}},
        "ood_probe": {"loss_after": 2.0},
    }

    def compare(self, exact_match, token_f1, ood_loss):
        now = {
            "systems": {"tuned": {"exact_match": exact_match, "token_f1": token_f1}},
            "ood_probe": {"loss_after": ood_loss},
        }
        return service.compare(self.AT_PROMOTION, now, max_drop=0.05, max_ood_increase=0.05)

    def test_within_the_limits_is_not_degraded(self):
        assert self.compare(0.56, 0.80, 2.09)["degraded"] is False

    def test_a_task_metric_that_fell_further_degrades(self):
        result = self.compare(0.5, 0.8, 2.0)
        assert result["degraded"] is True
        assert [m["name"] for m in result["metrics"] if m["degraded"]] == ["exact_match"]
        flag = service.degraded_flag("reeval-1", result)
        assert flag["metrics"] == [
            {"name": "exact_match", "at_promotion": 0.6, "now": 0.5, "change": pytest.approx(-0.1)}
        ]
        assert flag["ood_probe"] is None

    def test_an_ood_loss_that_rose_further_degrades(self):
        result = self.compare(0.6, 0.8, 2.2)
        assert result["degraded"] is True and result["ood_probe"]["degraded"] is True
