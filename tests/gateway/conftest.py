"""Governed fixtures shared by the gateway tests: the usual cast of people and an
approved data source (proposed by one person, approved by another)."""

from __future__ import annotations

import json

import pytest

SOURCE = {
    "name": "support chats",
    "description": "Customer support conversations",
    "classification": "internal",
    "contains_personal_data": True,
    "legal_basis": "contract",
    "allowed_purposes": ["support-assistant"],
    "owner": "dora",
    "retention_days": 365,
    "pii_action": "block",
    "min_examples": 2,
}


@pytest.fixture
def people(token):
    return {
        "dora": token("dora", "data-owner"),
        "carol": token("carol", "compliance-officer"),
        "cora": token("cora", "compliance-officer"),
        "bob": token("bob", "ml-engineer"),
        "ada": token("ada", "admin"),
    }


@pytest.fixture
def approved_source(client, people):
    """approved_source(**overrides) -> the approved data source's JSON."""

    counter = iter(range(1_000_000))

    def make(**overrides) -> dict:
        body = {**SOURCE, "name": f"{SOURCE['name']} {next(counter)}", **overrides}
        proposed = client.post("/v1/data_sources", json=body, headers=people["dora"])
        assert proposed.status_code == 201, proposed.text
        approved = client.post(
            f"/v1/data_sources/{proposed.json()['id']}/approve", headers=people["carol"]
        )
        assert approved.status_code == 200, approved.text
        return approved.json()

    return make


def chat_line(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def jsonl(*records) -> bytes:
    return b"".join(
        (record if isinstance(record, bytes) else json.dumps(record).encode()) + b"\n"
        for record in records
    )


def good_file(count: int = 4, *, start: int = 0) -> bytes:
    return jsonl(
        *(
            chat_line(
                f"What is the status of order {start + i}?",
                f"Order {start + i} shipped on day {i % 28 + 1} and arrives within a week.",
            )
            for i in range(count)
        )
    )


def upload(
    client,
    headers,
    *,
    data_source: str,
    content: bytes,
    purpose="fine-tune",
    filename="train.jsonl",
):
    return client.post(
        "/v1/files",
        data={"purpose": purpose, "data_source": data_source},
        files={"file": (filename, content, "application/jsonl")},
        headers=headers,
    )


TINY_BASE = "tiny-llama"


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory):
    """An import root holding one tiny random-initialised Llama (built once per run)."""
    from trainer.fixtures import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-model-root")
    build_tiny_model(root / TINY_BASE, seed=0)
    return root


@pytest.fixture
def registered_base(client, people, tiny_model_root, gateway_settings):
    """The tiny model registered as base model `tiny-llama` (needs `model_import_roots` to
    hold `tiny_model_root`: the `gateway_settings` override below sets it)."""
    response = client.post(
        "/v1/base_models",
        json={
            "name": TINY_BASE,
            "license": "apache-2.0",
            "source": {"directory": str(tiny_model_root / TINY_BASE)},
        },
        headers=people["ada"],
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def grant(client, people):
    """grant(sub, obj, act): an admin adds `p, user:<sub>, default, <obj>, <act>, allow`."""

    def add(sub: str, obj: str, act: str, *, effect: str = "allow") -> None:
        response = client.post(
            "/v1/policies/rules",
            json={
                "rules": [{"ptype": "p", "values": [f"user:{sub}", "default", obj, act, effect]}]
            },
            headers=people["ada"],
        )
        assert response.status_code == 201, response.text

    return add


@pytest.fixture
def ready(client, people, approved_source, registered_base, grant):
    """An approved source with a training and a validation file, and bob allowed to train
    on it (needs the tiny base model importable: see `registered_base`)."""
    source = approved_source(min_examples=10)
    training = upload(
        client, people["dora"], data_source=source["id"], content=good_file(20)
    ).json()
    validation = upload(
        client, people["dora"], data_source=source["id"], content=good_file(5, start=1000)
    ).json()
    assert training["status"] == validation["status"] == "processed"
    grant("bob", f"ds:{source['id']}", "train")
    return {"source": source, "training": training, "validation": validation}
