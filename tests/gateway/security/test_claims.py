"""HS256 tokens with the shared secret: signature, time claims, required claims, issuer and
audience, identity claims, NumericDate bounds."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from gateway.config import DEV_JWT_SECRET
from gateway.security import (
    LEEWAY_SECONDS,
    MAX_ROLES,
    Principal,
    Reason,
    TokenVerifier,
    mint_dev_token,
)
from tests.gateway.security.tokens import (
    AUDIENCE,
    DROP,
    b64url,
    bearer,
    claims,
    hs256,
    hs_settings,
    refused,
    with_payload,
)


class TestSignature:
    def test_payload_edited_after_signing_is_refused(self) -> None:
        settings = hs_settings()
        token = mint_dev_token(settings, sub="alice", roles=["ml-engineer"])
        tampered = with_payload(
            token, {**jwt.decode(token, options={"verify_signature": False}), "roles": ["admin"]}
        )
        refused(TokenVerifier(settings), bearer(tampered), Reason.SIGNATURE_INVALID)

    def test_other_secret_is_refused(self) -> None:
        token = hs256(claims(), secret="another-secret-of-sufficient-length-000")
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.SIGNATURE_INVALID)

    def test_dev_secret_token_is_refused_by_a_gateway_with_its_own_secret(self) -> None:
        token = hs256(claims(), secret=DEV_JWT_SECRET)
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.SIGNATURE_INVALID)

    @pytest.mark.parametrize("signature", ["", "AAAA", b64url(b"\x00" * 32)])
    def test_stripped_or_zeroed_signature_is_refused(self, signature: str) -> None:
        header, payload, _ = hs256(claims()).split(".")
        token = f"{header}.{payload}.{signature}"
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.SIGNATURE_INVALID)


class TestTimeClaims:
    def test_expired_is_refused(self) -> None:
        now = int(time.time())
        token = hs256(claims(iat=now - 3600, exp=now - 2 * LEEWAY_SECONDS))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.EXPIRED)

    def test_just_expired_within_leeway_is_accepted(self) -> None:
        now = int(time.time())
        token = hs256(claims(iat=now - 3600, exp=now - LEEWAY_SECONDS // 3))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"

    def test_nbf_in_the_future_is_refused(self) -> None:
        token = hs256(claims(nbf=int(time.time()) + 4 * LEEWAY_SECONDS))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.NOT_YET_VALID)

    def test_iat_in_the_future_is_refused(self) -> None:
        now = int(time.time())
        token = hs256(claims(iat=now + 4 * LEEWAY_SECONDS, exp=now + 3600))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.NOT_YET_VALID)

    def test_small_clock_skew_is_accepted(self) -> None:
        skewed = int(time.time()) + LEEWAY_SECONDS // 3
        token = hs256(claims(iat=skewed, nbf=skewed))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"

    @pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
    @pytest.mark.parametrize("value", ["1999999999", True, [1], {"t": 1}, 1e400])
    def test_non_numeric_dates_are_refused(self, claim: str, value: Any) -> None:
        token = hs256(claims(**{claim: value}))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)

    def test_fractional_dates_are_accepted(self) -> None:
        now = time.time()
        token = hs256(claims(iat=now - 0.5, exp=now + 600.25))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"


class TestRequiredClaims:
    @pytest.mark.parametrize("claim", ["sub", "exp", "iat", "iss", "aud"])
    def test_missing_required_claim_is_refused(self, claim: str) -> None:
        message = refused(
            TokenVerifier(hs_settings()),
            bearer(hs256(claims(**{claim: DROP}))),
            Reason.CLAIMS_INVALID,
        )
        assert repr(claim) in message

    @pytest.mark.parametrize("claim", ["sub", "exp", "iat", "iss", "aud"])
    def test_null_required_claim_is_refused(self, claim: str) -> None:
        token = hs256(claims(**{claim: None}))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)


class TestIssuerAndAudience:
    @pytest.mark.parametrize(
        "iss",
        [
            "tunegate-evil",
            "tunegatex",
            "tunegat",
            "TUNEGATE",
            " tunegate",
            "",
            1,
            ["tunegate"],
            {"tunegate": True},
        ],
    )
    def test_other_issuers_are_refused(self, iss: Any) -> None:
        token = hs256(claims(iss=iss))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.ISSUER_INVALID)

    def test_configured_issuer_is_required(self) -> None:
        settings = hs_settings(jwt_issuer="https://idp.example.com/")
        verifier = TokenVerifier(settings)
        assert verifier.verify(bearer(hs256(claims(iss="https://idp.example.com/")))).sub
        refused(verifier, bearer(hs256(claims())), Reason.ISSUER_INVALID)
        refused(
            verifier, bearer(hs256(claims(iss="https://idp.example.com/x"))), Reason.ISSUER_INVALID
        )

    @pytest.mark.parametrize(
        "aud",
        ["other", "tunegate-evil", "tunegat", ["other"], [], [AUDIENCE, 1], 7, {"tunegate": 1}],
    )
    def test_wrong_audience_is_refused(self, aud: Any) -> None:
        token = hs256(claims(aud=aud))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.AUDIENCE_INVALID)

    def test_audience_list_containing_ours_is_accepted(self) -> None:
        token = hs256(claims(aud=["other-service", AUDIENCE]))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).sub == "alice"


class TestIdentityClaims:
    def test_dev_token_maps_to_principal(self) -> None:
        settings = hs_settings(tenants=["default", "acme"])
        token = mint_dev_token(
            settings, sub="alice@example.com", roles=["ml-engineer", "data-owner"], tenant="acme"
        )
        principal = TokenVerifier(settings).verify(bearer(token))
        assert principal == Principal(
            sub="alice@example.com", tenant="acme", roles=("ml-engineer", "data-owner")
        )
        assert principal.subject == "user:alice@example.com"

    def test_tenant_and_roles_default(self) -> None:
        principal = TokenVerifier(hs_settings()).verify(bearer(hs256(claims())))
        assert principal == Principal(sub="alice", tenant="default", roles=())

    def test_duplicate_roles_collapse_in_order(self) -> None:
        token = hs256(claims(roles=["b", "a", "b", "a"]))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).roles == ("b", "a")

    def test_principal_is_frozen(self) -> None:
        principal = Principal(sub="alice", tenant="default", roles=("admin",))
        with pytest.raises(AttributeError):
            principal.sub = "mallory"  # type: ignore[misc]

    @pytest.mark.parametrize("sub", ["a" * 123, "auth0:abc.DEF_1-2", "svc@tenant.example"])
    def test_boundary_subjects_are_accepted(self, sub: str) -> None:
        assert TokenVerifier(hs_settings()).verify(bearer(hs256(claims(sub=sub)))).sub == sub

    @pytest.mark.parametrize(
        "sub",
        [
            "",
            "a" * 124,  # user:<sub> would pass the policy's 128-character limit
            "alice bob",
            "alice\n",
            "ali/ce",
            "alice,admin",
            "alicé",
            42,
            ["alice"],
            "alice) || (true",
        ],
    )
    def test_malformed_subject_is_refused(self, sub: Any) -> None:
        token = hs256(claims(sub=sub))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)

    @pytest.mark.parametrize(
        "tenant", ["", "a/b", "acme,evil", None, 5, ["acme"], "t" * 65, "acme@corp", "a:b"]
    )
    def test_malformed_tenant_is_refused(self, tenant: Any) -> None:
        # never a registered tenant: refused as one (tests/gateway/test_tenancy.py)
        token = hs256(claims(tenant=tenant))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.UNKNOWN_TENANT)

    def test_most_roles_allowed_is_accepted(self) -> None:
        roles = [f"role-{i}" for i in range(MAX_ROLES)]
        token = hs256(claims(roles=roles))
        assert TokenVerifier(hs_settings()).verify(bearer(token)).roles == tuple(roles)

    @pytest.mark.parametrize(
        "roles",
        [
            "admin",
            None,
            {"admin": True},
            [1],
            [None],
            [""],
            ["bad role"],
            ["admin,deny"],
            ["admin\n"],
            ["r" * 129],
            [["admin"]],
            ["admin", {"role": "x"}],
            [f"role-{i}" for i in range(MAX_ROLES + 1)],
        ],
    )
    def test_malformed_roles_are_refused(self, roles: Any) -> None:
        token = hs256(claims(roles=roles))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)


class TestNumericDateBounds:
    @pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
    def test_huge_integers_are_refused_not_crashed_on(self, claim: str) -> None:
        token = hs256(claims(**{claim: 10**400}))
        refused(TokenVerifier(hs_settings()), bearer(token), Reason.CLAIMS_INVALID)
