"""Signing in through an OIDC provider with the device authorization grant (RFC 8628): the
CLI shows a code and a web address, the person approves there in any browser, and the CLI
polls the provider's token endpoint until it hands out the token.

The endpoints come from the issuer's discovery document
(``<issuer>/.well-known/openid-configuration``: ``device_authorization_endpoint``,
``token_endpoint``). Nothing here prints or logs a token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPE = "openid"
SLOW_DOWN_SECONDS = 5  # RFC 8628 3.5: add 5 s to the interval on slow_down


class OidcError(Exception):
    """The provider refused or could not be used; ``code`` is its OAuth error code (or
    one of ours: discovery_failed, no_device_endpoint, expired_token, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int

    def __repr__(self) -> str:  # the device code is a credential until it expires
        return f"DeviceAuthorization(user_code={self.user_code!r}, uri={self.verification_uri!r})"


@dataclass(frozen=True)
class Tokens:
    access_token: str
    id_token: str | None
    refresh_token: str | None
    expires_in: int | None

    def __repr__(self) -> str:
        return f"Tokens(expires_in={self.expires_in!r})"


class DeviceFlow:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        *,
        scope: str = DEFAULT_SCOPE,
        audience: str | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.scope = scope
        self.audience = audience
        self._http = http or httpx.Client(timeout=30.0)
        self._sleep = sleep
        self._clock = clock
        self._endpoints: dict[str, str] | None = None

    def endpoints(self) -> dict[str, str]:
        if self._endpoints is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            document = self._json("discovery_failed", "GET", url)
            device = document.get("device_authorization_endpoint")
            token = document.get("token_endpoint")
            if not isinstance(device, str) or not isinstance(token, str):
                raise OidcError(
                    "no_device_endpoint",
                    f"{self.issuer} does not offer the device authorization grant",
                )
            self._endpoints = {"device": device, "token": token}
        return self._endpoints

    def start(self) -> DeviceAuthorization:
        form = {"client_id": self.client_id, "scope": self.scope}
        if self.audience:
            form["audience"] = self.audience
        answer = self._json("device_authorization_failed", "POST", self.endpoints()["device"], form)
        try:
            return DeviceAuthorization(
                device_code=str(answer["device_code"]),
                user_code=str(answer["user_code"]),
                verification_uri=str(answer.get("verification_uri") or answer["verification_url"]),
                verification_uri_complete=answer.get("verification_uri_complete"),
                expires_in=int(answer.get("expires_in", 600)),
                interval=max(1, int(answer.get("interval", 5))),
            )
        except (KeyError, TypeError, ValueError):
            raise OidcError("device_authorization_failed", "malformed answer") from None

    def wait(self, authorization: DeviceAuthorization) -> Tokens:
        """Poll until the person approves (or denies, or the code expires)."""
        deadline = self._clock() + authorization.expires_in
        interval = authorization.interval
        form = {
            "grant_type": DEVICE_GRANT,
            "device_code": authorization.device_code,
            "client_id": self.client_id,
        }
        while self._clock() < deadline:
            self._sleep(interval)
            response = self._post(self.endpoints()["token"], form)
            body = _body(response)
            if response.is_success and isinstance(body.get("access_token"), str):
                return Tokens(
                    access_token=body["access_token"],
                    id_token=body.get("id_token"),
                    refresh_token=body.get("refresh_token"),
                    expires_in=body.get("expires_in"),
                )
            error = str(body.get("error") or f"http_{response.status_code}")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += SLOW_DOWN_SECONDS
                continue
            raise OidcError(error, str(body.get("error_description") or "sign-in refused"))
        raise OidcError("expired_token", "the code expired before it was approved")

    def _post(self, url: str, form: dict[str, str]) -> httpx.Response:
        try:
            return self._http.post(url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OidcError("provider_unreachable", f"{url}: {type(exc).__name__}") from None

    def _json(
        self, code: str, method: str, url: str, form: dict[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            response = self._http.request(
                method, url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise OidcError("provider_unreachable", f"{url}: {type(exc).__name__}") from None
        body = _body(response)
        if not response.is_success:
            error = body.get("error") or f"http_{response.status_code}"
            raise OidcError(str(error), str(body.get("error_description") or url))
        if not body:
            raise OidcError(code, f"{url} did not answer with a JSON object")
        return body


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
