"""The local backend on the tiny random Llama (trainer.fixtures) with tiny random LoRA
adapters: nothing mocked. Outputs of a random model are gibberish, so tests compare the
backend with itself (seeded, batched vs alone) and check counts and finish reasons."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from gateway.inference.backends.base import (
    AdapterRef,
    BackendError,
    ChatMessage,
    GenerationChunk,
    GenerationRequest,
    InferenceBackend,
)
from gateway.inference.backends.local import LocalBackend, adapter_sha256
from tests.gateway.conftest import TINY_BASE
from trainer.base_models import load_base_model
from trainer.checkpoints import write_adapter


def make_adapter(base_dir: Path, target: Path, seed: int) -> AdapterRef:
    """A LoRA adapter with random (non-zero) weights, saved and hashed as training saves it."""
    model = load_base_model(base_dir).model
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    sha256 = write_adapter(get_peft_model(model, config), target)
    return AdapterRef(name=f"ft:tiny:{seed}", path=str(target), sha256=sha256)


@pytest.fixture(scope="module")
def base_dir(tiny_model_root: Path) -> Path:
    return tiny_model_root / TINY_BASE


@pytest.fixture(scope="module")
def adapters(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[AdapterRef]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(base_dir, root / f"adapter-{seed}", seed) for seed in range(3)]


@pytest.fixture(scope="module")
def backend():
    backend = LocalBackend(adapter_cache=8, batch_window_ms=50, max_batch=8, device="cpu")
    yield backend
    asyncio.run(backend.close())


def request(
    base_dir: Path,
    adapter: AdapterRef | None = None,
    *,
    text: str = "What is the total of invoice 1042?",
    max_tokens: int = 12,
    **sampling: object,
) -> GenerationRequest:
    return GenerationRequest(
        base_model=TINY_BASE,
        base_model_dir=str(base_dir),
        adapter=adapter,
        messages=[ChatMessage(role="user", content=text)],
        max_tokens=max_tokens,
        **{"temperature": 0.0, **sampling},  # type: ignore[arg-type]
    )


async def complete(
    backend: InferenceBackend, req: GenerationRequest
) -> tuple[str, GenerationChunk]:
    pieces, last = [], None
    async for chunk in backend.generate(req):
        pieces.append(chunk.text)
        last = chunk
    assert last is not None and last.finish_reason is not None
    return "".join(pieces), last


def run(backend: InferenceBackend, req: GenerationRequest) -> tuple[str, GenerationChunk]:
    return asyncio.run(complete(backend, req))


def test_is_an_inference_backend(backend):
    assert isinstance(backend, InferenceBackend)


def test_prompt_tokens_count_the_templated_prompt(backend, base_dir):
    req = request(base_dir)
    tokenizer = load_base_model(base_dir).tokenizer
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": req.messages[0].content}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert backend.prompt_tokens(req) == len(
        tokenizer(rendered, add_special_tokens=False).input_ids
    )


def test_greedy_and_seeded_generation_are_deterministic(backend, base_dir, adapters):
    greedy = request(base_dir, adapters[0])
    assert run(backend, greedy) == run(backend, greedy)
    seeded = request(base_dir, adapters[0], temperature=0.9, top_p=0.9, seed=11)
    assert run(backend, seeded) == run(backend, seeded)
    # An adapter changes what the model says (its weights are random, not zero).
    assert run(backend, request(base_dir, adapters[1]))[0] != run(backend, greedy)[0]


def test_max_tokens_ends_with_length(backend, base_dir):
    text, last = run(backend, request(base_dir, max_tokens=5))
    assert last.finish_reason == "length"
    assert last.completion_tokens == 5


def test_stop_string_ends_generation_and_is_not_returned(backend, base_dir, adapters):
    full, _ = run(backend, request(base_dir, adapters[0], max_tokens=20))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), full
    text, last = run(backend, request(base_dir, adapters[0], max_tokens=20, stop=(stop,)))
    assert last.finish_reason == "stop"
    assert text == full[: full.find(stop)]
    assert stop not in text


def test_adapter_with_another_hash_is_refused(backend, base_dir, adapters, tmp_path):
    wrong = AdapterRef(name="ft:tampered", path=adapters[0].path, sha256="0" * 64)
    with pytest.raises(BackendError) as refused:
        run(backend, request(base_dir, wrong))
    assert refused.value.code == "adapter_hash_mismatch"
    # The same check as the registry's: sha256 of the weights file.
    assert adapter_sha256(adapters[0].path) == adapters[0].sha256


def test_lru_cache_evicts_the_least_recently_used_adapter(backend, base_dir, adapters):
    small = LocalBackend(adapter_cache=2, batch_window_ms=0, device="cpu")
    try:
        a, b, c = adapters
        answers = [run(small, request(base_dir, x, max_tokens=6)) for x in (a, b, c, a, c)]
        stats = small.stats
        # a, b, c miss; c evicts a; a misses again and evicts b; c is still cached.
        assert (stats.adapter_misses, stats.adapter_evictions, stats.adapter_hits) == (4, 2, 1)
        # An evicted adapter's slot took the next one's weights (same shape), and each
        # answer is the one a cache that never evicts gives.
        assert stats.adapter_slot_reuses == 2
        assert answers == [
            run(backend, request(base_dir, x, max_tokens=6)) for x in (a, b, c, a, c)
        ]
        (loaded,) = small._bases.values()
        assert loaded.peft is not None and len(loaded.peft.peft_config) == 2
    finally:
        asyncio.run(small.close())


def test_closing_the_iterator_stops_generation(backend, base_dir, adapters):
    async def scenario() -> tuple[int, int, int]:
        stream = backend.generate(request(base_dir, adapters[0], max_tokens=4000))
        start = backend.stats.steps
        received = 0
        async for _chunk in stream:
            received += 1
            if received == 3:
                break
        await stream.aclose()
        await asyncio.sleep(0.3)
        settled = backend.stats.steps
        await asyncio.sleep(0.3)
        return start, settled, backend.stats.steps

    start, settled, later = asyncio.run(scenario())
    assert later == settled  # the worker stopped stepping
    assert settled - start < 4000


def test_batched_greedy_output_equals_unbatched(backend, base_dir, adapters):
    prompts = [
        request(base_dir, adapter, text=text, max_tokens=10)
        for adapter, text in [
            (adapters[0], "Invoice 7 totals 40 EUR."),
            (adapters[1], "Who issued invoice 12?"),
            (None, "Due date of invoice 3, please, as soon as you can"),
            (adapters[0], "Hi"),
        ]
    ]
    alone = [run(backend, req) for req in prompts]
    before = backend.stats.max_rows

    async def together() -> list[tuple[str, GenerationChunk]]:
        return list(await asyncio.gather(*(complete(backend, req) for req in prompts)))

    batched = asyncio.run(together())
    assert batched == alone
    assert backend.stats.max_rows >= 2 or before >= 2  # they really shared a batch


def test_a_request_arriving_mid_batch_joins_it(backend, base_dir, adapters):
    first = request(base_dir, adapters[0], max_tokens=40)
    second = request(base_dir, adapters[1], text="Late", max_tokens=8)
    alone = (run(backend, first), run(backend, second))

    async def staggered() -> tuple[tuple[str, GenerationChunk], ...]:
        steps = backend.stats.steps
        task = asyncio.create_task(complete(backend, first))
        while backend.stats.steps < steps + 3:  # the first request is decoding
            await asyncio.sleep(0.001)
        late = await complete(backend, second)
        return (await task, late)

    assert asyncio.run(staggered()) == alone


def test_requests_wait_when_every_cached_adapter_is_busy(base_dir, adapters):
    small = LocalBackend(adapter_cache=2, batch_window_ms=50, device="cpu")
    try:
        prompts = [request(base_dir, adapter, max_tokens=6) for adapter in adapters]
        alone = [run(small, req) for req in prompts]

        async def together() -> list[tuple[str, GenerationChunk]]:
            return list(await asyncio.gather(*(complete(small, req) for req in prompts)))

        # Three adapters, room for two: the third waits for a slot, then answers the same.
        assert asyncio.run(together()) == alone
        (loaded,) = small._bases.values()
        assert loaded.peft is not None and len(loaded.peft.peft_config) <= 2
    finally:
        asyncio.run(small.close())
