"""Refuses request bodies over a size limit before they fill memory: by Content-Length
when the client sends one, and by counting otherwise (chunked bodies)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import PayloadTooLarge, error_body


class BodySizeLimitMiddleware:
    """``streamed`` names the routes that read their own body as it arrives (uploads): they
    get their own, larger limit on the declared length, are never buffered here, and count
    what they read themselves."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, streamed: dict[tuple[str, str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        streamed_limit = self.streamed.get((scope["method"], scope["path"].rstrip("/")))
        limit = streamed_limit or self.max_bytes
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return
        if streamed_limit is not None:
            await self.app(scope, *_closing_when_unread(receive, send))
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No declared length (chunked): read up to the limit first, then replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await _refuse(send, self.max_bytes)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _closing_when_unread(receive: Receive, send: Send) -> tuple[Receive, Send]:
    """A response sent before the whole body was read (a refusal mid-upload) closes the
    connection: otherwise the server would go on reading, and discarding, whatever the
    client still sends (gigabytes, for a refused upload)."""
    body_done = False

    async def counting_receive() -> Message:
        nonlocal body_done
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start" and not body_done:
            headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return counting_receive, closing_send


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _message(max_bytes: int) -> str:
    return f"request body is larger than {max_bytes} bytes"


async def _refuse(send: Send, max_bytes: int) -> None:
    body = json.dumps(error_body(code=PayloadTooLarge.code, message=_message(max_bytes))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ConcurrencyLimitMiddleware:
    """At most ``max_requests`` requests are handled at once; the rest wait their turn.

    Why: a sync route runs in anyio's thread pool, and so does the validation of its
    response, between the route's return and the commit of its transaction. A request
    holding a lock (SQLite's one write lock, a PostgreSQL row or advisory lock) therefore
    needs one more pool thread before it can release that lock. If every pool thread were
    taken by requests waiting for the same lock, nothing could move until the database
    gave up waiting. Keeping requests below the pool's size leaves that thread free.
    Long-lived streams (``exempt_suffixes``) hold no lock and are not counted.
    """

    def __init__(
        self, app: ASGIApp, *, max_requests: int, exempt_suffixes: tuple[str, ...] = ()
    ) -> None:
        import anyio

        self.app = app
        self.exempt_suffixes = exempt_suffixes
        self._slots = anyio.Semaphore(max_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].endswith(self.exempt_suffixes):
            await self.app(scope, receive, send)
            return
        async with self._slots:
            await self.app(scope, receive, send)
