"""A record quotes what another writer put in a JSON column: typed where the shape is
known, and serialised exactly as given (no key added, none lost, order kept)."""

from __future__ import annotations

import json

from gateway.dossier.records import DossierCompute, DossierDatasheet, DossierHyperparameters


def _dumped(record) -> str:
    return json.dumps(record.model_dump(mode="json"))


class TestRecorded:
    def test_absent_keys_stay_absent_and_unknown_ones_are_kept_in_order(self):
        given = {"resumed": False, "new_counter": {"b": 1, "a": 2}, "seconds": 1.5}
        record = DossierCompute.model_validate(given)
        assert record.seconds == 1.5 and record.device is None
        assert record.model_extra == {"new_counter": {"b": 1, "a": 2}}
        assert _dumped(record) == json.dumps(given)

    def test_an_int_stays_an_int_and_a_float_a_float(self):
        given = {"learning_rate_multiplier": 2, "learning_rate": 0.5, "weight_decay": 0.0}
        assert _dumped(DossierHyperparameters.model_validate(given)) == json.dumps(given)

    def test_nested_records_quote_theirs_too(self):
        given = {"estimate": {"method": "6 x parameters x tokens x epochs", "tokens": 3}}
        assert _dumped(DossierCompute.model_validate(given)) == json.dumps(given)

    def test_the_datasheets_schema_key_keeps_its_name(self):
        given = {"schema": "tunegate.datasheet/1", "sha256": "ab" * 32}
        record = DossierDatasheet.model_validate(given)
        assert record.schema_ == "tunegate.datasheet/1"
        assert _dumped(record) == json.dumps(given)
