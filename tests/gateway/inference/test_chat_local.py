"""The openai SDK's chat completions on the tiny random Llama through the local backend
(transformers + peft), streaming and not, against a real uvicorn: a fine-tuned version
whose adapter is a real (random) LoRA adapter, and the base model itself. A random model
writes gibberish: the tests check the shape, the counts and the trail, not the words. And
an adapter whose bytes changed since registration is refused, never served."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from gateway.inference.backends.local import adapter_sha256
from tests.gateway.conftest import TINY_BASE, registered_base  # noqa: F401 (a fixture)
from tests.gateway.inference.conftest import _approved_source, update_model
from tests.gateway.registry import factories
from trainer.base_models import load_base_model
from trainer.checkpoints import write_adapter

openai = pytest.importorskip("openai")


@pytest.fixture
def gateway_settings(gateway_settings, tiny_model_root):
    return gateway_settings.model_copy(
        update={
            "inference_backend": "local",
            "inference_device": "cpu",
            "model_import_roots": [tiny_model_root],
        }
    )


@pytest.fixture
def tuned(client, registered_base, gateway_settings, tiny_model_root):  # noqa: F811
    """A production version of tiny-llama whose adapter is a real LoRA adapter."""
    source = _approved_source(gateway_settings)
    files = [
        {
            "id": "file-00000000000000aa",
            "data_source": source,
            "sha256": "0" * 64,
            "content_sha256": "1" * 64,
        }
    ]
    model_id = factories.fine_tuned_model(gateway_settings, files=files, status="production")
    row = factories.model_row(gateway_settings, model_id)
    # built on the stored copy the gateway serves (as training does)
    model = load_base_model(Path(gateway_settings.artifact_dir) / "base_models" / TINY_BASE).model
    torch.manual_seed(3)
    config = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    directory = f"{row.artifact_dir}/adapter"
    sha256 = write_adapter(get_peft_model(model, config), Path(directory))
    assert sha256 == adapter_sha256(directory)
    update_model(gateway_settings, model_id, adapter_sha256=sha256)
    return model_id


def test_sdk_on_the_tiny_model(live_server, gateway_settings, token, tuned):
    base_url = live_server(gateway_settings) + "/v1"
    api_key = token("eve", "ml-engineer")["Authorization"].removeprefix("Bearer ")
    sdk = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "What is the total of invoice 1042?"}]

    answer = sdk.chat.completions.create(
        model=tuned, messages=messages, max_tokens=6, temperature=0, seed=1
    )
    assert answer.model == tuned
    assert answer.usage.completion_tokens <= 6 and answer.usage.prompt_tokens > 5
    assert answer.choices[0].finish_reason in ("stop", "length")

    chunks = list(
        sdk.chat.completions.create(
            model=tuned,
            messages=messages,
            max_tokens=6,
            temperature=0,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer.choices[0].message.content  # greedy: the same text
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens

    base = sdk.chat.completions.create(model=TINY_BASE, messages=messages, max_tokens=3)
    assert base.model == TINY_BASE and base.usage.completion_tokens <= 3

    # the registry's hash no longer matches the adapter's bytes: refused, not served
    update_model(gateway_settings, tuned, adapter_sha256="0" * 64)
    fresh = [{"role": "user", "content": "a different prompt, not cached"}]
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.chat.completions.create(model=tuned, messages=fresh, max_tokens=3)
    assert refused.value.status_code == 409
    assert refused.value.body["code"] == "adapter_hash_mismatch"
