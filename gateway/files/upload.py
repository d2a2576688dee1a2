"""A multipart upload read as it streams: the form fields first, then the file's bytes.

Starlette's ``request.form()`` spools the whole file to a temporary file before the route
runs, so the upload would be written twice and could fill the disk before any check. Here
the parser runs on each received block; the fields that come before the file part are
collected (they decide authorization), and the file part's bytes are handed on as they
arrive. Clients send fields before files (the OpenAI SDK does, through httpx); a file part
before ``purpose`` and ``data_source`` is refused, because accepting it would mean
buffering the file before knowing whether the caller may upload it at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.errors import InvalidRequest, UnsupportedMediaType

FILE_FIELD: Final = "file"
MAX_FIELD_BYTES: Final = 1024
MAX_PARTS: Final = 16
MAX_FILENAME_CHARS: Final = 255
# Blocks handed to the ingest thread: large enough that the hop to a worker thread costs
# nothing against the hashing and scanning of the block.
BLOCK_BYTES: Final = 1 << 20


class MultipartUpload:
    """One request's multipart body. ``read_fields()`` reads up to the file part's headers;
    ``file_blocks()`` then yields the file's bytes; anything after the file is read and
    checked but not kept."""

    def __init__(self, stream: AsyncIterator[bytes], *, content_type: str | None) -> None:
        """``stream``: the request body as it arrives (``request.stream()``); the parser knows
        nothing of the web framework."""
        self._stream = stream
        self._content_type = content_type
        self._parser: MultipartParser | None = None
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._parts = 0
        self._name: str | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._value = bytearray()
        self._in_file = False
        self._file_started = False
        self._file_ended = False
        self._file_data: list[bytes] = []
        self._file_pending = 0
        self._ended = False
        self._exhausted = False

    # --- parser callbacks (run inside parser.write) -----------------------------------------

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidRequest(f"at most {MAX_PARTS} form parts", code="too_many_parts")
        self._headers = {}
        self._value.clear()
        self._name = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower().decode("latin-1")] = bytes(
            self._header_value
        )
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise InvalidRequest(
                "each part needs Content-Disposition: form-data with a name",
                code="invalid_multipart",
            )
        name = options[b"name"].decode("utf-8", "replace")
        self._name = name
        if name == FILE_FIELD:
            if self._file_started:
                raise InvalidRequest(
                    "send one file per upload", code="multiple_files", param=FILE_FIELD
                )
            self._file_started = self._in_file = True
            raw_name = options.get(b"filename", b"") or b"upload.jsonl"
            self.filename = _clean_filename(raw_name)
        elif name in self.fields:
            raise InvalidRequest(f"field {name!r} sent twice", code="duplicate_field", param=name)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._file_data.append(data[start:end])
            self._file_pending += end - start
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise InvalidRequest(
                f"form field {self._name!r} is over {MAX_FIELD_BYTES} bytes",
                code="field_too_large",
                param=self._name,
            )

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_ended = True
            return
        assert self._name is not None
        try:
            value = self._value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(
                f"form field {self._name!r} is not UTF-8", code="invalid_field", param=self._name
            ) from None
        if self._file_started:
            return  # fields after the file decide nothing: they are read, not kept
        self.fields[self._name] = value

    def _on_end(self) -> None:
        self._ended = True

    # --- reading ---------------------------------------------------------------------------

    def _start(self) -> MultipartParser:
        content_type, options = parse_options_header(self._content_type)
        if content_type != b"multipart/form-data":
            raise UnsupportedMediaType(
                "upload a file as multipart/form-data", code="multipart_required"
            )
        boundary = options.get(b"boundary")
        if not boundary:
            raise InvalidRequest("multipart body without a boundary", code="invalid_multipart")
        callbacks = {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_end": self._on_end,
        }
        try:
            return MultipartParser(boundary, callbacks)
        except FormParserError:  # e.g. a boundary over python-multipart's 256 bytes
            raise InvalidRequest("unusable multipart boundary", code="invalid_multipart") from None

    async def _read_more(self) -> bool:
        """Feeds the parser one received block; False once the body is exhausted."""
        if self._parser is None:
            self._parser = self._start()
        if self._exhausted:
            return False
        try:
            block = await anext(self._stream)
        except StopAsyncIteration:
            self._exhausted = True
            return False
        try:
            self._parser.write(block)
        except FormParserError:  # MultipartParseError is one
            raise InvalidRequest("malformed multipart body", code="invalid_multipart") from None
        return True

    async def read_fields(self, required: tuple[str, ...]) -> dict[str, str]:
        """Reads until the file part begins; the ``required`` fields must come before it."""
        while not self._file_started and not self._ended:
            if not await self._read_more():
                break
        missing = [name for name in required if name not in self.fields]
        if missing:
            where = "before the file part" if self._file_started else ""
            raise InvalidRequest(
                f"form field {missing[0]!r} is required {where}".rstrip(),
                code="missing_field",
                param=missing[0],
            )
        return self.fields

    async def file_blocks(self) -> AsyncIterator[bytes]:
        """The file part's bytes in blocks of about ``BLOCK_BYTES``, as they arrive."""
        if not self._file_started:
            await self.read_fields(())
        if not self._file_started:
            raise InvalidRequest(
                "the 'file' part is missing", code="missing_field", param=FILE_FIELD
            )
        while True:
            more = False if self._file_ended else await self._read_more()
            if self._file_data and (
                not more or self._file_ended or self._file_pending >= BLOCK_BYTES
            ):
                block = b"".join(self._file_data)
                self._file_data.clear()
                self._file_pending = 0
                yield block
            if not more:
                break
        while await self._read_more():  # whatever follows the file: checked, not kept
            pass
        if not self._ended:
            raise InvalidRequest("the multipart body ended early", code="invalid_multipart")


def _clean_filename(raw: bytes) -> str:
    """Metadata only (never a path on disk): the last path segment, printable, bounded."""
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if char.isprintable() and char != "\x00").strip()
    return (name or "upload.jsonl")[:MAX_FILENAME_CHARS]
