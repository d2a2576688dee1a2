"""The data-quality gates a data source sets (issue 17): conflicting answers
(max_conflict_rate) and the overlap gate's tolerance (overlap_threshold,
max_overlapping_lines), through the real API; and the datasheet API carrying both analyses."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import TINY_BASE, chat_line, upload
from tests.ingest.conftest import jsonl, varied_examples

PURPOSE = "support-assistant"


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(update={"model_import_roots": [tiny_model_root]})


def conflicting_file() -> bytes:
    """20 distinct examples, then the same question 5 times: 4 say 30 days, 1 says 14."""
    lines = [
        chat_line(
            f"How do I reset the password of account {i} in region {i % 3}?",
            f"Step {i}: open settings, then security, then reset account {i}.",
        )
        for i in range(20)
    ]
    for answer in ["30 days.", "30 days", "30 days!", "14 days", "30 DAYS"]:
        lines.append(chat_line("What is the refund window for online orders?", answer))
    return jsonl(*lines)


def _job(client, headers, training, validation=None):
    body = {
        "model": TINY_BASE,
        "training_file": training,
        "purpose": PURPOSE,
        "hyperparameters": {"n_epochs": 1},
    }
    if validation:
        body["validation_file"] = validation
    return client.post("/v1/fine_tuning/jobs", json=body, headers=headers)


def test_conflicts_in_the_datasheet_and_the_gate_names_the_groups(
    client, people, approved_source, registered_base, grant
):
    source = approved_source(min_examples=10, max_conflict_rate=0.1)
    assert source["max_conflict_rate"] == 0.1 and source["overlap_threshold"] == 0.8
    training = upload(client, people["dora"], data_source=source["id"], content=conflicting_file())
    assert training.status_code == 200, training.text
    file_id = training.json()["id"]
    grant("bob", f"ds:{source['id']}", "train")

    refused = _job(client, people["bob"], file_id)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "too_many_conflicts" and error["param"] == "training_file"
    assert error["details"]["conflict_rate"] == 0.2
    assert error["details"]["groups"][0]["lines"] == [21, 22, 23, 24, 25]
    assert "lines 21, 22, 23, 24, 25" in error["message"]

    lenient = approved_source(min_examples=10, max_conflict_rate=0.25)
    again = upload(client, people["dora"], data_source=lenient["id"], content=conflicting_file())
    grant("bob", f"ds:{lenient['id']}", "train")
    job = _job(client, people["bob"], again.json()["id"])
    assert job.status_code == 200, job.text
    [gate] = [d for d in job.json()["decisions"] if d.get("gate") == "conflicts"]
    assert gate["conflict_rate"] == 0.2 and gate["max_conflict_rate"] == 0.25


def test_a_refused_overlap_names_the_lines_and_the_tolerance_is_the_sources(
    client, people, approved_source, registered_base, grant
):
    source = approved_source(min_examples=10)
    examples = varied_examples(20, seed=4)
    training = upload(client, people["dora"], data_source=source["id"], content=jsonl(*examples))
    # line 2 repeats training line 4 with case, punctuation and one word changed
    user, answer = (m["content"] for m in examples[3]["messages"])
    words = answer.split()
    words[len(words) // 2] = "different"
    validation = jsonl(
        chat_line("Which carrier handles parcels to Norway in winter?", "Posten handles them."),
        chat_line(user.upper().replace("?", "!"), ", ".join(words).capitalize() + "."),
    )
    paraphrase = upload(client, people["dora"], data_source=source["id"], content=validation)
    grant("bob", f"ds:{source['id']}", "train")
    refused = _job(client, people["bob"], training.json()["id"], paraphrase.json()["id"])
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "train_validation_overlap"
    assert error["details"]["threshold"] == 0.8 and error["details"]["max_overlapping_lines"] == 0
    [match] = error["details"]["matches"]
    assert (match["validation_line"], match["training_line"]) == (2, 4)
    assert match["similarity"] >= 0.8

    tolerant = approved_source(min_examples=10, max_overlapping_lines=1, overlap_threshold=0.9)
    t2 = upload(client, people["dora"], data_source=tolerant["id"], content=jsonl(*examples))
    v2 = upload(client, people["dora"], data_source=tolerant["id"], content=validation)
    grant("bob", f"ds:{tolerant['id']}", "train")
    job = _job(client, people["bob"], t2.json()["id"], v2.json()["id"])
    assert job.status_code == 200, job.text
    [gate] = [d for d in job.json()["decisions"] if d.get("gate") == "train_validation_overlap"]
    assert gate["threshold"] == 0.9 and gate["max_overlapping_lines"] == 1


def test_a_conflict_rate_out_of_range_is_a_400(client, people):
    from tests.gateway.conftest import SOURCE

    response = client.post(
        "/v1/data_sources",
        json={**SOURCE, "name": "bad rate", "max_conflict_rate": 1.5},
        headers=people["dora"],
    )
    assert response.status_code in (400, 422)


def test_a_fingerprint_of_the_older_shingling_is_a_400_not_a_500(tmp_path):
    import numpy as np

    from gateway.jobs import gates
    from ingest import dedup

    paths = []
    for name in ("t", "v"):
        writer = dedup.FingerprintWriter(tmp_path)
        writer.append(np.ones(1, "<u8"), dedup.signatures([b"some text here"]))
        paths.append(writer.finish(tmp_path / name))
    with open(paths[0], "r+b") as handle:  # hash id 1: the 16-byte shingles of before
        handle.seek(12)
        handle.write((1).to_bytes(2, "little"))
    outcome = gates.no_overlap(paths[0], paths[1])
    assert outcome.refusal is not None and outcome.refusal.code == "fingerprint_outdated"
