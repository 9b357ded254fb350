"""``client.blocks``: blocks with ``blockId`` and ``version`` added."""

from __future__ import annotations

import re
from typing import cast

from .._errors import InvalidResponseError
from .._responses import list_of_objects
from .._transport import Transport
from .._types import Block, ListBlocksResponse

# ".../packages/<name>-1.2.3/..." and ".../packages/<name>/1.2.3/..."
_VERSION = re.compile(r"[-/](\d{1,9}(?:\.\d{1,9})+)(?:/|$)")
_PACKAGES_DIR = "/packages/"
UNKNOWN_VERSION = "unknown"


def version_from_path(path: str) -> str:
    """The package version embedded in a block's install path, or ``"unknown"``.

    The search starts at the last ``/packages/`` so that a versioned directory
    above it (``/opt/studio-2.1/packages/...``) is not mistaken for the package's.
    """
    path = path.replace("\\", "/")  # Windows install paths
    start = path.rfind(_PACKAGES_DIR)
    match = _VERSION.search(path, start + 1 if start >= 0 else 0)
    return match.group(1) if match else UNKNOWN_VERSION


def _version_key(version: str) -> tuple[int, ...]:
    return () if version == UNKNOWN_VERSION else tuple(int(p) for p in version.split("."))


def latest_versions(blocks: list[Block]) -> list[Block]:
    """Keep the blocks of each package's newest version, in their original order."""
    newest: dict[str, tuple[int, ...]] = {}
    for block in blocks:
        key = _version_key(block["version"])
        package = block.get("package", "")
        if package not in newest or key > newest[package]:
            newest[package] = key
    return [b for b in blocks if _version_key(b["version"]) == newest[b.get("package", "")]]


class Blocks:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def list(self, include_all_versions: bool = False) -> ListBlocksResponse:
        """``GET /v1/blocks``; only each package's latest version unless asked."""
        body = await self._transport.request("GET", "/v1/blocks")
        blocks = cast("list[Block]", list_of_objects(body, "blocks"))
        for block in blocks:
            for key in ("package", "name"):
                if not isinstance(block.get(key, ""), str):
                    raise InvalidResponseError(
                        200, f"unexpected response: a block's {key!r} is not a string", body
                    )
        for block in blocks:
            block["blockId"] = f"{block.get('package', '')}::{block.get('name', '')}"
            path = block.get("path")
            block["version"] = version_from_path(path) if isinstance(path, str) else UNKNOWN_VERSION
        return {"blocks": blocks if include_all_versions else latest_versions(blocks)}
