from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.gateway.conftest import chat_line, good_file, jsonl, upload

EMAIL = "jane.roe@example.org"


def _events(client, headers, action: str) -> list[dict]:
    response = client.get("/v1/audit/events", params={"action": action}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _stored_files(settings) -> list[Path]:
    root = settings.artifact_dir / "files"
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def _multipart(data_source: str, file_blocks) -> Iterator[bytes]:
    boundary = b"--b0undary\r\n"
    yield (
        boundary
        + b'Content-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        + boundary
        + b'Content-Disposition: form-data; name="data_source"\r\n\r\n'
        + data_source.encode()
        + b"\r\n"
        + boundary
        + b'Content-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
    )
    yield from file_blocks
    yield b"\r\n--b0undary--\r\n"


class TestUpload:
    def test_a_valid_file_becomes_an_openai_file_object(self, client, people, approved_source):
        source = approved_source()
        content = good_file(4)
        response = upload(client, people["dora"], data_source=source["id"], content=content)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"].startswith("file-") and body["object"] == "file"
        assert body["bytes"] == len(content)
        assert body["purpose"] == "fine-tune" and body["filename"] == "train.jsonl"
        assert body["status"] == "processed" and body["status_details"] is None
        assert isinstance(body["created_at"], int)
        assert body["data_source"] == source["id"]
        assert body["sha256"] == hashlib.sha256(content).hexdigest()
        assert body["content_sha256"] == body["sha256"]
        assert body["examples"] == 4
        assert body["report"]["examples"] == 4
        assert body["report"]["roles"] == {"user": 4, "assistant": 4}

    def test_content_is_stored_by_hash_and_read_back(
        self, client, people, approved_source, gateway_settings
    ):
        source = approved_source()
        content = good_file(3)
        body = upload(client, people["dora"], data_source=source["id"], content=content).json()
        stored = _stored_files(gateway_settings)
        assert [path.name for path in stored if not path.name.endswith(".fingerprint")] == [
            body["sha256"]
        ]
        read = client.get(f"/v1/files/{body['id']}/content", headers=people["dora"])
        assert read.status_code == 200 and read.content == content
        assert client.get(f"/v1/files/{body['id']}", headers=people["carol"]).json() == body

    def test_the_upload_is_audited_with_hashes_never_the_filename(
        self, client, people, approved_source
    ):
        source = approved_source()
        body = upload(
            client,
            people["dora"],
            data_source=source["id"],
            content=good_file(),
            filename="jane-roe-private.jsonl",
        ).json()
        [event] = _events(client, people["carol"], "file.uploaded")
        assert event["actor"] == "dora" and event["decision"] == "allow"
        assert event["details"]["sha256"] == body["sha256"]
        assert event["details"]["file_id"] == body["id"]
        assert "jane" not in json.dumps(event)

    def test_a_new_upload_of_the_same_bytes_is_a_new_version(self, client, people, approved_source):
        source = approved_source()
        first = upload(client, people["dora"], data_source=source["id"], content=good_file())
        second = upload(client, people["dora"], data_source=source["id"], content=good_file())
        assert first.json()["id"] != second.json()["id"]
        assert first.json()["sha256"] == second.json()["sha256"]

    def test_the_openai_sdk_uploads_with_extra_body(
        self, gateway_settings, live_server, people, approved_source, tmp_path
    ):
        from openai import OpenAI

        source = approved_source()
        base = live_server(gateway_settings)
        api_key = people["dora"]["Authorization"].removeprefix("Bearer ")
        sdk = OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0)
        path = tmp_path / "train.jsonl"
        path.write_bytes(good_file(5))
        created = sdk.files.create(
            file=path.open("rb"), purpose="fine-tune", extra_body={"data_source": source["id"]}
        )
        assert created.status == "processed" and created.bytes == path.stat().st_size
        assert sdk.files.retrieve(created.id).id == created.id
        assert [f.id for f in sdk.files.list()] == [created.id]
        assert sdk.files.content(created.id).read() == path.read_bytes()


class TestValidationReport:
    def test_each_fault_is_named_with_its_line(self, client, people, approved_source):
        source = approved_source()
        content = jsonl(
            chat_line("hello", "hi there, how can I help?"),
            b"not json at all",
            {"messages": [{"role": "user", "content": "only a question"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "mood": "happy"},
                ]
            },
            {"prompt": "p"},
            b"\xff\xfe broken utf-8",
        )
        response = upload(client, people["dora"], data_source=source["id"], content=content)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "error"
        assert body["status_details"].startswith("6 fault(s)")
        faults = {f["line"]: f["code"] for f in body["report"]["faults"]["shown"]}
        assert sorted(faults) == [2, 3, 4, 5, 6, 7]
        assert body["content_sha256"] is None
        refused = client.get(f"/v1/files/{body['id']}/content", headers=people["dora"])
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "file_not_stored"
        [event] = _events(client, people["carol"], "file.rejected")
        assert event["details"]["faults"] == 6

    def test_a_bom_is_a_fault(self, client, people, approved_source):
        source = approved_source()
        content = b"\xef\xbb\xbf" + good_file(2)
        body = upload(client, people["dora"], data_source=source["id"], content=content).json()
        assert body["status"] == "error"
        assert body["report"]["faults"]["shown"][0]["line"] == 1

    def test_a_line_over_the_limit_is_a_fault(self, client, people, approved_source):
        source = approved_source()
        huge = chat_line("q", "a" * 2_000_000)
        body = upload(
            client,
            people["dora"],
            data_source=source["id"],
            content=jsonl(huge, chat_line("q", "fine answer here")),
        ).json()
        assert body["status"] == "error"
        [fault] = body["report"]["faults"]["shown"]
        assert fault["line"] == 1 and fault["code"] == "line_too_long"


class TestPersonalData:
    def _with_pii(self) -> bytes:
        return jsonl(
            chat_line("hi", "all good here, thanks for asking"),
            chat_line(f"please write to {EMAIL}", "done, I have noted that address"),
        )

    def test_block_refuses_the_file_with_line_numbers_never_values(
        self, client, people, approved_source
    ):
        source = approved_source(pii_action="block")
        response = upload(
            client, people["dora"], data_source=source["id"], content=self._with_pii()
        )
        body = response.json()
        assert body["status"] == "error"
        assert body["report"]["pii"]["by_type"]["email"]["line_numbers"] == [2]
        assert EMAIL not in response.text
        [event] = _events(client, people["carol"], "file.rejected")
        assert event["details"]["pii_findings"] == [{"type": "email", "findings": 1}]
        assert EMAIL not in json.dumps(event)

    def test_redact_keeps_only_the_redacted_derivative_and_its_lineage(
        self, client, people, approved_source, gateway_settings
    ):
        source = approved_source(pii_action="redact")
        raw = self._with_pii()
        body = upload(client, people["dora"], data_source=source["id"], content=raw).json()
        assert body["status"] == "processed"
        lineage = body["redaction"]
        assert lineage["input_sha256"] == hashlib.sha256(raw).hexdigest() == body["sha256"]
        assert lineage["output_sha256"] == body["content_sha256"] != body["sha256"]
        assert lineage["recogniser_set"]
        content = client.get(f"/v1/files/{body['id']}/content", headers=people["dora"]).content
        assert EMAIL.encode() not in content and b"[EMAIL]" in content
        assert hashlib.sha256(content).hexdigest() == body["content_sha256"]
        names = {path.name for path in _stored_files(gateway_settings)}
        assert body["sha256"] not in names  # the upload with the address is not kept
        [event] = _events(client, people["carol"], "file.uploaded")
        assert event["details"]["redaction"]["output_sha256"] == body["content_sha256"]

    def test_allow_keeps_the_file_and_records_the_findings(self, client, people, approved_source):
        source = approved_source(pii_action="allow")
        body = upload(
            client, people["dora"], data_source=source["id"], content=self._with_pii()
        ).json()
        assert body["status"] == "processed"
        assert body["report"]["pii"]["by_type"]["email"]["findings"] == 1


class TestRefusals:
    def test_without_a_grant_on_the_source(self, client, people, approved_source, gateway_settings):
        source = approved_source()
        response = upload(client, people["bob"], data_source=source["id"], content=good_file())
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"
        assert _stored_files(gateway_settings) == []
        denied = _events(client, people["carol"], "authz.denied")
        assert denied[-1]["resource"] == f"ds:{source['id']}"

    def test_a_source_not_yet_approved(self, client, people):
        from tests.gateway.conftest import SOURCE

        proposed = client.post("/v1/data_sources", json=SOURCE, headers=people["dora"]).json()
        response = upload(client, people["dora"], data_source=proposed["id"], content=good_file())
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "data_source_not_approved"

    def test_a_revoked_source(self, client, people, approved_source):
        source = approved_source()
        client.post(
            f"/v1/data_sources/{source['id']}/revoke",
            json={"reason": "contract ended"},
            headers=people["carol"],
        )
        response = upload(client, people["dora"], data_source=source["id"], content=good_file())
        assert response.status_code == 409

    def test_an_unknown_source(self, client, people):
        response = upload(
            client, people["dora"], data_source="ds-0000000000000000", content=good_file()
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "data_source_not_found"

    @pytest.mark.parametrize(
        "fields, code, status",
        [
            ({"purpose": "assistants"}, "invalid_purpose", 400),
            ({"data_source": "ds:*"}, "invalid_field", 400),
            ({"data_source": "ds-x y"}, "invalid_field", 400),
        ],
    )
    def test_bad_fields(self, client, people, approved_source, fields, code, status):
        source = approved_source()
        data = {"purpose": "fine-tune", "data_source": source["id"], **fields}
        response = client.post(
            "/v1/files",
            data=data,
            files={"file": ("a.jsonl", good_file(), "application/jsonl")},
            headers=people["dora"],
        )
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code

    def test_fields_must_come_before_the_file(self, client, people, approved_source):
        source = approved_source()
        boundary = "b0undary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
            f"\r\n{good_file().decode()}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="data_source"\r\n\r\n'
            f"{source['id']}\r\n--{boundary}--\r\n"
        ).encode()
        response = client.post(
            "/v1/files",
            content=body,
            headers={**people["dora"], "content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "missing_field"

    def test_missing_file_part(self, client, people, approved_source):
        source = approved_source()
        boundary = "b0undary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"fine-tune\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="data_source"\r\n\r\n{source["id"]}\r\n'
            f"--{boundary}--\r\n"
        ).encode()
        response = client.post(
            "/v1/files",
            content=body,
            headers={**people["dora"], "content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "file"

    def test_not_multipart(self, client, people):
        response = client.post("/v1/files", json={"purpose": "fine-tune"}, headers=people["dora"])
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "multipart_required"

    def test_truncated_multipart(self, client, people, approved_source):
        source = approved_source()
        boundary = "b0undary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="data_source"\r\n\r\n'
            f"{source['id']}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
            f"\r\n{good_file().decode()}"
        ).encode()
        response = client.post(
            "/v1/files",
            content=body,
            headers={**people["dora"], "content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_multipart"

    def test_another_tenants_file_is_not_found(self, client, people, approved_source, token):
        source = approved_source()
        body = upload(client, people["dora"], data_source=source["id"], content=good_file()).json()
        outsider = token("olga", "data-owner", tenant="other")
        assert client.get(f"/v1/files/{body['id']}", headers=outsider).status_code == 404
        assert client.get("/v1/files", headers=outsider).json()["data"] == []
        nobody = token("nobody")
        assert client.get(f"/v1/files/{body['id']}", headers=nobody).status_code == 403


class TestSizeLimits:
    @pytest.fixture
    def small_limit(self, gateway_settings):
        return gateway_settings.model_copy(update={"max_upload_bytes": 1 << 20})

    def test_a_file_over_the_limit_gets_413_and_leaves_nothing(
        self, small_limit, people, approved_source, client
    ):
        from fastapi.testclient import TestClient

        from gateway.main import create_app

        source = approved_source()
        content = good_file(20_000)  # about 2 MiB
        assert len(content) > small_limit.max_upload_bytes
        declared = upload(client, people["dora"], data_source=source["id"], content=content)
        assert declared.status_code == 200  # the default limit takes it

        def chunked():  # no declared length: the gateway counts as it reads
            yield from _multipart(
                source["id"], [content[i : i + 65536] for i in range(0, len(content), 65536)]
            )

        with TestClient(create_app(small_limit)) as limited:
            response = limited.post(
                "/v1/files",
                content=chunked(),
                headers={
                    **people["dora"],
                    "content-type": "multipart/form-data; boundary=b0undary",
                },
            )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "file_too_large"
        assert response.json()["error"]["details"]["limit"] == small_limit.max_upload_bytes
        leftovers = [path.name for path in _stored_files(small_limit)]
        assert not [name for name in leftovers if name.startswith(".")]
        assert len(leftovers) == 2  # the earlier file and its fingerprint, nothing else

    def test_a_declared_2_gib_upload_is_refused_before_its_body_is_read(
        self, gateway_settings, people, live_server, client
    ):
        base = urlparse(live_server(gateway_settings))
        connection = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
        connection.putrequest("POST", "/v1/files")
        connection.putheader("Authorization", people["dora"]["Authorization"])
        connection.putheader("Content-Type", "multipart/form-data; boundary=x")
        connection.putheader("Content-Length", str(2 << 30))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == "payload_too_large"
        connection.close()

    def test_a_streamed_2_gib_upload_stops_at_the_limit(
        self, small_limit, people, approved_source, live_server, client
    ):
        """Chunked, so no length is declared: the gateway counts, refuses at the limit and
        stops reading; the client never gets to send its 2 GiB."""
        source = approved_source()
        base = live_server(small_limit)
        sent = 0
        line = json.dumps(chat_line("a question", "an answer " * 50)).encode() + b"\n"
        block = line * (65536 // len(line))

        def blocks():
            nonlocal sent
            while sent < 2 << 30:
                sent += len(block)
                yield block

        def body():
            yield from _multipart(source["id"], blocks())

        headers = {**people["dora"], "content-type": "multipart/form-data; boundary=b0undary"}
        try:
            response = httpx.post(f"{base}/v1/files", content=body(), headers=headers, timeout=60)
            assert response.status_code == 413
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            pass  # the server closed the connection after refusing: also a refusal
        assert sent < 256 << 20
        assert _stored_files(small_limit) == []

    def test_refused_when_the_store_would_run_out_of_space(
        self, gateway_settings, people, approved_source, client
    ):
        import shutil

        from fastapi.testclient import TestClient

        from gateway.main import create_app

        free = shutil.disk_usage(gateway_settings.artifact_dir.parent).free
        settings = gateway_settings.model_copy(update={"upload_min_free_bytes": free + (1 << 30)})
        source = approved_source()
        with TestClient(create_app(settings)) as other:
            response = upload(other, people["dora"], data_source=source["id"], content=good_file())
        assert response.status_code == 507
        assert response.json()["error"]["code"] == "insufficient_storage"


class TestListing:
    def test_newest_first_with_a_cursor(self, client, people, approved_source):
        source = approved_source()
        ids = [
            upload(
                client, people["dora"], data_source=source["id"], content=good_file(2, start=i * 10)
            ).json()["id"]
            for i in range(3)
        ]
        page = client.get("/v1/files", params={"limit": 2}, headers=people["dora"]).json()
        assert page["object"] == "list" and page["has_more"] is True
        listed = [f["id"] for f in page["data"]]
        rest = client.get(
            "/v1/files", params={"limit": 2, "after": page["last_id"]}, headers=people["dora"]
        ).json()
        listed += [f["id"] for f in rest["data"]]
        assert sorted(listed) == sorted(ids) and rest["has_more"] is False

    def test_only_files_of_sources_the_caller_may_read(self, client, people, approved_source):
        source = approved_source()
        upload(client, people["dora"], data_source=source["id"], content=good_file())
        assert client.get("/v1/files", headers=people["bob"]).json()["data"] == []
        assert len(client.get("/v1/files", headers=people["carol"]).json()["data"]) == 1

    def test_scan_workers_give_the_same_report(
        self, gateway_settings, people, approved_source, client
    ):
        from fastapi.testclient import TestClient

        from gateway.main import create_app

        source = approved_source()
        inline = upload(
            client, people["dora"], data_source=source["id"], content=good_file(50)
        ).json()
        pooled_settings = gateway_settings.model_copy(update={"ingest_workers": 1})
        with TestClient(create_app(pooled_settings)) as pooled:
            other = upload(
                pooled, people["dora"], data_source=source["id"], content=good_file(50)
            ).json()
        assert other["report"] == inline["report"]


class TestReviewRegressions:
    def test_an_overlong_boundary_is_a_4xx(self, client, people):
        response = client.post(
            "/v1/files",
            content=b"--x\r\n",
            headers={
                **people["dora"],
                "content-type": "multipart/form-data; boundary=" + "a" * 300,
            },
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_multipart"

    def test_a_failed_record_leaves_nothing_on_disk(
        self, gateway_settings, people, approved_source, monkeypatch
    ):
        """The failure is injected (a crash while recording cannot be provoked from
        outside): what the upload stored must go with the transaction."""
        from fastapi.testclient import TestClient

        from gateway.files import service
        from gateway.main import create_app

        source = approved_source()

        def crash(*_args, **_kwargs):
            raise RuntimeError("injected: the database went away")

        monkeypatch.setattr(service, "record_allowed", crash)
        with TestClient(create_app(gateway_settings), raise_server_exceptions=False) as c:
            response = upload(c, people["dora"], data_source=source["id"], content=good_file())
        assert response.status_code == 500
        assert _stored_files(gateway_settings) == []
