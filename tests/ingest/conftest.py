from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest import IngestLimits, IngestResult, ingest


def chat(*turns: tuple[str, str], **extra) -> dict:
    messages = [{"role": role, "content": content} for role, content in turns]
    return {"messages": messages, **extra}


def jsonl(*records: dict | str | bytes) -> bytes:
    out = []
    for record in records:
        if isinstance(record, bytes):
            out.append(record)
        elif isinstance(record, str):
            out.append(record.encode())
        else:
            out.append(json.dumps(record, ensure_ascii=False).encode())
    return b"\n".join(out) + b"\n"


def varied_examples(count: int, *, seed: int = 0) -> list[dict]:
    """Distinct, realistic-looking chat examples (no PII)."""
    import random

    rng = random.Random(seed)
    _text = (
        "order refund shipping account invoice password update release build test cluster "
        "node latency memory budget contract vendor schedule meeting report customer "
        "ticket priority feature bug deploy rollback metric alert"
    )
    words = _text.split()
    examples = []
    for i in range(count):
        question = " ".join(rng.choice(words) for _ in range(rng.randint(8, 20)))
        answer = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
        examples.append(chat(("user", f"Question {i}: {question}?"), ("assistant", answer)))
    return examples


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def run_ingest(store: Path) -> Callable[..., IngestResult]:
    def run(data: bytes, *, pii_action: str = "allow", **kwargs) -> IngestResult:
        kwargs.setdefault("limits", IngestLimits())
        return ingest(io.BytesIO(data), dest_dir=store, pii_action=pii_action, **kwargs)

    return run


def stored_names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}
