"""Request limits in front of the backend: per-model token limits, a per-tenant
tokens-per-minute quota and a bounded queue. All in memory, per gateway process (a
deployment of N processes allows N times the quota; the README says so).

No web framework here: refusals are GatewayErrors with the figures in ``details`` and a
``retry-after`` header where waiting helps."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import Settings
from gateway.errors import InvalidRequest, ServiceUnavailable, TooManyRequests

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class TokenLimits:
    max_input_tokens: int
    max_output_tokens: int


def limits_for(settings: Settings, *names: str) -> TokenLimits:
    """The limits of the first of ``names`` (model id, then base model) with an entry in
    ``inference_model_limits``, each figure defaulting to the global setting."""
    per_model = settings.inference_model_limits
    entry = next((per_model[name] for name in names if name in per_model), {})
    return TokenLimits(
        max_input_tokens=int(entry.get("max_input_tokens", settings.inference_max_input_tokens)),
        max_output_tokens=int(entry.get("max_output_tokens", settings.inference_max_output_tokens)),
    )


def check_output(limits: TokenLimits, requested: int | None) -> int:
    """The max_tokens to generate: the request's, or the model's limit when none."""
    if requested is None:
        return limits.max_output_tokens
    if requested > limits.max_output_tokens:
        raise InvalidRequest(
            f"max_tokens is {requested}, this model's limit is {limits.max_output_tokens}",
            code="max_output_tokens_exceeded",
            param="max_tokens",
            details={"requested": requested, "limit": limits.max_output_tokens},
        )
    return requested


def check_input(limits: TokenLimits, prompt_tokens: int) -> None:
    if prompt_tokens > limits.max_input_tokens:
        raise InvalidRequest(
            f"the prompt is {prompt_tokens} tokens, this model's limit is "
            f"{limits.max_input_tokens}",
            code="context_length_exceeded",
            param="messages",
            details={"prompt_tokens": prompt_tokens, "limit": limits.max_input_tokens},
        )


class _Window:
    """One tenant's reservations of the last minute and their running total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[Reservation] = deque()
        self.total = 0.0


class Reservation:
    """Tokens a call holds in its tenant's window from ``at`` on."""

    __slots__ = ("window", "at", "tokens")

    def __init__(self, window: _Window, at: float, tokens: float) -> None:
        self.window = window
        self.at = at
        self.tokens = tokens


class TokenRateLimiter:
    """Tokens per tenant over a sliding minute. A call reserves its prompt plus its
    max_tokens on admission and settles to what it really used when it ends. O(1) per call
    (amortised): a running total per tenant, old entries dropped from the front."""

    def __init__(
        self, tokens_per_minute: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tokens_per_minute = tokens_per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def _used(self, window: _Window, now: float) -> int:
        entries = window.entries
        while entries and entries[0].at <= now - WINDOW_SECONDS:
            window.total -= entries.popleft().tokens
        if not entries:
            window.total = 0.0  # no drift from float sums
        return int(window.total)

    def reserve(self, tenant: str, tokens: int) -> Reservation:
        """A reservation to settle later; raises 429 with retry-after when it does not fit."""
        with self._lock:
            now = self.clock()
            window = self._windows.setdefault(tenant, _Window())
            used = self._used(window, now)
            if used + tokens > self.tokens_per_minute:
                retry = self._retry_after(window, now, used + tokens - self.tokens_per_minute)
                raise TooManyRequests(
                    f"tenant {tenant} would use {used + tokens} tokens this minute, its quota "
                    f"is {self.tokens_per_minute}",
                    code="rate_limit_exceeded",
                    headers={"retry-after": str(retry)},
                    details={
                        "quota": "tokens_per_minute",
                        "limit": self.tokens_per_minute,
                        "used": used,
                        "requested": tokens,
                        "retry_after_seconds": retry,
                    },
                )
            reservation = Reservation(window, now, float(tokens))
            window.entries.append(reservation)
            window.total += tokens
            return reservation

    def settle(self, reservation: Reservation, tokens: int) -> None:
        """The call used ``tokens`` in the end (0: refused before it ran)."""
        with self._lock:
            if reservation.at > self.clock() - WINDOW_SECONDS:  # still in its window
                reservation.window.total += tokens - reservation.tokens
            reservation.tokens = float(tokens)

    def _retry_after(self, window: _Window, now: float, excess: float) -> int:
        if excess > self.tokens_per_minute:  # larger than a whole minute's quota
            return math.ceil(WINDOW_SECONDS)
        freed = 0.0
        for entry in window.entries:
            freed += entry.tokens
            if freed >= excess:
                return max(1, math.ceil(entry.at + WINDOW_SECONDS - now))
        return math.ceil(WINDOW_SECONDS)


class GenerationQueue:
    """At most ``slots`` generations at once, at most ``waiting`` requests waiting for one;
    a request that would be one more, or that waited ``timeout`` seconds, gets 503 with
    retry-after. Never an unbounded wait. Lives on the server's event loop."""

    def __init__(self, *, slots: int, waiting: int, timeout: float, retry_after: int) -> None:
        self.slots = slots
        self.max_waiting = waiting
        self.timeout = timeout
        self.retry_after = retry_after
        self.waiting = 0
        self.running = 0
        self._semaphore: asyncio.Semaphore | None = None

    def _full(self, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"the inference queue is full ({why}): retry later",
            code="inference_queue_full",
            headers={"retry-after": str(self.retry_after)},
            details={
                "running": self.running,
                "waiting": self.waiting,
                "slots": self.slots,
                "queue_size": self.max_waiting,
            },
        )

    async def acquire(self) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.slots)
        semaphore = self._semaphore
        if semaphore.locked() or self.waiting:
            if self.waiting >= self.max_waiting:
                raise self._full(f"{self.waiting} waiting")
            self.waiting += 1
            try:
                await asyncio.wait_for(semaphore.acquire(), self.timeout)
            except TimeoutError:
                raise self._full(f"waited {self.timeout:g} s") from None
            finally:
                self.waiting -= 1
        else:
            await semaphore.acquire()
        self.running += 1

    def release(self) -> None:
        assert self._semaphore is not None
        self.running -= 1
        self._semaphore.release()
