from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.trainer.gguf_writer import write_llama_gguf
from trainer.base_models import (
    MANIFEST_NAME,
    ManifestError,
    import_gguf,
    import_smollm2,
    load_base_model,
    read_manifest,
    verify_manifest,
    write_manifest,
)

PROMPT = [
    {
        "role": "user",
        "content": "Invoice INV-2023-0366 from Oakridge Hardware AG, total 4,205.36 EUR.",
    }
]


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    return copy


def _logits(loaded, messages) -> tuple[list[int], torch.Tensor]:
    text = loaded.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return ids, loaded.model(torch.tensor([ids])).logits


class TestManifest:
    def test_lists_every_file_and_hashes_itself(self, tiny_model_dir: Path):
        manifest = verify_manifest(tiny_model_dir)
        on_disk = {p.name for p in tiny_model_dir.iterdir() if p.name != MANIFEST_NAME}
        assert set(manifest.files) == on_disk
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= on_disk
        assert len(manifest.manifest_sha256) == 64

    def test_rewriting_unchanged_files_gives_the_same_hash(
        self, model_copy: Path, tiny_model_dir: Path
    ):
        assert write_manifest(model_copy, source=read_manifest(model_copy).source) == read_manifest(
            tiny_model_dir
        )

    def test_changed_weights_are_refused(self, model_copy: Path):
        weights = model_copy / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0x01
        weights.write_bytes(bytes(data))
        with pytest.raises(ManifestError, match="changed=\\['model.safetensors'\\]"):
            load_base_model(model_copy)

    def test_missing_and_unlisted_files_are_refused(self, model_copy: Path):
        (model_copy / "generation_config.json").unlink()
        (model_copy / "extra.py").write_text("print('hello')\n")
        with pytest.raises(ManifestError) as refused:
            verify_manifest(model_copy)
        assert "generation_config.json" in str(refused.value)
        assert "extra.py" in str(refused.value)

    def test_edited_manifest_is_refused(self, model_copy: Path):
        path = model_copy / MANIFEST_NAME
        manifest = json.loads(path.read_text())
        manifest["files"]["config.json"] = "0" * 64
        path.write_text(json.dumps(manifest))
        with pytest.raises(ManifestError, match="own hash"):
            verify_manifest(model_copy)

    def test_directory_without_manifest_is_refused(self, model_copy: Path):
        (model_copy / MANIFEST_NAME).unlink()
        with pytest.raises(ManifestError, match="no tunegate_manifest.json"):
            load_base_model(model_copy)


class TestTinyModel:
    def test_loads_through_the_common_loader(self, tiny_model_dir: Path):
        loaded = load_base_model(tiny_model_dir)
        config = loaded.model.config
        assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 2, 64)
        assert loaded.tokenizer.eos_token == "<|im_end|>"
        assert loaded.tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
        rendered = loaded.tokenizer.apply_chat_template(
            PROMPT, tokenize=False, add_generation_prompt=True
        )
        assert rendered.endswith("<|im_start|>assistant\n")
        assert loaded.manifest == verify_manifest(tiny_model_dir)


class TestGgufImport:
    def test_imported_model_matches_the_original(self, tiny_model_dir: Path, tmp_path: Path):
        gguf_path = tmp_path / "tiny.gguf"
        write_llama_gguf(tiny_model_dir, gguf_path)
        manifest = import_gguf(gguf_path, tmp_path / "imported")

        imported = load_base_model(tmp_path / "imported")
        original = load_base_model(tiny_model_dir)
        imported_ids, imported_logits = _logits(imported, PROMPT)
        original_ids, original_logits = _logits(original, PROMPT)
        assert imported_ids == original_ids
        torch.testing.assert_close(imported_logits, original_logits, rtol=0, atol=1e-5)
        assert manifest.source["gguf_file"] == "tiny.gguf"
        assert (tmp_path / "imported" / "model.safetensors").is_file()
        assert not list(tmp_path.glob(".imported.partial-*"))

    def test_second_import_is_a_no_op_and_other_models_are_refused(
        self, tiny_model_dir: Path, tmp_path: Path
    ):
        gguf_path = tmp_path / "tiny.gguf"
        write_llama_gguf(tiny_model_dir, gguf_path)
        first = import_gguf(gguf_path, tmp_path / "imported")
        weights = tmp_path / "imported" / "model.safetensors"
        modified = weights.stat().st_mtime_ns
        assert import_gguf(gguf_path, tmp_path / "imported") == first
        assert weights.stat().st_mtime_ns == modified
        with pytest.raises(FileExistsError):
            import_gguf(gguf_path, tiny_model_dir)


@pytest.mark.slow
class TestSmolLM2:
    def test_imported_smollm2_knows_the_capital_of_france(self, tmp_path: Path):
        import_smollm2(tmp_path / "smollm2")
        loaded = load_base_model(tmp_path / "smollm2")
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        text = loaded.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        inputs = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            output = loaded.model.generate(**inputs, max_new_tokens=24, do_sample=False)
        answer = loaded.tokenizer.decode(
            output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        assert "Paris" in answer
