"""``client.flows``: the flows an exported image serves."""

from __future__ import annotations

from typing import cast

from .._responses import list_of_objects
from .._transport import Transport
from .._types import Flow, ListFlowsResponse


class Flows:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def list(self) -> ListFlowsResponse:
        """``GET /v1/flows``."""
        body = await self._transport.request("GET", "/v1/flows")
        return {"flows": cast("list[Flow]", list_of_objects(body, "flows"))}
