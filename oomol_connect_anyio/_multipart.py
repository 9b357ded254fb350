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
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import IO, Any

import anyio
import anyio.to_thread
import httpx

from ._errors import UploadChangedError, UploadError

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

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The file's bytes; ``UploadChangedError`` as soon as they stop matching its size
        (h11 would otherwise refuse the body mid-request), ``UploadError`` when reading fails."""
        if isinstance(self.source, bytes):
            yield self.source
            return
        sent = 0
        try:
            async with aclosing(self._read()) as reading:
                async for chunk in reading:
                    sent += len(chunk)
                    if self.size is not None and sent > self.size:
                        raise UploadChangedError(
                            f"{self.filename!r} grew while it was being uploaded "
                            f"(it had {self.size} bytes when the upload was prepared)"
                        )
                    yield chunk
        except (OSError, ValueError) as exc:  # removed, unreadable, or closed by its owner
            raise UploadError(
                f"{self.filename!r} could not be read while it was being uploaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if self.size is not None and sent < self.size:
            raise UploadChangedError(
                f"{self.filename!r} shrank while it was being uploaded "
                f"({sent} of the {self.size} bytes it had when the upload was prepared)"
            )

    async def _read(self) -> AsyncGenerator[bytes, None]:
        if isinstance(self.source, str):
            # Closed in ``finally`` without an await: closing the stream (MultipartBody.aclose)
            # closes the file then and there, on any backend.
            handle = await anyio.to_thread.run_sync(open, self.source, "rb")
            try:
                while chunk := await anyio.to_thread.run_sync(handle.read, CHUNK_SIZE):
                    yield chunk
            finally:
                handle.close()
        else:
            file = self.source
            assert not isinstance(file, bytes)
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
        return FilePart(os.path.basename(path), "", path, size=_regular_file_size(path, index))
    if hasattr(content, "read"):
        if getattr(content, "closed", False):
            raise ValueError(f"files[{index}]: the file object is closed")
        if isinstance(content, io.TextIOBase):
            raise TypeError(f"files[{index}]: open the file in binary mode ('rb')")
        name = os.path.basename(str(getattr(content, "name", "") or "")) or "file"
        _check_file_object(content, index)
        start, size = _position_and_size(content)
        return FilePart(name, "", content, start=start, size=size)
    raise TypeError(
        f"files[{index}]: expected a path, bytes, a binary file object or a "
        f"(filename, content, content_type) tuple, not {type(content).__name__}"
    )


def _regular_file_size(path: str, index: int) -> int:
    """The size of the regular file at ``path``; a clear error for anything else."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"files[{index}]: no such file: {path!r}") from None
    except OSError as exc:
        raise ValueError(f"files[{index}]: cannot examine {path!r}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"files[{index}]: is a directory, not a file: {path!r}")
    _check_regular(info, repr(path), index)
    if not os.access(path, os.R_OK):
        raise PermissionError(f"files[{index}]: file is not readable: {path!r}")
    if info.st_size == 0:
        try:
            with open(path, "rb") as handle:
                _check_empty(handle.read(1), repr(path), index)
        except OSError as exc:
            raise PermissionError(
                f"files[{index}]: cannot read {path!r}: {exc.strerror}"
            ) from None
    return info.st_size


def _check_file_object(file: IO[bytes], index: int) -> None:
    """Refuse a file object over a pipe, socket, device or ``/proc`` file."""
    try:
        info = os.fstat(file.fileno())
    except (OSError, ValueError, AttributeError):  # in memory (BytesIO) or wrapped
        return
    what = f"the file object {getattr(file, 'name', '')!r}"
    _check_regular(info, what, index)
    if info.st_size == 0:
        try:
            start = file.tell()
            peek = file.read(1)
            file.seek(start)
        except (OSError, ValueError) as exc:
            raise TypeError("file objects must be seekable (open the file with 'rb')") from exc
        _check_empty(peek, what, index)


def _check_regular(info: os.stat_result, what: str, index: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(
            f"files[{index}]: {what} is not a regular file (a FIFO, socket or device): "
            "its size is unknown and reading it may block, so it cannot be uploaded; "
            "pass its bytes instead"
        )


def _check_empty(first_byte: bytes, what: str, index: int) -> None:
    if first_byte:
        raise ValueError(
            f"files[{index}]: {what} reports a size of 0 but has content (a /proc or /sys "
            "file?): its size is unknown, so it cannot be uploaded; pass its bytes instead"
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


class MultipartBody(httpx.AsyncByteStream):
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
        self._streams: list[AsyncGenerator[bytes, None]] = []

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
        stream = self.stream()
        self._streams.append(stream)
        return stream

    async def aclose(self) -> None:
        """Close every stream handed out, and so the files they opened, even one left
        half-sent by a failed or cancelled upload (the sender calls it after each attempt)."""
        streams, self._streams = self._streams, []
        with anyio.CancelScope(shield=True):
            for stream in streams:
                await stream.aclose()

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """The body's bytes, from the start."""
        yield self._field_bytes
        for header, part in zip(self._file_headers, self._files, strict=True):
            yield header
            async with aclosing(part.chunks()) as chunks:  # closes the file with the stream
                async for chunk in chunks:
                    yield chunk
            yield b"\r\n"
        yield self._closing
