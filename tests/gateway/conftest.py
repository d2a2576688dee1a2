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
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}  # fmt: skip


def jsonl(*records) -> bytes:
    return b"".join(
        (record if isinstance(record, bytes) else json.dumps(record).encode()) + b"\n"
        for record in records
    )


def good_file(count: int = 4, *, start: int = 0) -> bytes:
    return jsonl(*(
        chat_line(f"What is the status of order {start + i}?",
                  f"Order {start + i} shipped on day {i % 28 + 1} and arrives within a week.")
        for i in range(count)
    ))  # fmt: skip


def upload(client, headers, *, data_source: str, content: bytes, purpose="fine-tune",
           filename="train.jsonl"):  # fmt: skip
    return client.post(
        "/v1/files",
        data={"purpose": purpose, "data_source": data_source},
        files={"file": (filename, content, "application/jsonl")},
        headers=headers,
    )
