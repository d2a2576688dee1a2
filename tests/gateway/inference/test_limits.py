"""The per-tenant tokens-per-minute window and the bounded queue, on a clock the test
turns."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ServiceUnavailable, TooManyRequests
from gateway.inference.limits import GenerationQueue, TokenRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_slides_and_settles():
    clock = Clock()
    limiter = TokenRateLimiter(100, clock=clock)
    first = limiter.reserve("t", 80)
    with pytest.raises(TooManyRequests) as over:
        limiter.reserve("t", 30)
    assert over.value.headers["retry-after"] == "60"
    assert over.value.details["used"] == 80
    limiter.settle(first, 20)  # it used less than it reserved
    limiter.reserve("t", 30)
    limiter.reserve("other", 100)  # each tenant has its own minute
    clock.now += 30
    second = limiter.reserve("t", 40)
    with pytest.raises(TooManyRequests) as over:
        limiter.reserve("t", 20)  # 20 + 30 + 40 + 20 > 100: the first two must expire
    assert over.value.headers["retry-after"] == "30"
    clock.now += 30.5  # the first two left the window
    limiter.settle(second, 40)
    limiter.reserve("t", 60)
    assert limiter._windows["t"].total == 100


def test_the_queue_is_bounded():
    async def scenario() -> None:
        queue = GenerationQueue(slots=1, waiting=1, timeout=0.2, retry_after=2)
        await queue.acquire()
        waiter = asyncio.ensure_future(queue.acquire())
        await asyncio.sleep(0)
        assert queue.waiting == 1
        with pytest.raises(ServiceUnavailable) as full:
            await queue.acquire()  # a second waiter: refused at once
        assert full.value.headers["retry-after"] == "2"
        queue.release()
        await waiter
        assert queue.running == 1 and queue.waiting == 0
        with pytest.raises(ServiceUnavailable):
            await queue.acquire()  # waits its timeout, then 503
        assert queue.waiting == 0

    asyncio.run(scenario())
