"""Streaming multipart/form-data parsing: file parts are hashed, never held whole."""

from __future__ import annotations

import hashlib
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from ._http import JSON_BODY_LIMIT, HTTPError, Receive, iter_body

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

HEAD_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One uploaded file: its size and sha256, and at most its first MiB."""

    name: str
    content_type: str
    size: int
    sha256: str
    head: bytes


class _Part:
    """The part being parsed: a text field, or a file being hashed."""

    __slots__ = ("content_type", "data", "filename", "hasher", "name", "size")

    def __init__(self, name: str, filename: str | None, content_type: str) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.size = 0
        self.hasher = hashlib.sha256() if filename is not None else None
        self.data = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.hasher is not None:
            self.hasher.update(chunk)
            if len(self.data) < HEAD_LIMIT:
                self.data += chunk[: HEAD_LIMIT - len(self.data)]
        elif self.size > JSON_BODY_LIMIT:
            raise HTTPError(413, f"form field {self.name!r} larger than {JSON_BODY_LIMIT} bytes")
        else:
            self.data += chunk


class _Collector:
    """python-multipart callbacks collecting text fields and file summaries."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.files: list[UploadedFile] = []
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._part: _Part | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = params.get(b"filename")
        filename = None if raw_filename is None else raw_filename.decode("utf-8", "replace")
        if filename is None and name == "files":
            filename = ""
        content_type = self._headers.get(b"content-type", b"application/octet-stream")
        self._part = _Part(name, filename, content_type.decode("latin-1"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is not None:
            self._part.feed(data[start:end])

    def _part_end(self) -> None:
        part, self._part = self._part, None
        if part is None:
            return
        if part.hasher is None:
            self.fields[part.name] = part.data.decode("utf-8", "replace")
            return
        self.files.append(
            UploadedFile(
                name=part.filename or "",
                content_type=part.content_type,
                size=part.size,
                sha256=part.hasher.hexdigest(),
                head=bytes(part.data),
            )
        )

    def _end(self) -> None:
        self.ended = True


async def parse_multipart(
    content_type: bytes, receive: Receive
) -> tuple[dict[str, str], list[UploadedFile]]:
    """Parse a multipart body as it streams in: (text fields, uploaded files)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPError(400, "multipart/form-data request without a boundary in its Content-Type")
    collector = _Collector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async with aclosing(iter_body(receive)) as body:
            async for chunk in body:
                parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise HTTPError(400, f"malformed multipart body: {exc}") from None
    if not collector.ended:
        raise HTTPError(400, "incomplete multipart body: the closing boundary is missing")
    return collector.fields, collector.files
