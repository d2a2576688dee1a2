"""Schemathesis fuzzes every operation of the real app with a token that holds every seed
role: whatever it sends, the answer is never a 5xx."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from gateway.main import create_app

EXAMPLES_PER_OPERATION = 50


def _cheap(case) -> bool:
    """A valid package import copies and converts a 270 MB model (tens of seconds each):
    tests/gateway/test_base_models.py covers it; here it would only time out."""
    body = case.body if isinstance(case.body, dict) else {}
    source = body.get("source")
    return not (isinstance(source, dict) and "package" in source)


def test_no_input_makes_a_server_error(gateway_settings, token):
    headers = token("fuzz", "admin", "compliance-officer", "data-owner")
    app = create_app(gateway_settings)
    with TestClient(app):  # runs the lifespan: database, policy, signer
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        for operation in operations:

            @given(case=operation.as_strategy().filter(_cheap))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def fuzz(case):
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            fuzz()
