"""Nothing of a token or a secret reaches the log."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from gateway.security import (
    AuthenticationError,
    TokenVerifier,
)
from tests.gateway.security.tokens import (
    SECRET,
    JwksServer,
    bearer,
    claims,
    jwks_settings,
    rsa_jwk,
    signed,
)


class TestNothingSecretIsLogged:
    def test_refresh_and_refusals_log_no_token_or_secret(
        self, jwks_server: JwksServer, rsa_key: Any
    ) -> None:
        jwks_server.serve(rsa_jwk(rsa_key, "rsa-1"))
        verifier = TokenVerifier(jwks_settings(jwks_server, jwks_min_refresh_seconds=0))
        good = signed(rsa_key, "RS256", "rsa-1", claims())
        bad = signed(rsa_key, "RS256", "rsa-2", claims())
        with structlog.testing.capture_logs() as logs:
            verifier.verify(bearer(good))
            with pytest.raises(AuthenticationError):
                verifier.verify(bearer(bad))
            jwks_server.fail()
            with pytest.raises(AuthenticationError):
                verifier.verify(bearer(bad))
        events = [entry["event"] for entry in logs]
        assert events == ["jwks.refreshed", "jwks.refreshed", "jwks.refresh_failed"]
        text = repr(logs)
        for part in [*good.split("."), *bad.split("."), SECRET, jwks_server.url]:
            assert part not in text
