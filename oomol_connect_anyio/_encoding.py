"""How a call becomes a request: its URL (ids percent-encoded), headers and body."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from ._multipart import MultipartBody
from ._version import __version__

JSON_TYPE = httpx.Headers({"Content-Type": "application/json"})
# Built once: json.dumps given options builds an encoder on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


class JsonBytes(bytes):
    """A body already encoded as JSON, sent as it is."""


def canonical_json(value: Any) -> JsonBytes:
    """``value`` as compact UTF-8 JSON with sorted keys: equal values give equal bytes, so a
    create's body doubles as what a journal hashes to recognise the request."""
    try:
        return JsonBytes(_CANONICAL(value).encode())
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) included
        raise TypeError(f"request body is not JSON-serialisable: {exc}") from None


def default_headers() -> httpx.Headers:
    """What every request carries, to whichever origin."""
    return httpx.Headers(
        {
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"oomol-connect-anyio/{__version__}",
        }
    )


def encode_path_param(value: str) -> str:
    """Percent-encode an id for one path segment (``/``, ``%`` and dot segments too)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id must be a non-empty string, not {value!r}")
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def encode_body(
    json_body: Any, multipart: MultipartBody | None
) -> tuple[httpx.Headers | None, Any]:
    """The body's own headers (its type and length) and the body itself."""
    if multipart is not None:
        return httpx.Headers(multipart.headers), multipart
    if json_body is None:
        return None, None
    if isinstance(json_body, JsonBytes):
        return JSON_TYPE, json_body
    try:
        content = _COMPACT(json_body).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"request body is not JSON-serialisable: {exc}") from None
    return JSON_TYPE, content
