"""Reading a response body whole: decompressed step by step, within a size cap, and with
every stream and generator under it closed before returning, on asyncio and trio alike.

Why not ``response.aiter_bytes()``: it decompresses whatever chunk the transport hands over
in one go (a gzip bomb grows a whole chunk a thousandfold before any cap can look at it),
and leaving it early abandons the async generators nested under it to the garbage
collector, which trio reports as a ``ResourceWarning``. Here ``zlib`` decompresses at most
``STEP`` bytes at a time, and an early exit closes the response (so its connection), then
runs the raw stream's generator to its end, which comes at once on a closed connection.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ._errors import InvalidResponseError

STEP = 64 * 1024
"""The most bytes one decompression step may produce."""


class _Inflater:
    """gzip or deflate (zlib-wrapped, or raw as some servers send it), ``STEP`` at a time."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self._zlib.decompress(data, STEP)
            except zlib.error:
                if self._gzip or self._started:
                    raise
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate
                out = self._zlib.decompress(data, STEP)
            self._started = True
            data = self._zlib.unconsumed_tail
            if out:
                yield out

    def flush(self) -> bytes:
        return self._zlib.flush()


def _inflater(response: httpx.Response) -> _Inflater | None:
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflater(encoding)
    # The client asks for gzip or deflate only; anything else cannot be read.
    raise httpx.DecodingError(
        f"unsupported Content-Encoding {encoding!r}", request=response.request
    )


async def read_body(response: httpx.Response, max_bytes: int, method: str, url: str) -> bytes:
    """The decoded body of ``response``, refused once it grows past ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    raw: AsyncIterator[bytes] | None = None
    try:
        inflater = _inflater(response)
        raw = aiter(response.stream)  # type: ignore[arg-type]
        async for chunk in raw:
            for piece in (chunk,) if inflater is None else inflater.feed(chunk):
                size += len(piece)
                if size > max_bytes:
                    raise InvalidResponseError(
                        response.status_code,
                        f"the response is larger than max_response_bytes "
                        f"({max_bytes} bytes once decompressed)",
                        None, method, url,
                    )
                chunks.append(piece)
        raw = None  # exhausted
        if inflater is not None:
            chunks.append(inflater.flush())
    except zlib.error as exc:
        raise httpx.DecodingError(
            f"the response body could not be decompressed: {exc}", request=response.request
        ) from None
    finally:
        await response.aclose()
        if raw is not None:
            await _run_out(raw)
    return b"".join(chunks)


async def _run_out(raw: Any) -> None:
    """End a raw stream left part-way: the connection under it is closed already, so it ends
    at once (with an error, which is of no interest now)."""
    with contextlib.suppress(Exception):
        async for _ in raw:
            pass
