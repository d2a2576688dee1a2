"""`tunegate token` (mint_dev_token) and the verifier's construction from settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.config import DEV_JWT_SECRET, InsecureSettingsError, Settings
from gateway.security import (
    MAX_ROLES,
    Principal,
    TokenMintingError,
    TokenVerifier,
    mint_dev_token,
)
from tests.gateway.security.tokens import (
    AUDIENCE,
    ISSUER,
    SECRET,
    bearer,
)


class TestMintDevToken:
    def test_dev_mints_with_the_dev_secret(self) -> None:
        settings = Settings()
        token = mint_dev_token(settings, sub="alice", roles=["admin", "admin"], ttl=60)
        payload = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience=AUDIENCE)
        assert payload["roles"] == ["admin"]
        assert payload["exp"] - payload["iat"] == 60
        assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
        assert TokenVerifier(settings).verify(bearer(token)).roles == ("admin",)

    def test_prod_mints_with_the_configured_secret(self, tmp_path: Path) -> None:
        settings = Settings(
            env="prod", jwt_secret=SECRET, audit_signing_key=tmp_path / "k.pem", tenants=["acme"]
        )
        token = mint_dev_token(settings, sub="ops", roles=["admin"], tenant="acme")
        assert TokenVerifier(settings).verify(bearer(token)) == Principal("ops", "acme", ("admin",))

    def test_prod_without_a_secret_refuses(self, tmp_path: Path) -> None:
        settings = Settings(
            env="prod", jwks_url="https://idp.example.com/jwks", audit_signing_key=tmp_path / "k"
        )
        with pytest.raises(TokenMintingError):
            mint_dev_token(settings, sub="ops", roles=["admin"])

    def test_prod_refuses_the_dev_secret_even_past_config_validation(self) -> None:
        settings = Settings.model_construct(
            env="prod", jwt_secret=DEV_JWT_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
        )
        with pytest.raises(TokenMintingError):
            mint_dev_token(settings, sub="ops", roles=["admin"])

    @pytest.mark.parametrize(
        "arguments",
        [
            {"sub": "alice bob"},
            {"sub": ""},
            {"tenant": "a/b"},
            {"roles": ["bad role"]},
            {"roles": "admin"},
            {"roles": [f"r{i}" for i in range(MAX_ROLES + 1)]},
            {"ttl": 0},
            {"ttl": 30 * 86_400 + 1},
            {"ttl": True},
            {"ttl": 1.5},
        ],
    )
    def test_refuses_what_verify_would_refuse(self, arguments: dict[str, Any]) -> None:
        with pytest.raises(TokenMintingError):
            mint_dev_token(Settings(), **{"sub": "alice", "roles": [], **arguments})


class TestConstruction:
    @pytest.mark.parametrize(
        "url", ["http://idp.example.com/jwks", "ftp://idp.example.com/jwks", "file:///etc/jwks"]
    )
    def test_prod_refuses_a_jwks_url_that_is_not_https(self, url: str, tmp_path: Path) -> None:
        settings = Settings(env="prod", jwks_url=url, audit_signing_key=tmp_path / "k.pem")
        with pytest.raises(InsecureSettingsError):
            TokenVerifier(settings)

    @pytest.mark.parametrize("url", ["file:///etc/jwks", "ftp://idp/jwks", "http:///nohost"])
    def test_dev_refuses_a_jwks_url_that_is_not_http(self, url: str) -> None:
        with pytest.raises(InsecureSettingsError):
            TokenVerifier(Settings(jwks_url=url))

    def test_prod_accepts_https_and_loopback_http(self, tmp_path: Path) -> None:
        for url in ["https://idp.example.com/jwks", "http://127.0.0.1:9/jwks"]:
            settings = Settings(env="prod", jwks_url=url, audit_signing_key=tmp_path / "k.pem")
            TokenVerifier(settings)  # builds without contacting the provider

    def test_no_way_to_verify_is_refused(self) -> None:
        settings = Settings.model_construct(env="prod", jwt_secret=None, jwks_url=None)
        with pytest.raises(InsecureSettingsError):
            TokenVerifier(settings)
