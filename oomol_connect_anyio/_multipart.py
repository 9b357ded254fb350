"""Streaming multipart/form-data bodies whose files are read off the event loop.

httpx's own multipart encoder reads file objects synchronously on the event
loop; uploads here are read in chunks in a worker thread instead, so a large
file neither blocks the loop nor sits in memory whole.
"""

from __future__ import annotations

import io
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import anyio
import anyio.to_thread

CHUNK_SIZE = 256 * 1024

FileContent = bytes | str | os.PathLike[str] | IO[bytes]
FileInput = FileContent | tuple[str, FileContent, str] | tuple[str, FileContent]
"""A path, a binary file object, ``bytes``, or ``(filename, content[, content_type])``."""
Files = FileInput | list[FileInput]
"""One file, or a list of them (a tuple is one ``(filename, content...)`` file)."""


@dataclass(frozen=True)
class FilePart:
    """One validated file, ready to be streamed (any number of times)."""

    filename: str
    content_type: str
    source: bytes | str | IO[bytes]
    start: int = 0
    size: int | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        if isinstance(self.source, bytes):
            yield self.source
        elif isinstance(self.source, str):
            async with await anyio.open_file(self.source, "rb") as handle:
                while chunk := await handle.read(CHUNK_SIZE):
                    yield chunk
        else:
            file = self.source
            await anyio.to_thread.run_sync(file.seek, self.start)
            while chunk := await anyio.to_thread.run_sync(file.read, CHUNK_SIZE):
                yield chunk


def prepare_files(files: Files | None) -> list[FilePart]:
    """Validate files before any request: a missing path raises ``FileNotFoundError``."""
    if files is None:
        return []
    items: Sequence[Any] = files if isinstance(files, list) else [files]
    return [_prepare(item, index) for index, item in enumerate(items)]


def _prepare(item: Any, index: int) -> FilePart:
    filename: str | None = None
    content_type: str | None = None
    content = item
    if isinstance(item, tuple):
        if len(item) not in (2, 3) or not isinstance(item[0], str):
            raise TypeError(
                f"files[{index}]: a tuple must be (filename, content) or "
                "(filename, content, content_type)"
            )
        filename, content = item[0], item[1]
        content_type = item[2] if len(item) == 3 else None
    part = _from_content(content, index)
    name = filename or part.filename
    return FilePart(
        filename=name,
        content_type=content_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
        source=part.source,
        start=part.start,
        size=part.size,
    )


def _from_content(content: Any, index: int) -> FilePart:
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        return FilePart("file", "", data, size=len(data))
    if isinstance(content, (str, os.PathLike)):
        path = os.fspath(content)
        if not isinstance(path, str):
            raise TypeError(f"files[{index}]: path must be text, not bytes")
        if not os.path.exists(path):
            raise FileNotFoundError(f"files[{index}]: no such file: {path!r}")
        if os.path.isdir(path):
            raise IsADirectoryError(f"files[{index}]: is a directory, not a file: {path!r}")
        if not os.access(path, os.R_OK):
            raise PermissionError(f"files[{index}]: file is not readable: {path!r}")
        return FilePart(os.path.basename(path), "", path, size=os.path.getsize(path))
    if hasattr(content, "read"):
        if getattr(content, "closed", False):
            raise ValueError(f"files[{index}]: the file object is closed")
        if isinstance(content, io.TextIOBase):
            raise TypeError(f"files[{index}]: open the file in binary mode ('rb')")
        name = os.path.basename(str(getattr(content, "name", "") or "")) or "file"
        start, size = _position_and_size(content)
        return FilePart(name, "", content, start=start, size=size)
    raise TypeError(
        f"files[{index}]: expected a path, bytes, a binary file object or a "
        f"(filename, content, content_type) tuple, not {type(content).__name__}"
    )


def _position_and_size(file: IO[bytes]) -> tuple[int, int | None]:
    try:
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
    except (OSError, ValueError, AttributeError) as exc:
        raise TypeError("file objects must be seekable (open the file with 'rb')") from exc
    return start, end - start


def _quote(value: str) -> str:
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """A ``multipart/form-data`` body of text fields and files, streamed lazily."""

    def __init__(self, fields: dict[str, str], files: list[FilePart]) -> None:
        self.boundary = secrets.token_hex(16)
        self._fields = fields
        self._files = files
        self._field_bytes = b"".join(
            self._header(f'name="{_quote(name)}"', None) + value.encode() + b"\r\n"
            for name, value in fields.items()
        )
        self._file_headers = [
            self._header(
                f'name="files"; filename="{_quote(part.filename)}"', part.content_type
            )
            for part in files
        ]
        self._closing = f"--{self.boundary}--\r\n".encode()

    def _header(self, disposition: str, content_type: str | None) -> bytes:
        lines = [f"--{self.boundary}", f"Content-Disposition: form-data; {disposition}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        sizes = [part.size for part in self._files]
        if all(size is not None for size in sizes):
            total = len(self._field_bytes) + len(self._closing)
            total += sum(len(h) + 2 for h in self._file_headers)
            total += sum(size for size in sizes if size is not None)
            headers["Content-Length"] = str(total)
        return headers

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Iterable again and again, so a retry or a 307/308 redirect can resend it."""
        return self.stream()

    async def stream(self) -> AsyncIterator[bytes]:
        """The body's bytes, from the start."""
        yield self._field_bytes
        for header, part in zip(self._file_headers, self._files, strict=True):
            yield header
            async for chunk in part.chunks():
                yield chunk
            yield b"\r\n"
        yield self._closing
