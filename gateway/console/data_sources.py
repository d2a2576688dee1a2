"""The data-source pages' form: the API's `DataSourceCreate`, filled from form fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.console.forms import lines
from gateway.data_sources.schemas import Classification, LegalBasis, PiiAction

CLASSIFICATIONS = [(c.value, c.value) for c in Classification]
LEGAL_BASES = [("", "none"), *((b.value, b.value.replace("_", " ")) for b in LegalBasis)]
PII_ACTIONS = [
    (PiiAction.block.value, "refuse the upload"),
    (PiiAction.redact.value, "redact it"),
    (PiiAction.allow.value, "allow it (needs a legal basis)"),
]
STATUSES = ("proposed", "approved", "revoked")


def proposal(form: Mapping[str, Any]) -> dict[str, Any]:
    """Form fields as the API's JSON body would carry them (the schema judges them)."""
    return {
        "name": form.get("name", ""),
        "description": form.get("description", ""),
        "classification": form.get("classification", ""),
        "contains_personal_data": form.get("contains_personal_data") == "true",
        "legal_basis": form.get("legal_basis") or None,
        "allowed_purposes": lines(form.get("allowed_purposes")),
        "owner": form.get("owner", ""),
        "retention_days": form.get("retention_days", ""),
        "pii_action": form.get("pii_action", ""),
        "min_examples": form.get("min_examples", ""),
    }


def status_filter(value: str | None) -> str | None:
    return value if value in STATUSES else None
