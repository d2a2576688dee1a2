"""The model pages: the registry, a model's lineage graph and evaluation, the dossier, and
promotion as a request then an approval by someone else (four eyes), all through forms."""

from __future__ import annotations

import re

import pytest

from tests.gateway.conftest import good_file, upload
from tests.gateway.console.conftest import csrf_of
from tests.gateway.registry import factories


@pytest.fixture
def model_id(client, people, approved_source, gateway_settings):
    source = approved_source()
    files = [upload(client, people["dora"], data_source=source["id"], content=good_file(4)).json()]
    factories.base_model(gateway_settings)
    return factories.fine_tuned_model(gateway_settings, files=files)


def test_the_registry_and_a_model_page(sign_in, model_id):
    client = sign_in("carol", "compliance-officer")
    listing = client.get("/console/models")
    assert listing.status_code == 200 and model_id in listing.text
    page = client.get(f"/console/models/{model_id}")
    assert page.status_code == 200
    svgs = re.findall(r"<svg.*?</svg>", page.text, re.S)
    assert len(svgs) == 2  # the lineage and the evaluation
    assert "base tiny-llama" in svgs[0] and "adapter" in svgs[0]
    assert "exact match" in svgs[1]
    dossier = client.get(f"/console/models/{model_id}/dossier.md")
    assert dossier.status_code == 200 and dossier.text.startswith("#")
    assert "attachment" in dossier.headers["content-disposition"]


def test_promotion_is_asked_for_then_approved_by_another_person(sign_in, model_id):
    client = sign_in("eve", "ml-engineer")
    page = client.get(f"/console/models/{model_id}")
    form = {"csrf": csrf_of(page.text), "reason": "ready", "override_reason": "accepted"}
    refused = client.post(
        f"/console/models/{model_id}/promotion_requests", data=form | {"reason": ""}
    )
    assert refused.status_code == 422 and 'id="f-reason-error"' in refused.text
    asked = client.post(f"/console/models/{model_id}/promotion_requests", data=form)
    assert asked.status_code == 200, asked.text  # back on the model page
    request_id = re.search(r"<code>(promreq-[0-9a-f]+)</code>", asked.text).group(1)

    officer = sign_in("carol", "compliance-officer")
    page = officer.get(f"/console/models/{model_id}")
    approved = officer.post(
        f"/console/promotion-requests/{request_id}/approve", data={"csrf": csrf_of(page.text)}
    )
    assert approved.status_code == 200
    assert "status-production" in approved.text and "carol" in approved.text


def test_the_requester_cannot_approve_their_own_request(sign_in, model_id):
    both = sign_in("zed", "ml-engineer", "compliance-officer")
    page = both.get(f"/console/models/{model_id}")
    csrf = csrf_of(page.text)
    asked = both.post(
        f"/console/models/{model_id}/promotion_requests",
        data={"csrf": csrf, "reason": "ready", "override_reason": "accepted"},
    )
    request_id = re.search(r"<code>(promreq-[0-9a-f]+)</code>", asked.text).group(1)
    refused = both.post(f"/console/promotion-requests/{request_id}/approve", data={"csrf": csrf})
    assert refused.status_code == 403
    assert "four_eyes_violation" in refused.text and "Not allowed" in refused.text
