"""The regulators' documents (issue 16 §4): the Art. 53(1)(d) training-content summary, the
GDPR Art. 30(1) records of processing and the dossier's Annex IV checklist, each derived
from recorded rows (model, files, datasheets, sources, policy)."""

from __future__ import annotations

import csv
import io

import pytest

from gateway.compliance.markdown import CSV_COLUMNS
from gateway.compliance.schemas import NOT_RECORDED, TO_COMPLETE
from tests.gateway.conftest import good_file, upload
from tests.gateway.registry import factories
from tests.gateway.registry.conftest import with_pii

RECORDS = "/v1/compliance/records_of_processing"


@pytest.fixture
def recorded(client, people, approved_source, gateway_settings):
    """A redacting user-data source with PII and declared categories, a model trained on
    it; a second source without personal data; a third declared personal, no categories."""
    source = approved_source(
        pii_action="redact",
        data_origin="user",
        data_subject_categories=["customers"],
        data_categories=["support chats", "contact details"],
    )
    files = [
        upload(client, people["dora"], data_source=source["id"], content=content).json()
        for content in (with_pii(), good_file(4))
    ]
    plain = approved_source(contains_personal_data=False, legal_basis=None)
    upload(client, people["dora"], data_source=plain["id"], content=good_file(3, start=50))
    bare = approved_source()  # personal data declared (contract), nothing else
    factories.base_model(gateway_settings)
    model_id = factories.fine_tuned_model(gateway_settings, files=files)
    return {"source": source, "plain": plain, "bare": bare, "files": files, "model": model_id}


def _summary(client, headers, model_id, **params):
    return client.get(
        f"/v1/models/{model_id}/training_content_summary", params=params, headers=headers
    )


class TestTrainingContentSummary:
    def test_every_figure_comes_from_records(self, client, people, recorded):
        response = _summary(client, people["bob"], recorded["model"])
        assert response.status_code == 200, response.text
        body = response.json()
        general = body["general"]
        assert general["provider"] == "default"
        assert general["model_id"] == recorded["model"]
        assert general["base_model"]["name"] == "tiny-llama"
        assert general["base_model"]["license"] == "Apache-2.0"
        assert general["modalities"] == ["text"]
        files = recorded["files"]
        [size] = general["size"]
        assert size["examples"] == sum(f["examples"] for f in files)
        assert general["latest_data_collection"] == max(f["created_at"] for f in files)
        assert general["provider_contact"] == TO_COMPLETE
        assert general["placed_on_market"] == TO_COMPLETE  # a candidate, never promoted
        kinds = {kind["kind"]: kind for kind in body["data_sources"]}
        assert list(kinds) == ["public", "licensed", "crawled", "user", "synthetic", "other"]
        [source] = kinds["user"]["sources"]
        assert source["data_source"] == recorded["source"]["id"]
        assert source["categories"] == ["support chats", "contact details"]
        assert source["files"] == 2
        assert source["first_upload"] == min(f["created_at"] for f in files)
        assert all(not kinds[k]["sources"] for k in kinds if k != "user")
        [pii] = body["processing"]["pii"]
        assert pii["action"] == "redact"
        assert pii["findings"] >= 1 and pii["redacted_lines"] >= 1
        [gate] = body["processing"]["quality_gates"]
        assert gate["min_examples"] == recorded["source"]["min_examples"]
        assert body["processing"]["illegal_content_removal"] == TO_COMPLETE
        assert "general.provider_contact" in body["to_complete"]
        assert f"data_sources.{recorded['source']['id']}.origin" not in body["to_complete"]

    def test_markdown_by_parameter_and_by_accept(self, client, people, recorded):
        by_param = _summary(client, people["bob"], recorded["model"], format="markdown")
        by_accept = client.get(
            f"/v1/models/{recorded['model']}/training_content_summary",
            headers={**people["bob"], "Accept": "text/markdown"},
        )
        for response in (by_param, by_accept):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/markdown")
            text = response.text
            assert text.startswith(f"# Public summary of training content: {recorded['model']}")
            for heading in (
                "## 1. General information",
                "## 2. List of data sources",
                "### 2.4 User data",
                "## 3. Data processing aspects",
                "## To be completed by the provider",
            ):
                assert heading in text

    def test_another_tenant_gets_404(self, client, token, recorded):
        other = token("olga", "ml-engineer", tenant="other")
        assert _summary(client, other, recorded["model"]).status_code == 404

    def test_it_is_audited(self, client, people, recorded):
        _summary(client, people["bob"], recorded["model"])
        events = client.get(
            "/v1/audit/events",
            params={"action": "model.training_content_summary_exported"},
            headers=people["carol"],
        ).json()["data"]
        assert [e["details"]["model_id"] for e in events] == [recorded["model"]]


class TestRecordsOfProcessing:
    def test_sources_holding_personal_data_only(self, client, people, recorded):
        response = client.get(RECORDS, headers=people["carol"])
        assert response.status_code == 200, response.text
        body = response.json()
        by_id = {r["data_source"]: r for r in body["records"]}
        assert recorded["plain"]["id"] not in by_id
        record = by_id[recorded["source"]["id"]]
        assert record["personal_data"] == "declared and found"
        assert record["purposes"] == ["support-assistant"]
        assert record["data_subject_categories"] == ["customers"]
        assert record["legal_basis"] == "contract"
        assert record["pii_found"]["email"] >= 1
        [model] = record["recipients"]
        assert model["model_id"] == recorded["model"]
        assert {"role:ml-engineer", "role:compliance-officer"} <= set(model["callers"])
        assert record["transfers"] == "none recorded"
        assert record["retention_days"] == recorded["source"]["retention_days"]
        assert record["next_deletion_due"] > 0
        bare = by_id[recorded["bare"]["id"]]
        assert bare["data_subject_categories"] == NOT_RECORDED
        assert bare["data_categories"] == NOT_RECORDED
        assert bare["recipients"] == [] and bare["next_deletion_due"] is None

    def test_csv_and_markdown(self, client, people, recorded):
        as_csv = client.get(RECORDS, params={"format": "csv"}, headers=people["carol"])
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert tuple(rows[0]) == CSV_COLUMNS
        row = next(r for r in rows if r["data_source"] == recorded["source"]["id"])
        assert row["recipients"] == recorded["model"]
        assert row["data_subject_categories"] == "customers"
        assert {r["data_source"] for r in rows} == {
            recorded["source"]["id"],
            recorded["bare"]["id"],
        }
        accept_csv = client.get(RECORDS, headers={**people["carol"], "Accept": "text/csv"})
        assert accept_csv.headers["content-type"].startswith("text/csv")
        assert accept_csv.text.splitlines()[0] == as_csv.text.splitlines()[0]
        as_md = client.get(RECORDS, params={"format": "markdown"}, headers=people["carol"])
        assert as_md.text.startswith("# Records of processing activities: default")
        assert f"## {recorded['source']['name']} ({recorded['source']['id']})" in as_md.text
        assert "(e) transfers" in as_md.text

    def test_who_may_read_them(self, client, people, recorded):
        assert client.get(RECORDS, headers=people["ada"]).status_code == 200
        for who in ("bob", "dora"):
            assert client.get(RECORDS, headers=people[who]).status_code == 403

    def test_another_tenant_sees_its_own_only(self, client, token, recorded):
        other = token("olga", "compliance-officer", tenant="other")
        response = client.get(RECORDS, headers=other)
        assert response.status_code == 200
        assert response.json()["records"] == []
        assert response.json()["controller"] == "other"


class TestAnnexIV:
    def test_the_nine_points_are_filled_or_marked(self, client, people, recorded):
        response = client.get(f"/v1/models/{recorded['model']}/dossier", headers=people["carol"])
        assert response.status_code == 200, response.text
        points = response.json()["annex_iv"]["points"]
        assert [p["point"] for p in points] == list(range(1, 10))
        status = {p["point"]: p["status"] for p in points}
        assert status[8] == status[7] == status[5] == "not recorded"
        assert status[2] in ("recorded", "partly recorded")
        assert any("data" in item for item in points[1]["filled_from"])
        markdown = client.get(
            f"/v1/models/{recorded['model']}/dossier",
            params={"format": "markdown"},
            headers=people["carol"],
        ).text
        assert "## Annex IV checklist" in markdown
        assert "EU declaration of conformity (Art. 47): **not recorded**" in markdown
