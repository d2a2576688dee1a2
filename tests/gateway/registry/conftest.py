"""A trained model to govern: an approved source that redacts PII, two uploaded file
versions (one redacted), a registered base model and a candidate fine-tuned on them."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import (  # noqa: F401 (fixtures)
    approved_source,
    chat_line,
    good_file,
    jsonl,
    upload,
)
from tests.gateway.registry import factories

EMAIL = "jane.roe@example.org"


def with_pii() -> bytes:
    return jsonl(
        chat_line("hi", "all good here, thanks for asking"),
        chat_line(f"please write to {EMAIL}", "done, I have noted that address"),
        chat_line("where is my parcel?", "it left the depot this morning"),
    )


@pytest.fixture
def people(token):
    """The gateway tests' cast, and eve: a second engineer, to promote what bob trained."""
    return {
        "dora": token("dora", "data-owner"),
        "carol": token("carol", "compliance-officer"),
        "cora": token("cora", "compliance-officer"),
        "bob": token("bob", "ml-engineer"),
        "eve": token("eve", "ml-engineer"),
        "ada": token("ada", "admin"),
    }


@pytest.fixture
def trained(client, people, approved_source, gateway_settings):  # noqa: F811
    source = approved_source(pii_action="redact")
    files = [
        upload(client, people["dora"], data_source=source["id"], content=content).json()
        for content in (with_pii(), good_file(4))
    ]
    assert [file["status"] for file in files] == ["processed", "processed"]
    assert files[0]["redaction"] is not None
    factories.base_model(gateway_settings)
    model_id = factories.fine_tuned_model(gateway_settings, files=files)
    return {"source": source, "files": files, "model_id": model_id}


def ask(client, headers, model_id, reason="ready for production", **body):
    """POST /v1/models/{id}/promotion_requests."""
    return client.post(
        f"/v1/models/{model_id}/promotion_requests",
        json={"reason": reason, **body},
        headers=headers,
    )


def promote(client, people, model_id, *, requester="eve", approver="carol", **body) -> dict:
    """A promotion the whole way: asked for, then approved; the approved request."""
    asked = ask(client, people[requester], model_id, **body)
    assert asked.status_code == 201, asked.text
    approved = client.post(
        f"/v1/promotion_requests/{asked.json()['id']}/approve", headers=people[approver]
    )
    assert approved.status_code == 200, approved.text
    return approved.json()
