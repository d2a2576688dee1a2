"""The dossier is a typed document: the OpenAPI schema names every section's model and
field, and a real dossier validates against DossierPublic with nothing left untyped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from gateway.dossier import schemas
from gateway.dossier.schemas import DossierPublic

SECTIONS = {
    "general": schemas.DossierGeneral,
    "intended_purpose": schemas.DossierIntendedPurpose,
    "data": schemas.DossierData,
    "training": schemas.DossierTraining,
    "evaluation": schemas.DossierEvaluation,
    "approvals": schemas.DossierApprovals,
    "lineage": schemas.LineagePublic,
    "audit": schemas.DossierAudit,
    "production": schemas.DossierProduction,
}
LISTS = {
    "preparation": {schemas.DossierPreparedFile, schemas.DossierUnheldFile},
    "flags": {schemas.ModelFlag},
    "cleared_flags": {schemas.ModelClearedFlag},
}
# Left open on purpose: each action's details are its own.
OPEN = {"DossierEvent.details"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _dossier_json(client, headers, model_id) -> dict[str, Any]:
    response = client.get(f"/v1/models/{model_id}/dossier", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _untyped(components: dict, schema: dict, where: str, seen: set[str]) -> Iterator[str]:
    """Where an object (or an Any) with no declared shape is reachable from ``schema``."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            yield from _untyped(components, components[name], name, seen)
        return
    if not schema or (
        schema.get("type") == "object"
        and "properties" not in schema
        and not isinstance(schema.get("additionalProperties"), dict)
    ):
        yield where
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, ()):
            yield from _untyped(components, option, where, seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _untyped(components, schema[key], where, seen)
    for name, field in schema.get("properties", {}).items():
        yield from _untyped(components, field, f"{where}.{name}", seen)


class TestTheOpenApiSchema:
    @pytest.fixture
    def openapi(self, client) -> dict[str, Any]:
        return client.get("/openapi.json").json()

    def test_the_route_answers_with_the_dossier_model(self, openapi):
        ok = openapi["paths"]["/v1/models/{model_id}/dossier"]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"] == _ref("DossierPublic")

    def test_it_names_every_section_by_its_model(self, openapi):
        components = openapi["components"]["schemas"]
        dossier = components["DossierPublic"]["properties"]
        for section, model in SECTIONS.items():
            assert dossier[section] == _ref(model.__name__), section
        for section, models in LISTS.items():
            items = dossier[section]["items"]
            refs = {option["$ref"] for option in items.get("anyOf", [items])}
            assert refs == {_ref(model.__name__)["$ref"] for model in models}, section

    def test_each_section_model_documents_its_fields(self, openapi):
        components = openapi["components"]["schemas"]
        for model in [*SECTIONS.values(), *LISTS["preparation"]]:
            component = components[model.__name__]
            assert component.get("description"), model.__name__
            assert set(component["properties"]) == set(model.model_fields), model.__name__

    def test_nothing_under_the_dossier_is_an_untyped_object(self, openapi):
        components = openapi["components"]["schemas"]
        found = set(_untyped(components, _ref("DossierPublic"), "DossierPublic", set()))
        assert found == OPEN

    def test_a_steps_name_is_required_for_its_discriminator(self, openapi):
        components = openapi["components"]["schemas"]
        for name in ("Validation", "Pii", "Redaction", "Erasure", "Deletion"):
            assert "step" in components[f"Dossier{name}Step"]["required"]


def _extras(value: Any, where: str = "$") -> Iterator[str]:
    """Keys a model kept without a declared field, anywhere in ``value``."""
    if isinstance(value, BaseModel):
        yield from (f"{where}.{key}" for key in value.model_extra or {})
        for name in type(value).model_fields:
            yield from _extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for item in value:
            yield from _extras(item, f"{where}[]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _extras(item, f"{where}.{key}")


class TestADossier:
    def test_it_validates_and_serialises_back_unchanged(self, client, people, trained):
        body = _dossier_json(client, people["carol"], trained["model_id"])
        again = TypeAdapter(DossierPublic).dump_python(
            DossierPublic.model_validate(body), mode="json"
        )
        assert json.dumps(again) == json.dumps(body)  # keys, values and their order

    def test_what_the_real_writers_record_is_typed_throughout(self, client, people, worker_shaped):
        body = _dossier_json(client, people["carol"], worker_shaped["model_id"])
        dossier = DossierPublic.model_validate(body)
        assert list(_extras(dossier)) == []
        assert dossier.training.compute.estimate is not None
        assert dossier.evaluation.report is not None and dossier.evaluation.report.verdict
        datasheet = dossier.data.files[0].datasheet
        assert datasheet is not None and datasheet.schema_ == "tunegate.datasheet/2"
        assert body["data"]["files"][0]["datasheet"]["schema"] == "tunegate.datasheet/2"

    def test_a_record_quotes_its_row_as_written(self, client, people, trained):
        """The registry's factories write smaller, older shapes than the worker: they come
        out as written, no key added, none lost, an int still an int."""
        training = _dossier_json(client, people["carol"], trained["model_id"])["training"]
        assert json.dumps(training["compute"]) == json.dumps({"device": "cpu", "seconds": 1.5})
        assert training["job"]["estimate"] == {"tokens": 1234}
        assert training["hyperparameters"] == {
            "n_epochs": 2,
            "batch_size": 4,
            "learning_rate_multiplier": 1.0,
        }
        assert isinstance(training["hyperparameters"]["n_epochs"], int)
