"""Rows the job API and the worker will write, written directly until they land: a
registered base model, a finished fine-tuning job and the model version it produced, with
adapter files on disk in the artifact store."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

from sqlmodel import Session

from gateway.base_models.models import RegisteredBaseModel
from gateway.db import make_engine
from gateway.jobs.models import FineTuningJob
from gateway.registry.models import ModelVersion

BASE_MANIFEST = hashlib.sha256(b"tiny-llama manifest").hexdigest()


def _session(settings) -> tuple[Any, Session]:
    engine = make_engine(settings.database_url)
    return engine, Session(engine, expire_on_commit=False)


def _write(settings, row: Any) -> None:
    engine, session = _session(settings)
    try:
        with session:
            session.add(row)
            session.commit()
    finally:
        engine.dispose()


_FILLERS = {"JSON": dict, "Boolean": lambda: False, "String": str, "Text": str}


def _with_required(table_model: type, values: dict[str, Any]) -> Any:
    """The row, with a neutral value for any NOT NULL column added to the table since
    these factories were written (the job API and worker are still moving)."""
    for column in table_model.__table__.columns:
        if (
            column.name in values
            or column.nullable
            or column.default is not None
            or column.server_default is not None
            or not hasattr(table_model, column.name)
        ):
            continue
        kind = type(column.type).__name__
        values[column.name] = _FILLERS.get(kind, int)()
    return table_model(**values)


def base_model(settings, name: str = "tiny-llama", *, status: str = "active") -> str:
    _write(
        settings,
        RegisteredBaseModel(
            name=name,
            status=status,
            license="Apache-2.0",
            source_kind="directory",
            source="/models/tiny-llama",
            manifest_sha256=BASE_MANIFEST,
            architecture="llama",
            parameter_count=1000,
            registered_by="ada",
            created_at=int(time.time()),
        ),
    )
    return name


def data_file(file: dict[str, Any], role: str = "training") -> dict[str, Any]:
    """A data_files entry as the worker records it, from a FilePublic JSON."""
    redaction = file.get("redaction")
    return {
        "role": role,
        "file_id": file["id"],
        "data_source": file["data_source"],
        "sha256": file["sha256"],
        "content_sha256": file["content_sha256"],
        "redaction": None
        if redaction is None
        else {
            key: redaction.get(key) for key in ("input_sha256", "output_sha256", "recogniser_set")
        },
    }


def write_adapter(directory: Path) -> list[dict[str, Any]]:
    """Adapter files as the trainer lays them out, with random weights; their hashes."""
    files = {
        "adapter/adapter_model.safetensors": secrets.token_bytes(3000),
        "adapter/adapter_config.json": b'{"r": 8, "lora_alpha": 16}\n',
        "MODEL_CARD.md": b"# a tiny adapter\n",
    }
    recorded = []
    for relative, content in sorted(files.items()):
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        recorded.append(
            {
                "relative_path": relative,
                "bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        )
    return recorded


def fine_tuned_model(
    settings,
    *,
    files: list[dict[str, Any]],
    requested_by: str = "bob",
    tenant: str = "default",
    base: str = "tiny-llama",
    parent: str | None = None,
    status: str = "candidate",
    verdict: str | None = "passed",
    purpose: str = "support-assistant",
    suffix: str = "support",
) -> str:
    """A succeeded job and its model version (id ft:<base>:<tenant>:<suffix>:<job id>);
    returns the model id."""
    job_id = f"ftjob-{secrets.token_hex(12)}"
    model_id = f"ft:{base}:{tenant}:{suffix}:{job_id}"
    now = int(time.time())
    entries = [
        data_file(file, role="training" if i == 0 else "validation") for i, file in enumerate(files)
    ]
    decisions = [
        {
            "gate": "authorize",
            "obj": f"ds:{entry['data_source']}",
            "act": "train",
            "allowed": True,
            "policy_version": "pv-" + "0" * 8,
        }
        for entry in entries
    ]
    hyperparameters = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0}
    job = _with_required(
        FineTuningJob,
        dict(
            id=job_id,
            tenant=tenant,
            created_by=requested_by,
            created_at=now,
            **({"created_ns": time.time_ns()} if hasattr(FineTuningJob, "created_ns") else {}),
            model=parent or base,
            base_model=base,
            parent_model_id=parent,
            training_file=entries[0]["file_id"],
            validation_file=entries[1]["file_id"] if len(entries) > 1 else None,
            purpose=purpose,
            suffix=suffix,
            seed=42,
            hyperparameters=hyperparameters,
            lora={"r": 8, "alpha": 16, "dropout": 0.05},
            evaluation={"enabled": True},
            spec={},
            decisions=decisions,
            estimate={"tokens": 1234},
            status="succeeded",
            fine_tuned_model=model_id,
            trained_tokens=1234,
            finished_at=now,
            compute={"device": "cpu", "seconds": 1.5},
            executor="local",
        ),
    )
    directory = Path(settings.artifact_dir) / "jobs" / job_id / "artifacts"
    adapter_files = write_adapter(directory)
    weights = next(f for f in adapter_files if f["relative_path"].endswith(".safetensors"))
    model = _with_required(
        ModelVersion,
        dict(
            id=model_id,
            tenant=tenant,
            job_id=job_id,
            created_at=now,
            requested_by=requested_by,
            purpose=purpose,
            status=status,
            base_model=base,
            base_manifest_sha256=BASE_MANIFEST,
            parent_model_id=parent,
            data_files=entries,
            decisions=decisions,
            hyperparameters=hyperparameters,
            seed=42,
            library_versions={"torch": "2.13.0", "peft": "0.17"},
            compute={"device": "cpu", "seconds": 1.5},
            evaluation={
                "systems": {
                    "zero_shot": {
                        "exact_match": 0.1,
                        "token_f1": 0.2,
                        "loss": 2.0,
                        "perplexity": 7.4,
                    },
                    "tuned": {"exact_match": 0.6, "token_f1": 0.7, "loss": 1.0, "perplexity": 2.7},
                },
                "verdict": {
                    "passed": verdict == "passed",
                    "checks": [
                        {
                            "name": "beats_zero_shot",
                            "passed": verdict == "passed",
                            "value": 0.5,
                            "threshold": 0.0,
                        }
                    ],
                },
            },
            verdict=verdict,
            adapter_files=adapter_files,
            adapter_sha256=weights["sha256"],
            artifact_dir=str(directory),
            flags=[],
        ),
    )
    engine, session = _session(settings)
    try:
        with session:
            session.add(job)
            session.flush()
            session.add(model)
            session.commit()
    finally:
        engine.dispose()
    return model_id


def model_row(settings, model_id: str) -> ModelVersion:
    engine, session = _session(settings)
    try:
        with session:
            return session.get(ModelVersion, model_id)
    finally:
        engine.dispose()
