"""Governed chat completions: resolve the named model (gateway.inference.resolve), apply
the limits (gateway.inference.limits), hand the request to the backend, answer in OpenAI's
shape, and leave one usage row and one `inference.call` audit event per call
(gateway.inference.usage). No web framework here: a call ends as a `Reply` (bytes, status,
headers) or a `SSEStream` the router sends.

What the audit event hashes: ``request_sha256`` is the sha256 of the request body as
received; ``response_sha256`` the sha256 of the response body as sent (the JSON bytes of a
completion or of an error), and for a stream, of the concatenation of every SSE event's
bytes the gateway handed to the server, ``data: [DONE]\\n\\n`` included (a client that
went away mid-stream: of what was handed over until then)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from sqlmodel import Session

from gateway.audit_api.service import allowed_event
from gateway.authz import Authorized
from gateway.db import read_only
from gateway.errors import (
    Conflict,
    GatewayError,
    Gone,
    InvalidRequest,
    ServiceUnavailable,
    error_body,
)
from gateway.inference import resolve as resolver
from gateway.inference.backends import make_backend
from gateway.inference.backends.base import (
    BackendError,
    ChatMessage,
    GenerationChunk,
    GenerationRequest,
    InferenceBackend,
)
from gateway.inference.limits import (
    GenerationQueue,
    Reservation,
    TokenRateLimiter,
    check_input,
    check_output,
    limits_for,
)
from gateway.inference.schemas import ChatCompletionCreate
from gateway.inference.usage import CallRecord, UsageWriter
from gateway.runtime import Runtime

log = structlog.get_logger()

DONE = b"data: [DONE]\n\n"
OK = "ok"
DISCONNECTED = "client_disconnected"
PURPOSE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class InferenceRuntime:
    """What inference holds for the life of the process: the backend (built on the first
    call, so a gateway that never serves never imports torch), the quota, the queue and
    the usage writer."""

    def __init__(self, state: Runtime, *, backend: InferenceBackend | None = None) -> None:
        settings = state.settings
        self.state = state
        self.settings = settings
        self._backend = backend
        self._backend_lock = threading.Lock()
        self.limiter = TokenRateLimiter(settings.inference_tokens_per_minute)
        self.queue = GenerationQueue(
            slots=settings.inference_max_concurrent,
            waiting=settings.inference_queue_size,
            timeout=settings.inference_queue_timeout_seconds,
            retry_after=settings.inference_retry_after_seconds,
        )
        self.writer = UsageWriter(state.engine, notify=state.notify_sequencer)
        self.resolve_cache: dict[Any, Any] = {}  # resolve.Reads' rows, when it is on

    @property
    def backend(self) -> InferenceBackend:
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    self._backend = make_backend(self.settings)
                    log.info("inference.backend_started", backend=self._backend.name)
        return self._backend

    def use_backend(self, backend: InferenceBackend) -> None:
        """Serve with ``backend`` from now on (tests and benches bring their own)."""
        self._backend = backend

    async def aclose(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            try:
                await backend.close()
            except Exception:
                log.exception("inference.backend_close_failed")

    def stop(self) -> None:
        self.writer.stop()


@dataclass
class Reply:
    body: bytes
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


@dataclass
class Call:
    """One call's record as it goes: what the usage row and audit event will say."""

    id: str
    authorized: Authorized
    named: str
    request_sha256: str
    started: float
    created_at: int
    version_id: str | None = None
    base_model: str | None = None
    purpose: str | None = None
    role: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    keep_text_days: int | None = None
    prompt_json: str | None = None

    def record(
        self, *, outcome: str, status: int, response_sha256: str, text: str | None
    ) -> CallRecord:
        latency_ms = round((time.perf_counter() - self.started) * 1000, 3)
        principal = self.authorized.principal
        row = {
            "id": self.id,
            "tenant": principal.tenant,
            "model_id": self.named,
            "model_version_id": self.version_id,
            "base_model": self.base_model,
            "principal": principal.sub,
            "purpose": self.purpose,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": latency_ms,
            "outcome": outcome,
            "status_code": status,
            "request_sha256": self.request_sha256,
            "response_sha256": response_sha256,
            "created_at": self.created_at,
            "created_ns": time.time_ns(),
        }
        details = {
            "call_id": self.id,
            "model": self.named,
            "model_version": self.version_id,
            "base_model": self.base_model,
            "route_role": self.role,
            "purpose": self.purpose,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_us": round(latency_ms * 1000),  # the trail takes no floats
            "outcome": outcome,
            "status_code": status,
            "request_sha256": self.request_sha256,
            "response_sha256": response_sha256,
            "text_kept": self.keep_text_days is not None and text is not None,
        }
        audit = allowed_event(
            authorized=self.authorized,
            action="inference.call",
            resource=f"model:{self.version_id or self.named}"
            if self.named.startswith("ft:")
            else f"base:{self.version_id or self.named}",
            details=details,
        )
        if outcome != OK and outcome != DISCONNECTED:
            audit["decision"] = "deny" if status in (403, 409) else "allow"
        transcript = None
        if self.keep_text_days is not None and text is not None and self.version_id:
            transcript = {
                "call_id": self.id,
                "tenant": principal.tenant,
                "model_version_id": self.version_id,
                "principal": principal.sub,
                "prompt": self.prompt_json or "[]",
                "completion": text,
                "created_at": self.created_at,
                "expires_at": self.created_at + self.keep_text_days * 86400,
            }
        return CallRecord(row=row, audit=audit, transcript=transcript)


class _RandomIds:
    """``chatcmpl-`` + 24 random hex digits, from the OS's CSPRNG 4 KiB at a time: one
    os.urandom per 341 calls rather than one per call (each lets go of the GIL)."""

    CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)  # a child draws its own

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        with self._lock:
            if self._at + 12 > len(self._pool):
                self._pool, self._at = secrets.token_bytes(self.CHUNK), 0
            taken = self._pool[self._at : self._at + 12]
            self._at += 12
        return f"chatcmpl-{taken.hex()}"


_call_id = _RandomIds()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(value: Any) -> bytes:
    """JSON as starlette's JSONResponse renders it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _error_reply(exc: GatewayError) -> Reply:
    body = error_body(code=exc.code, message=exc.message, param=exc.param, details=exc.details)
    return Reply(body=_json(body), status_code=exc.status_code, headers=dict(exc.headers))


def _backend_error(exc: BackendError) -> GatewayError:
    """A backend's refusal as the gateway answers it (the codes are catalogued)."""
    details = {"backend_code": exc.code}
    if exc.code == "adapter_hash_mismatch":
        return Conflict(exc.message, code="adapter_hash_mismatch", details=details)
    if exc.code == "adapter_missing":
        return Gone(exc.message, code="adapter_missing", details=details)
    if exc.code == "backend_unavailable":
        return ServiceUnavailable(exc.message, code="backend_unavailable", details=details)
    if exc.code == "base_model_unavailable":
        return ServiceUnavailable(exc.message, code="base_model_unavailable", details=details)
    log.error("inference.backend_failed", backend_code=exc.code)
    return ServiceUnavailable(
        "the inference backend failed; see the server log",
        code="inference_backend_error",
        details=details,
    )


def _backend_failure(request: GenerationRequest) -> GatewayError:
    """Anything else a backend raised: logged, and answered as a backend error (never a
    500 and never a half-served call)."""
    log.exception("inference.backend_failed", base_model=request.base_model)
    return ServiceUnavailable(
        "the inference backend failed; see the server log", code="inference_backend_error"
    )


def _messages(body: ChatCompletionCreate) -> list[ChatMessage]:
    return [
        ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text)
        for m in body.messages
    ]


async def complete(
    runtime: InferenceRuntime,
    *,
    authorized: Authorized,
    body: ChatCompletionCreate,
    raw_body: bytes,
    request_id: str,
    header_purpose: str | None,
) -> Reply | SSEStream:
    """One call of /v1/chat/completions, answered whatever happens: every refusal after
    authorization is a Reply carrying its error (and recorded as the call's outcome)."""
    call = Call(
        id=_call_id(),
        authorized=authorized,
        named=body.model,
        request_sha256=_sha256(raw_body),
        started=time.perf_counter(),
        created_at=int(time.time()),
    )
    admitted = False
    reservation: Reservation | None = None
    try:
        unsupported = body.unsupported()
        if unsupported is not None:
            raise InvalidRequest(
                f"{unsupported} is not supported by this gateway",
                code="unsupported_parameter",
                param=unsupported,
            )
        purpose = header_purpose or body.body_purpose
        if purpose is not None and not PURPOSE.fullmatch(purpose):
            raise InvalidRequest(
                "purpose must be 1-64 of a-z, 0-9, . _ - (starting with a letter or digit)",
                code="invalid_request",
                param="purpose",
            )
        target = await _resolve(runtime, authorized, body, purpose, request_id, call)
        call.version_id, call.base_model = target.version_id, target.base_model
        call.purpose, call.role = target.purpose, target.role
        call.keep_text_days = target.keep_text_days
        limits = limits_for(runtime.settings, target.version_id, target.named, target.base_model)
        max_tokens = check_output(limits, body.requested_max_tokens)
        request = GenerationRequest(
            base_model=target.base_model,
            base_model_dir=target.base_model_dir,
            adapter=target.adapter,
            messages=_messages(body),
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            stop=body.stop_list,
            seed=body.seed,
        )
        call.prompt_tokens = await _count_prompt(runtime, request)
        check_input(limits, call.prompt_tokens)
        reservation = runtime.limiter.reserve(
            authorized.principal.tenant, call.prompt_tokens + max_tokens
        )
        await runtime.queue.acquire()
        admitted = True
        if call.keep_text_days is not None:
            call.prompt_json = json.dumps(
                [{"role": m.role, "content": m.content} for m in request.messages],
                ensure_ascii=False,
            )
    except GatewayError as exc:
        if reservation is not None:
            runtime.limiter.settle(reservation, 0)
        return await _refused(runtime, call, exc)
    except BackendError as exc:
        if reservation is not None:
            runtime.limiter.settle(reservation, 0)
        return await _refused(runtime, call, _backend_error(exc))
    assert admitted and reservation is not None
    guard = _Slot(runtime, reservation, call)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return SSEStream(runtime, call, request, guard, include_usage=include_usage)
    return await _generate_whole(runtime, call, request, guard)


async def _count_prompt(runtime: InferenceRuntime, request: GenerationRequest) -> int:
    try:
        backend = runtime.backend
        if backend.name == "noop":
            return backend.prompt_tokens(request)
        # a tokenizer and its chat template: not on the event loop
        return await anyio.to_thread.run_sync(backend.prompt_tokens, request)
    except BackendError:
        raise
    except Exception:
        log.exception("inference.prompt_count_failed", base_model=request.base_model)
        raise ServiceUnavailable(
            "the inference backend could not read the prompt; see the server log",
            code="inference_backend_error",
        ) from None


async def _resolve(
    runtime: InferenceRuntime,
    authorized: Authorized,
    body: ChatCompletionCreate,
    purpose: str | None,
    request_id: str,
    call: Call,
) -> resolver.Target:
    state = runtime.state
    ttl = runtime.settings.inference_resolve_cache_seconds

    def resolve_with(session: Any) -> resolver.Target:
        return resolver.resolve(
            resolver.Reads(session, runtime.resolve_cache, ttl),
            state=state,
            authorized=authorized,
            model=body.model,
            purpose=purpose,
            routing_key=request_id,
        )

    def work() -> resolver.Target:
        with Session(read_only(state.engine)) as session:
            return resolve_with(session)

    try:
        if ttl > 0:
            try:
                return resolve_with(None)  # all cached: no thread, no query
            except resolver.CacheMiss:
                pass
        return await anyio.to_thread.run_sync(work)
    except resolver.Refused as refused:
        call.version_id = refused.named.version_id
        call.base_model = refused.named.base_model
        call.purpose = refused.named.purpose
        error = refused.error
        assert isinstance(error, GatewayError)
        raise error from None
    except GatewayError:
        raise
    except Exception:
        # Deny on any exception: the call is refused, never served unchecked.
        log.exception("inference.resolve_failed", model=body.model)
        raise ServiceUnavailable(
            "the model could not be resolved; see the server log", code="inference_backend_error"
        ) from None


async def _refused(runtime: InferenceRuntime, call: Call, exc: GatewayError) -> Reply:
    reply = _error_reply(exc)
    record = call.record(
        outcome=exc.code,
        status=reply.status_code,
        response_sha256=_sha256(reply.body),
        text=None,
    )
    runtime.writer.submit(record)  # a refusal is answered whether or not it is recorded
    log.info("inference.refused", code=exc.code, model=call.named, status=reply.status_code)
    return reply


class _Slot:
    """The queue slot and quota reservation a call holds; released exactly once."""

    def __init__(self, runtime: InferenceRuntime, reservation: Reservation, call: Call) -> None:
        self.runtime = runtime
        self.reservation = reservation
        self.call = call
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.runtime.queue.release()
        self.runtime.limiter.settle(
            self.reservation, self.call.prompt_tokens + self.call.completion_tokens
        )

    def __del__(self) -> None:  # a stream the server never started
        if not self.released:
            with contextlib.suppress(Exception):  # interpreter shutdown
                self.release()


def _completion(call: Call, text: str, finish: str) -> dict[str, Any]:
    return {
        "id": call.id,
        "object": "chat.completion",
        "created": call.created_at,
        "model": call.version_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": _usage(call),
        "system_fingerprint": None,
        "tunegate": {"requested_model": call.named, "purpose": call.purpose, "route": call.role},
    }


def _usage(call: Call) -> dict[str, int]:
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "total_tokens": call.prompt_tokens + call.completion_tokens,
    }


async def _generate_whole(
    runtime: InferenceRuntime, call: Call, request: GenerationRequest, slot: _Slot
) -> Reply:
    parts: list[str] = []
    finish = "stop"
    iterator = runtime.backend.generate(request)
    try:
        async for chunk in iterator:
            parts.append(chunk.text)
            call.completion_tokens = chunk.completion_tokens
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
                break
    except BackendError as exc:
        slot.release()
        return await _refused(runtime, call, _backend_error(exc))
    except Exception:
        slot.release()
        return await _refused(runtime, call, _backend_failure(request))
    except asyncio.CancelledError:
        slot.release()
        runtime.writer.submit(
            call.record(outcome=DISCONNECTED, status=499, response_sha256=_sha256(b""), text=None)
        )
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await _close(iterator)
    slot.release()
    text = "".join(parts)
    body = _json(_completion(call, text, finish))
    record = call.record(outcome=OK, status=200, response_sha256=_sha256(body), text=text)
    if runtime.settings.inference_await_record:
        await runtime.writer.write(record)
    else:
        runtime.writer.submit(record)
    return Reply(body=body, status_code=200)


async def _close(iterator: AsyncIterator[GenerationChunk]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.exception("inference.backend_close_failed")


class SSEStream:
    """The SSE body of a streamed completion, OpenAI's `chat.completion.chunk` events
    ending with ``data: [DONE]``. ``aclose()`` (the router calls it when the response
    ends, a client gone included) closes the backend's iterator, which stops the
    generation, and records the call."""

    media_type = "text/event-stream"

    def __init__(
        self,
        runtime: InferenceRuntime,
        call: Call,
        request: GenerationRequest,
        slot: _Slot,
        *,
        include_usage: bool,
    ) -> None:
        self.runtime = runtime
        self.call = call
        self.request = request
        self.slot = slot
        self.include_usage = include_usage
        self.digest = hashlib.sha256()
        self.parts: list[str] = []
        self.outcome: str | None = None
        self._events: AsyncIterator[bytes] | None = None
        self._backend_iterator: AsyncIterator[GenerationChunk] | None = None
        self._finished = False

    def __aiter__(self) -> SSEStream:
        return self

    async def __anext__(self) -> bytes:
        if self._events is None:
            self._events = self._produce()
        try:
            data = await self._events.__anext__()
        except StopAsyncIteration:
            await self.aclose()
            raise
        except BaseException:
            if self.outcome is None:
                self.outcome = DISCONNECTED
            raise
        self.digest.update(data)
        return data

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.call.id,
            "object": "chat.completion.chunk",
            "created": self.call.created_at,
            "model": self.call.version_id,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        return b"data: " + _json(chunk) + b"\n\n"

    async def _produce(self) -> AsyncIterator[bytes]:
        yield self._event(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None,
                    "logprobs": None,
                }
            ]
        )
        self._backend_iterator = self.runtime.backend.generate(self.request)
        finish = "stop"
        try:
            async for chunk in self._backend_iterator:
                self.call.completion_tokens = chunk.completion_tokens
                if chunk.text:
                    self.parts.append(chunk.text)
                    yield self._event(
                        [
                            {
                                "index": 0,
                                "delta": {"content": chunk.text},
                                "finish_reason": None,
                                "logprobs": None,
                            }
                        ]
                    )
                if chunk.finish_reason is not None:
                    finish = chunk.finish_reason
                    break
        except Exception as exc:
            error = (
                _backend_error(exc)
                if isinstance(exc, BackendError)
                else _backend_failure(self.request)
            )
            self.outcome = error.code
            yield b"data: " + _error_reply(error).body + b"\n\n"
            return
        yield self._event([{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}])
        if self.include_usage:
            yield self._event([], usage=_usage(self.call))
        self.outcome = OK
        yield DONE

    async def aclose(self) -> None:
        """Idempotent: stops the generation, frees the slot, records the call."""
        if self._finished:
            return
        self._finished = True
        with anyio.CancelScope(shield=True):
            if self._backend_iterator is not None:
                await _close(self._backend_iterator)
            if self._events is not None:
                await _close(self._events)  # type: ignore[arg-type]
        self.slot.release()
        outcome = self.outcome or DISCONNECTED
        status = 200 if outcome in (OK, DISCONNECTED) else 502
        record = self.call.record(
            outcome=outcome,
            status=200 if outcome == OK else (499 if outcome == DISCONNECTED else status),
            response_sha256=self.digest.hexdigest(),
            text="".join(self.parts) if outcome == OK else None,
        )
        try:
            self.runtime.writer.submit(record)
        except Exception:
            log.exception("inference.call_not_recorded", call_id=self.call.id)
        log.info("inference.stream_ended", outcome=outcome, tokens=self.call.completion_tokens)
