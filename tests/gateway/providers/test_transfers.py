"""A data source's transfer records (GDPR Art. 30(1)(e)): declared when it is proposed,
validated, audited, and listed in the records of processing as the transfers to registered
providers they allow."""

from __future__ import annotations

import csv
import io

import pytest

RECORDS = "/v1/compliance/records_of_processing"
SCC = {"region": "eu-west-1", "legal_basis": "standard_contractual_clauses"}


def _records(client, people) -> dict[str, dict]:
    response = client.get(RECORDS, headers=people["carol"])
    assert response.status_code == 200, response.text
    return {record["data_source"]: record for record in response.json()["records"]}


class TestTransferRecords:
    def test_declared_with_the_source_and_audited(self, client, people, approved_source):
        source = approved_source(transfers=[SCC, {**SCC, "region": "de", "provider": "acme"}])
        assert source["transfers"] == [
            {**SCC, "provider": None},
            {**SCC, "region": "de", "provider": "acme"},
        ]
        [proposed] = client.get(
            "/v1/audit/events",
            params={"action": "data_source.proposed", "resource": f"ds:{source['id']}"},
            headers=people["carol"],
        ).json()["data"]
        assert proposed["details"]["transfers"] == source["transfers"]
        assert approved_source()["transfers"] is None

    @pytest.mark.parametrize(
        ("transfer", "param"),
        [
            ({"region": "EU", "legal_basis": "adequacy_decision"}, "transfers.0.region"),
            ({"region": "eu", "legal_basis": "because"}, "transfers.0.legal_basis"),
            ({"region": "eu", "legal_basis": "adequacy_decision", "provider": "Acme"}, None),
            ({"region": "eu"}, "transfers.0.legal_basis"),
            ({**SCC, "note": "x"}, "transfers.0.note"),
        ],
    )
    def test_bad_records_get_400(self, client, people, transfer, param):
        from tests.gateway.conftest import SOURCE

        response = client.post(
            "/v1/data_sources",
            json={**SOURCE, "transfers": [transfer]},
            headers=people["dora"],
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["param"] == (param or "transfers.0.provider")


class TestRecordsOfProcessing:
    def test_transfers_list_the_providers_a_record_allows(
        self, client, people, root, register, approved_source
    ):
        assert register().status_code == 201  # acme: eu-west-1
        for name, regions in (("beta", ["us-east-1"]), ("gamma", ["eu-west-1", "de"])):
            response = register(
                name=name,
                regions=regions,
                base_url=f"https://{name}.example/v1",
                models=[{"name": f"{name}-m", "provider_model": "m"}],
            )
            assert response.status_code == 201, response.text
        retired = client.delete("/v1/providers/gamma", headers=root)  # retired: no transfers
        assert retired.status_code == 200
        source = approved_source(transfers=[SCC])
        only_acme = approved_source(
            transfers=[
                {"region": "eu-west-1", "legal_basis": "explicit_consent", "provider": "acme"}
            ]
        )
        none = approved_source()
        restricted = approved_source(classification="restricted", transfers=[SCC])
        records = _records(client, people)
        assert records[source["id"]]["transfers"] == [
            {
                "provider": "acme",
                "base_url": "https://api.acme.example/v1",
                "region": "eu-west-1",
                "legal_basis": "standard_contractual_clauses",
                "legal_reference": "GDPR Art. 46(2)(c)",
            }
        ]
        [consent] = records[only_acme["id"]]["transfers"]
        assert consent["legal_reference"] == "GDPR Art. 49(1)(a)"
        assert records[none["id"]]["transfers"] == "none recorded"
        assert records[restricted["id"]]["transfers"] == "none recorded"

    def test_csv_and_markdown_say_it_in_words(self, client, people, register, approved_source):
        assert register().status_code == 201
        source = approved_source(transfers=[SCC])
        words = (
            "acme (https://api.acme.example/v1) in eu-west-1: standard_contractual_clauses "
            "(GDPR Art. 46(2)(c))"
        )
        as_csv = client.get(RECORDS, params={"format": "csv"}, headers=people["carol"])
        [row] = [
            r for r in csv.DictReader(io.StringIO(as_csv.text)) if r["data_source"] == source["id"]
        ]
        assert row["transfers"] == words
        as_md = client.get(RECORDS, params={"format": "markdown"}, headers=people["carol"])
        assert f"| (e) transfers | {words} |" in as_md.text
