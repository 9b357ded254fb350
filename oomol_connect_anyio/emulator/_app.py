"""The ASGI application: routing, auth, fault injection and counting."""

from __future__ import annotations

import hmac
from collections.abc import MutableMapping
from typing import Any

import anyio

from ._faults import DroppedConnection, Fault
from ._http import (
    ClientDisconnected,
    HTTPError,
    Receive,
    Request,
    Response,
    Send,
    error_response,
    send_response,
)
from ._routes import INTERNAL, ROUTES, Handler, match
from ._state import EmulatorState

_CREATE = "POST /v1/tasks"
_DROP_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"64")]


class EmulatorApp:
    """The ASGI callable of an `Emulator` (`emu.app`)."""

    def __init__(self, emulator: EmulatorState) -> None:
        self._emu = emulator
        token = (emulator.token or "").encode()
        self._accepted = [] if emulator.auth == "none" else [token]
        self._creating = 0  # creates let through and not answered yet
        if emulator.auth == "raw-or-bearer":
            self._accepted.append(b"Bearer " + token)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        route, param = match(raw_path.partition(b"?")[0])
        request = Request(scope["method"], route, param, scope["headers"], receive)
        client = scope.get("client")
        try:
            if route in INTERNAL:
                await send_response(send, await self._handle(request))
            else:
                await self._serve(request, send, client and tuple(client))
        except ClientDisconnected:
            return

    async def _serve(self, request: Request, send: Send, client: object) -> None:
        name = "UNMATCHED" if request.route is None else f"{request.method} {request.route}"
        self._emu.counters.request(name, client)
        fault = self._emu.faults.decide(name, self._active) if request.route is not None else None
        # A create let through counts as active at once, so that concurrent creates cannot
        # all pass a `max_active` rule while their bodies are being read.
        let_through = fault is None or fault.kind is None or fault.after_accept
        creating = int(name == _CREATE and let_through)
        self._creating += creating
        try:
            await self._answer(request, send, name, fault)
        finally:
            self._creating -= creating

    def _active(self) -> int:
        return self._emu.store.active_count() + self._creating

    async def _answer(self, request: Request, send: Send, name: str, fault: Fault | None) -> None:
        if fault is not None:
            early = await self._apply(fault, name)
            if early is not None:
                await self._respond(send, name, early)
                return
            if fault.kind == "dropped":
                await _drop(send)
        response = await self._handle(request)
        if fault is not None and fault.after_accept:
            # The request was handled (a task created, a stop done); its answer is lost.
            if fault.kind == "dropped_after_accept":
                await _drop(send)
            response = fault.response() or response
        await self._respond(send, name, response)

    async def _apply(self, fault: Fault, name: str) -> Response | None:
        counters = self._emu.counters
        if fault.delay > 0:
            counters.fault(name, "delayed")
            await anyio.sleep(fault.delay)
        if fault.kind is None:
            return None
        counters.fault(name, fault.kind)
        if fault.kind.startswith("dropped"):
            counters.response(name, "dropped")
        return None if fault.after_accept else fault.response()

    async def _respond(self, send: Send, name: str, response: Response) -> None:
        self._emu.counters.response(name, str(response.status), len(response.body))
        await send_response(send, response)

    async def _handle(self, request: Request) -> Response:
        try:
            handler = self._resolve(request)
            return await handler(self._emu, request)
        except HTTPError as error:
            return error_response(error)
        except ClientDisconnected:
            raise
        except Exception as exc:
            return error_response(HTTPError(500, f"emulator bug: {exc!r}"))

    def _resolve(self, request: Request) -> Handler:
        if request.route is None:
            raise HTTPError(404, "not found")
        routes = INTERNAL.get(request.route)
        if routes is None:
            routes = ROUTES[request.route]
            self._check_auth(request)
        handler = routes.get(request.method)
        if handler is None:
            allow = ", ".join(routes).encode()
            raise HTTPError(405, "method not allowed", [(b"allow", allow)])
        return handler

    def _check_auth(self, request: Request) -> None:
        if not self._accepted:
            return
        given = request.header(b"authorization") or b""
        if not any(hmac.compare_digest(given, accepted) for accepted in self._accepted):
            raise HTTPError(401, "unauthorized")


async def _drop(send: Send) -> None:
    """Start a response, then abandon it: the connection closes mid-response."""
    await send({"type": "http.response.start", "status": 200, "headers": _DROP_HEADERS})
    raise DroppedConnection("connection dropped by the emulator's fault injection")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
