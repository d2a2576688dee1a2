"""One httpx client per gateway: JSON in, JSON out, the API's errors as `ApiError`.

It imports nothing of the gateway's server side, so it runs wherever the CLI runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from gateway.client.sse import ServerSentEvent, parse_events

USER_AGENT = "tunegate-cli"
# An upload's response comes once the gateway has scanned the whole file.
UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=900.0)
# A stream stays quiet between events: the gateway pings every 15 s.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=90.0)
Progress = Callable[[int], None]


class ApiError(Exception):
    """The gateway answered with an error: its status and machine-readable code."""

    def __init__(
        self, *, status: int, code: str, message: str, param: str | None, body: Any
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.body = body

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:2000]
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return cls(
                status=response.status_code,
                code=str(error.get("code") or error.get("type") or "error"),
                message=str(error.get("message") or ""),
                param=error.get("param"),
                body=body,
            )
        return cls(
            status=response.status_code,
            code=f"http_{response.status_code}",
            message=response.reason_phrase or "error",
            param=None,
            body=body,
        )


class GatewayUnreachable(Exception):
    """No answer from the gateway: refused, timed out, bad address."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the gateway at {url}: {reason}")
        self.url = url
        self.reason = reason


class Client:
    """Calls a gateway's API with a bearer token. The token is sent, never shown."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The decoded JSON body (or the text when it is not JSON); `ApiError` on 4xx/5xx."""
        try:
            response = self._http.request(
                method, path, json=json, params=_drop_none(params), **kwargs
            )
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, _reason(exc)) from None
        if response.is_error:
            raise ApiError.of(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Iterator[httpx.Response]:
        """A streamed response, checked: an error status raises `ApiError` before yielding."""
        try:
            with self._http.stream(method, path, params=_drop_none(params), **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.of(response)
                yield response
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, _reason(exc)) from None

    @contextmanager
    def events(
        self,
        path: str,
        *,
        last_event_id: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[Iterator[ServerSentEvent]]:
        """A server-sent event stream: complete events only (see gateway.client.sse). A
        dropped connection raises `GatewayUnreachable` from the iteration; resume with
        the last event's id."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        with self.stream(
            "GET", path, params=params, headers=headers, timeout=STREAM_TIMEOUT
        ) as response:
            yield parse_events(response.iter_lines())

    def upload(
        self,
        path: str,
        file: Path,
        *,
        fields: Mapping[str, str],
        on_progress: Progress | None = None,
    ) -> Any:
        """A multipart upload that streams the file (fields first, as the gateway wants
        them), telling ``on_progress`` how many of its bytes went out so far."""
        with file.open("rb") as handle:
            reader = _CountingReader(handle, on_progress)
            return self.request(
                "POST",
                path,
                data=dict(fields),
                files={"file": (file.name, reader, "application/jsonl")},
                timeout=UPLOAD_TIMEOUT,
            )

    def pages(
        self, path: str, *, params: Mapping[str, Any] | None = None, limit: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every item of a listing, following `next_after` (or the last item's id)."""
        query = dict(_drop_none(params) or {}, limit=limit)
        while True:
            page = self.get(path, params=query)
            data = page.get("data", [])
            yield from data
            if not page.get("has_more") or not data:
                return
            cursor = page.get("next_after") or data[-1].get("id")
            if cursor is None:
                return
            query["after"] = cursor


class _CountingReader:
    """A binary file that reports the bytes read from it (httpx reads the file part of a
    multipart body in 64 KiB chunks, as it sends them)."""

    def __init__(self, handle: IO[bytes], on_progress: Progress | None) -> None:
        self._handle = handle
        self._on_progress = on_progress
        self._sent = 0
        self.name = handle.name

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self._sent += len(chunk)
        if self._on_progress is not None and chunk:
            self._on_progress(self._sent)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._handle.seek(offset, whence)
        self._sent = position
        return position

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()


def _drop_none(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {key: value for key, value in params.items() if value is not None}


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unknown"
    return type(exc).__name__
