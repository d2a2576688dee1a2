"""`tunegate login | logout | profiles` and the exit codes every client command shares,
against a real gateway, with OIDC sign-in through a real local identity provider."""

from __future__ import annotations

import json
import stat
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.gateway.cli.cli_support import Cli, cast, cli_settings, config_dir, serving

__all__ = ["config_dir"]

CLIENT_ID = "tunegate-cli"
USER_CODE = "WDJB-MJHT"


class IdentityProvider:
    """A small OIDC provider that speaks the device authorization grant (RFC 8628) and
    signs RS256 access tokens with a key it publishes as a JWKS. A real provider cannot
    run inside the test suite, so this one stands in for it, over real HTTP: the gateway
    fetches its key set, the CLI its discovery document and its two endpoints."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.polls = 0
        self.refuse = False
        self.issued: list[str] = []

    def start(self) -> IdentityProvider:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [jwk | {"kid": "idp-1", "use": "sig", "alg": "RS256"}]}

    def access_token(self) -> str:
        now = int(time.time())
        claims = {
            "sub": "olive",
            "iss": "tunegate",
            "aud": "tunegate",
            "iat": now,
            "exp": now + 600,
            "roles": ["ml-engineer"],
            "tenant": "default",
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "idp-1"})
        self.issued.append(token)
        return token

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    self._send(
                        200,
                        {
                            "issuer": provider.url,
                            "device_authorization_endpoint": f"{provider.url}/device",
                            "token_endpoint": f"{provider.url}/token",
                            "jwks_uri": f"{provider.url}/jwks",
                        },
                    )
                elif self.path == "/jwks":
                    self._send(200, provider.jwks())
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if form.get("client_id") != CLIENT_ID:
                    self._send(401, {"error": "invalid_client"})
                elif self.path == "/device":
                    self._send(
                        200,
                        {
                            "device_code": "device-code-1",
                            "user_code": USER_CODE,
                            "verification_uri": f"{provider.url}/activate",
                            "expires_in": 60,
                            "interval": 1,
                        },
                    )
                elif self.path == "/token":
                    self._token(form)
                else:
                    self._send(404, {"error": "not_found"})

            def _token(self, form: dict) -> None:
                if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code":
                    self._send(400, {"error": "unsupported_grant_type"})
                    return
                provider.polls += 1
                if provider.refuse:
                    self._send(400, {"error": "access_denied", "error_description": "denied"})
                elif provider.polls % 2:  # the person has not approved yet
                    self._send(400, {"error": "authorization_pending"})
                else:
                    body = {"access_token": provider.access_token(), "token_type": "Bearer"}
                    self._send(200, body | {"expires_in": 600})

        return Handler


@pytest.fixture(scope="module")
def provider():
    idp = IdentityProvider().start()
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def cli(databases, tmp_path_factory, config_dir, provider):
    settings = cli_settings(databases, tmp_path_factory, jwks_url=f"{provider.url}/jwks")
    with serving(settings) as url:
        tool = Cli(url, settings, config_dir)
        cast(tool)
        yield tool
    for token in provider.issued:
        tool.tokens[f"oidc-{len(tool.tokens)}"] = token
    tool.assert_no_token_shown()


def _profiles(cli: Cli) -> dict:
    """The stored profiles (none before the first login has written the file)."""
    path = cli.config_dir / "profiles.json"
    return json.loads(path.read_text()) if path.exists() else {"profiles": {}}


class TestLogin:
    def test_a_token_from_stdin_is_stored_0600_and_never_printed(self, cli):
        result = cli("login", "--url", cli.url, "--profile", "work", input=cli.tokens["bob"] + "\n")
        assert result.exit_code == 0, result.stderr
        assert "work" in result.stderr and "0600" in result.stderr
        path = cli.config_dir / "profiles.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert _profiles(cli)["profiles"]["work"]["token"] == cli.tokens["bob"]

        used = cli("--profile", "work", "--json", "jobs", "list", TUNEGATE_URL=None)
        assert used.exit_code == 0, used.stderr
        assert json.loads(used.stdout)["object"] == "list"

        listed = cli("profiles")
        assert "work" in listed.stdout and "set" in listed.stdout

    def test_a_refused_token_is_not_stored(self, cli):
        result = cli("login", "--url", cli.url, "--profile", "bad", "--token", "not-a-jwt")
        assert result.exit_code == 1
        assert "token_malformed" in result.stderr
        assert "bad" not in _profiles(cli)["profiles"]

    def test_logout_forgets_the_profile(self, cli):
        cli("login", "--url", cli.url, "--profile", "gone", input=cli.tokens["eve"] + "\n")
        assert cli("logout", "--profile", "gone").exit_code == 0
        assert "gone" not in _profiles(cli)["profiles"]
        again = cli("logout", "--profile", "gone")
        assert again.exit_code == 1 and "no_profile" in again.stderr


class TestOidcDeviceLogin:
    def test_the_device_grant_signs_in_and_the_gateway_takes_the_token(self, cli, provider):
        result = cli(
            "login",
            "--url",
            cli.url,
            "--oidc",
            "--issuer",
            provider.url,
            "--client-id",
            CLIENT_ID,
            "--profile",
            "sso",
        )
        assert result.exit_code == 0, result.stderr
        assert USER_CODE in result.stderr and f"{provider.url}/activate" in result.stderr
        assert provider.polls >= 2  # it waited through authorization_pending
        stored = _profiles(cli)["profiles"]["sso"]
        assert stored["token"] == provider.issued[-1] and stored["issuer"] == provider.url

        jobs = cli("--profile", "sso", "jobs", "list", TUNEGATE_URL=None)
        assert jobs.exit_code == 0, jobs.stderr

    def test_a_denied_sign_in_stores_nothing(self, cli, provider):
        provider.refuse = True
        try:
            result = cli(
                "login",
                "--url",
                cli.url,
                "--oidc",
                "--issuer",
                provider.url,
                "--client-id",
                CLIENT_ID,
                "--profile",
                "denied",
            )
        finally:
            provider.refuse = False
        assert result.exit_code == 1
        assert "access_denied" in result.stderr
        assert "denied" not in _profiles(cli)["profiles"]


class TestExitCodes:
    def test_0_when_it_worked(self, cli):
        assert cli("jobs", "list", as_="bob").exit_code == 0

    def test_1_with_the_apis_code_and_message_when_refused(self, cli):
        result = cli("data-sources", "approve", "ds-0123456789abcdef", as_="bob")
        assert result.exit_code == 1
        assert "permission_denied" in result.stderr and "403" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout

    def test_2_on_a_usage_error(self, cli):
        assert cli("jobs", "create", "--training-file", "f", as_="bob").exit_code == 2
        both = cli(
            "jobs",
            "create",
            "--model",
            "m",
            "--training-file",
            "f",
            "--purpose",
            "p",
            "--hyperparameters",
            "{}",
            "--n-epochs",
            "2",
            as_="bob",
        )
        assert both.exit_code == 2

    def test_3_when_the_gateway_cannot_be_reached_or_none_is_configured(self, cli, tmp_path):
        down = cli("jobs", "list", as_="bob", TUNEGATE_URL="http://127.0.0.1:9")
        assert down.exit_code == 3 and "gateway_unreachable" in down.stderr
        nothing = cli("jobs", "list", TUNEGATE_URL=None, TUNEGATE_CONFIG_DIR=str(tmp_path))
        assert nothing.exit_code == 3 and "no_profile" in nothing.stderr


def test_no_token_reaches_the_gateways_log(cli):
    """The gateway runs in this process: every event it logs meanwhile is captured."""
    from structlog.testing import capture_logs

    with capture_logs() as entries:
        cli("login", "--url", cli.url, "--profile", "logged", input=cli.tokens["carol"] + "\n")
        cli("audit", "search", "--limit", "1", as_="carol")
        cli("login", "--url", cli.url, "--profile", "x", "--token", cli.tokens["bob"] + "x")
    logged = repr(entries)
    assert "authn.refused" in logged  # the log was captured
    for token in cli.tokens.values():
        assert token not in logged and token.rsplit(".", 1)[-1] not in logged
