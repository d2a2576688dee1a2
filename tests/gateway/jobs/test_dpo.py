"""DPO jobs through the real gateway and the real worker on the tiny model: preference files
are uploaded and scanned, a DPO job needs them (and a supervised job refuses them), and the
common SFT-then-DPO path starts from the tenant's fine-tuned model, with lineage pointing
to it and the preference evaluation in the job's events and the model's dossier."""

from __future__ import annotations

import json

import pytest

from gateway.executors.local import work
from tests.gateway.conftest import TINY_BASE, jsonl, upload

PURPOSE = "support-assistant"
NO_EVALUATION = {"enabled": False}


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(update={"model_import_roots": [tiny_model_root]})


def preference_file(count: int, *, start: int = 0) -> bytes:
    return jsonl(
        *(
            {
                "input": {
                    "messages": [{"role": "user", "content": f"Where is order {start + i}?"}]
                },
                "preferred_output": [
                    {
                        "role": "assistant",
                        "content": f"Order {start + i} shipped on day {i % 28 + 1}.",
                    }
                ],
                "non_preferred_output": [
                    {"role": "assistant", "content": f"No idea where {start + i} is, sorry."}
                ],
            }
            for i in range(count)
        )
    )


@pytest.fixture
def pairs(client, people, ready):
    """Preference files in the approved source of ``ready`` (which holds the chat files)."""
    source = ready["source"]["id"]
    training = upload(client, people["dora"], data_source=source, content=preference_file(16))
    validation = upload(
        client, people["dora"], data_source=source, content=preference_file(6, start=500)
    )
    assert training.status_code == validation.status_code == 200, training.text
    assert training.json()["status"] == "processed", training.json()
    return {"training": training.json(), "validation": validation.json()}


def _submit(client, headers, files, **overrides):
    body = {
        "model": TINY_BASE,
        "training_file": files["training"]["id"],
        "validation_file": files["validation"]["id"],
        "purpose": PURPOSE,
        "seed": 5,
        **overrides,
    }
    return client.post("/v1/fine_tuning/jobs", json=body, headers=headers)


def _dpo(beta=0.5, **hyperparameters) -> dict:
    return {"type": "dpo", "dpo": {"hyperparameters": {"beta": beta, **hyperparameters}}}


def test_the_method_and_the_files_must_agree(client, people, ready, pairs):
    chat = _submit(client, people["bob"], ready, method=_dpo())
    assert chat.status_code == 400 and chat.json()["error"]["code"] == "file_format_mismatch"
    assert chat.json()["error"]["param"] == "training_file"
    preference = _submit(client, people["bob"], pairs, hyperparameters={"n_epochs": 1})
    assert preference.status_code == 400
    assert preference.json()["error"]["code"] == "file_format_mismatch"
    bad_beta = _submit(client, people["bob"], pairs, method=_dpo(beta=0))
    assert bad_beta.status_code == 400
    mixed = _submit(
        client, people["bob"], pairs, method={"type": "dpo", "supervised": {"hyperparameters": {}}}
    )
    assert mixed.status_code == 400


def test_sft_then_dpo_through_the_worker(client, people, ready, pairs, gateway_settings):
    sft = _submit(
        client,
        people["bob"],
        ready,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        lora={"r": 4, "alpha": 8},
        evaluation=NO_EVALUATION,
    )
    assert sft.status_code == 200, sft.text
    assert work(gateway_settings, worker_id="w-sft", until_idle=True) == 1
    sft_job = client.get(f"/v1/fine_tuning/jobs/{sft.json()['id']}", headers=people["bob"]).json()
    assert sft_job["status"] == "succeeded", sft_job["error"]
    parent = sft_job["fine_tuned_model"]

    created = _submit(
        client,
        people["bob"],
        pairs,
        model=parent,
        method=_dpo(beta=0.5, n_epochs=2, batch_size=4, learning_rate_multiplier=10),
        evaluation={"enabled": True, "max_ood_loss_increase": 10.0},
    )
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["method"] == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "n_epochs": 2,
                "batch_size": 4,
                "learning_rate_multiplier": 10.0,
                "beta": 0.5,
            }
        },
    }
    assert job["parent_model"] == parent and job["base_model"] == TINY_BASE
    assert job["lora"]["r"] == 4  # the parent's adapter is the starting point

    assert work(gateway_settings, worker_id="w-dpo", until_idle=True) == 1
    done = client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=people["bob"]).json()
    assert done["status"] == "succeeded", done["error"]
    assert done["method"] == job["method"]

    events = client.get(
        f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}, headers=people["bob"]
    ).json()["data"]
    losses = sorted(
        (e["data"]["step"], e["data"]["train_loss"])
        for e in events
        if e["type"] == "metrics" and "train_loss" in (e["data"] or {})
    )
    assert losses[-1][1] < losses[0][1]
    (evaluation,) = [e["data"] for e in events if "verdict" in (e["data"] or {})]
    tuned, base = evaluation["systems"]["tuned"], evaluation["systems"]["base"]
    assert base["preference_accuracy"] == 0.5 and tuned["preference_accuracy"] > 0.5

    model_id = done["fine_tuned_model"]
    model = client.get(f"/v1/models/{model_id}", headers=people["bob"]).json()
    assert model["parent_model_id"] == parent and model["verdict"] in ("passed", "failed")
    lineage = client.get(f"/v1/models/{model_id}/lineage", headers=people["bob"]).json()
    assert [version["id"] for version in lineage["chain"]][:2] == [model_id, parent]
    dossier = client.get(f"/v1/models/{model_id}/dossier", headers=people["carol"])
    assert dossier.status_code == 200, dossier.text
    assert "preference_accuracy" in json.dumps(dossier.json())
