"""`serve_emulator`: hypercorn on a loopback port, under trio or asyncio."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskStatus
from hypercorn.config import Config

from ._emulator import Emulator
from ._faults import DroppedConnection
from ._http import Message, Receive, Send

GRACEFUL_TIMEOUT = 0.1


class _ServedApp:
    """Wraps `emu.app` for hypercorn: signals startup, turns drops into closed sockets,
    and cancels the requests still running (e.g. hung ones) when the server stops."""

    def __init__(self, emulator: Emulator) -> None:
        self._app = emulator.app
        self._running: set[anyio.CancelScope] = set()
        self.started = anyio.Event()

    def cancel_requests(self) -> None:
        """Cancel every request still being handled."""
        for scope in self._running:
            scope.cancel()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":

            async def send_lifespan(message: Message) -> None:
                await send(message)
                if message["type"] == "lifespan.startup.complete":
                    self.started.set()

            await self._app(scope, receive, send_lifespan)
            return
        with anyio.CancelScope() as cancel_scope:
            self._running.add(cancel_scope)
            try:
                await self._app(scope, receive, send)
            except DroppedConnection:
                # The response was started and never finished: hypercorn closes the connection.
                return
            finally:
                self._running.discard(cancel_scope)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by connections
    return sock


def _config(sock: socket.socket) -> Config:
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.keep_alive_max_requests = 2**31  # like Node's server: no per-connection limit
    return config


def _current_backend() -> str:
    try:
        import sniffio
    except ImportError:  # trio requires sniffio: without it we are on asyncio
        return "asyncio"
    return sniffio.current_async_library()


def _hypercorn_serve() -> Callable[..., Awaitable[None]]:
    if _current_backend() == "trio":
        from hypercorn.trio import serve

        return serve
    from hypercorn.asyncio import serve as asyncio_serve

    return asyncio_serve


async def _serve(app: _ServedApp, config: Config, shutdown: anyio.Event) -> None:
    serve = _hypercorn_serve()
    with anyio.CancelScope(shield=True):  # stops through `shutdown` only, gracefully
        await serve(app, config, shutdown_trigger=shutdown.wait)


async def _run(
    app: _ServedApp,
    config: Config,
    shutdown: anyio.Event,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(_serve, app, config, shutdown)
        try:
            await app.started.wait()
        except BaseException:
            shutdown.set()
            raise
        task_status.started()


@asynccontextmanager
async def serve_emulator(
    emulator: Emulator | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve an emulator (a default one if None) and yield its base URL `http://host:port/api`.

    Works under trio and asyncio; port 0 picks a free port. The server stops when the
    block exits, including on errors and cancellation.
    """
    emu = emulator if emulator is not None else Emulator()
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    app = _ServedApp(emu)
    shutdown = anyio.Event()
    error: BaseException | None = None
    async with anyio.create_task_group() as group:
        await group.start(_run, app, _config(sock), shutdown)
        try:
            yield f"http://{url_host}:{bound_port}/api"
        except BaseException as exc:  # re-raised below, outside the task group
            error = exc
        finally:
            app.cancel_requests()
            shutdown.set()
    if error is not None:
        raise error
