"""Home, "waiting for me": each panel found by the API's own list and policy check, and a
person's own requests left out of their queue (four eyes)."""

from __future__ import annotations

from tests.gateway.conftest import good_file, upload
from tests.gateway.registry import factories


def test_a_compliance_officer_sees_promotions_and_erasures_to_decide(
    client, people, approved_source, gateway_settings, sign_in, token
):
    source = approved_source()
    files = [upload(client, people["dora"], data_source=source["id"], content=good_file()).json()]
    factories.base_model(gateway_settings)
    model_id = factories.fine_tuned_model(gateway_settings, files=files)
    asked = client.post(
        f"/v1/models/{model_id}/promotion_requests",
        json={"reason": "ready for production"},
        headers=token("eve", "ml-engineer"),
    )
    assert asked.status_code in (200, 201), asked.text
    filed = client.post(
        "/v1/erasure_requests", json={"subject": "someone@example.org"}, headers=people["carol"]
    )
    assert filed.status_code == 201

    home = sign_in("carol", "compliance-officer").get("/console").text
    assert 'aria-label="Promotions to approve: 1"' in home
    assert f'href="/console/models/{model_id}"' in home
    assert 'aria-label="Erasure requests to decide: 1"' in home
    assert f'href="/console/erasure/{filed.json()["id"]}"' in home

    # Four eyes: the requester, were they an officer too, has nothing to approve.
    requester = sign_in("eve", "ml-engineer", "compliance-officer").get("/console").text
    assert 'aria-label="Promotions to approve: 0"' in requester
    engineer = sign_in("bob", "ml-engineer").get("/console").text
    assert "Promotions to approve" not in engineer
    assert "Erasure requests to decide" not in engineer
