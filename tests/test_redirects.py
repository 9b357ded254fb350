"""Redirects over real sockets: the token never follows a redirect to another origin.

Server A is a tiny ASGI app that redirects; server B is the real emulator (no auth) behind
a recorder of request headers. Both run on loopback ports, so B is another origin.
``serve_asgi`` is also used by ``test_bad_input.py``.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import sniffio
from helpers import BASE, gzip_bomb, make_client, mock_api, task
from hypercorn.config import Config

from oomol_connect_anyio import (
    ConnectionError,
    OomolConnectClient,
    OomolConnectError,
)
from oomol_connect_anyio._inputs import build_create_payload
from oomol_connect_anyio.emulator import Emulator

pytestmark = pytest.mark.anyio

TOKEN = "redirect-T0KEN-5c1a-keep-at-home"
FAST: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------- test servers


@asynccontextmanager
async def serve_asgi(app: App) -> AsyncIterator[str]:
    """Serve an ASGI app with hypercorn on a free loopback port; yield ``http://host:port``.

    The socket listens before the server starts, so no request can race its startup.
    """
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve  # type: ignore[assignment]
    shutdown = anyio.Event()

    async def run() -> None:
        with anyio.CancelScope(shield=True):  # it stops through `shutdown`, gracefully
            await serve(app, config, shutdown_trigger=shutdown.wait)

    error: BaseException | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(run)
        try:
            yield f"http://127.0.0.1:{port}"
        except BaseException as exc:  # re-raised bare, not in the task group's ExceptionGroup
            error = exc
        finally:
            shutdown.set()
    if error is not None:
        raise error


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def drain(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Recorder:
    """Records each request's headers, then hands it to ``inner`` (the emulator's app)."""

    inner: App
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append(Seen(scope["method"], scope["raw_path"].decode(), headers))
        await self.inner(scope, receive, send)


@dataclass
class Redirector(Recorder):
    """Server A. ``/elsewhere/...`` -> B (``target``), ``/moved/...`` -> ``/...`` on A,
    ``/loop/...`` -> itself, ``/ftp/...`` -> an ftp URL; anything else goes to ``inner``."""

    target: str = ""
    status: int = 307

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["raw_path"].decode() if scope["type"] == "http" else ""
        prefix, _, rest = path[1:].partition("/")
        locations = {
            "elsewhere": f"{self.target}/{rest}",
            "moved": f"/{rest}",
            "loop": path,
            "ftp": f"ftp://127.0.0.1/{rest}",
        }
        if prefix not in locations:
            await super().__call__(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append(Seen(scope["method"], path, headers))
        await drain(receive)
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"location", locations[prefix].encode()), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


@dataclass
class Servers:
    a: Redirector
    b: Recorder
    a_url: str
    b_url: str
    a_emulator: Emulator
    b_emulator: Emulator


@asynccontextmanager
async def two_servers(status: int = 307) -> AsyncIterator[Servers]:
    """A (token required, redirecting) and B (the emulator with auth "none")."""
    a_emulator = Emulator(token=TOKEN)
    b_emulator = Emulator(auth="none")
    b = Recorder(b_emulator.app)
    async with serve_asgi(b) as b_url:
        a = Redirector(a_emulator.app, target=b_url, status=status)
        async with serve_asgi(a) as a_url:
            yield Servers(a, b, a_url, b_url, a_emulator, b_emulator)


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("status", [307, 308])
async def test_a_whole_run_redirected_to_another_origin_never_carries_the_token(
    anyio_backend: str, status: int
) -> None:
    headers = {"X-Trace": "abc"}
    async with (
        two_servers(status) as servers,
        OomolConnectClient(
            base_url=f"{servers.a_url}/elsewhere/api", api_token=TOKEN, default_headers=headers
        ) as client,
    ):
        with anyio.fail_after(10):
            result = await client.tasks.run(
                {"manifest": "demo::echo", "inputValues": {"x": 1}}, FAST
            )
    assert result["result"] == {"x": 1}  # create (a POST, method and body kept), polls, logs
    assert headers == {"X-Trace": "abc"}  # the caller's dict is untouched
    assert [s.method for s in servers.a.seen] == [s.method for s in servers.b.seen]
    assert {s.method for s in servers.b.seen} == {"POST", "GET"}
    for seen in servers.a.seen:
        assert seen.headers["authorization"] == TOKEN  # A is the configured origin
    for seen in servers.b.seen:
        assert "authorization" not in seen.headers, seen
        assert "x-trace" not in seen.headers  # nor do the caller's headers
        assert TOKEN not in repr(seen)
    assert servers.b_emulator.stats()["tasks_created"] == 1
    assert servers.a_emulator.stats()["requests"] == {}


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_method_changing_redirects_to_another_origin_never_carry_the_token(
    anyio_backend: str, status: int
) -> None:
    async with (
        two_servers(status) as servers,
        OomolConnectClient(base_url=f"{servers.a_url}/elsewhere/api", api_token=TOKEN) as client,
    ):
        assert (await client.tasks.list())["tasks"] == []
        assert [p["name"] for p in (await client.packages.list())["packages"]]
        with pytest.raises(OomolConnectError) as info:  # the POST arrives at B as a GET
            await client.tasks.create({"manifest": "demo::echo"})
        assert TOKEN not in str(info.value)
    assert servers.b.seen
    assert all("authorization" not in seen.headers for seen in servers.b.seen)
    assert all(seen.method == "GET" for seen in servers.b.seen)
    assert servers.b_emulator.stats()["tasks_created"] == 0


async def test_a_redirect_within_the_origin_keeps_the_token(anyio_backend: str) -> None:
    async with (
        two_servers() as servers,
        OomolConnectClient(base_url=f"{servers.a_url}/moved/api", api_token=TOKEN) as client,
    ):
        result = await client.tasks.run(
            {"manifest": "demo::upper", "inputValues": {"text": "a"}}, FAST
        )
    # A's emulator requires the token: the run succeeding proves the redirect kept it.
    assert result["result"] == {"text": "A"}
    assert servers.a_emulator.stats()["tasks_created"] == 1
    assert all(seen.headers.get("authorization") == TOKEN for seen in servers.a.seen)
    assert servers.b.seen == []


async def test_a_redirect_loop_is_a_named_error_and_is_not_retried(anyio_backend: str) -> None:
    async with (
        two_servers() as servers,
        OomolConnectClient(
            base_url=f"{servers.a_url}/loop/api", api_token=TOKEN, retry_delay=0.001
        ) as client,
    ):
        with anyio.fail_after(10), pytest.raises(ConnectionError) as info:
            await client.tasks.list()
    assert "redirect" in str(info.value).lower()
    assert TOKEN not in str(info.value)
    assert len(servers.a.seen) == 21  # the request and httpx's 20 redirects, once
    assert servers.b.seen == []


async def test_a_redirect_to_another_scheme_is_a_named_error(anyio_backend: str) -> None:
    async with (
        two_servers() as servers,
        OomolConnectClient(
            base_url=f"{servers.a_url}/ftp/api", api_token=TOKEN, retry_delay=0.001
        ) as client,
    ):
        with anyio.fail_after(10), pytest.raises(ConnectionError) as info:
            await client.tasks.create({"manifest": "demo::echo"})
    assert TOKEN not in str(info.value)
    assert len(servers.a.seen) == 1  # a creation is never re-sent
    assert servers.b.seen == []


@pytest.mark.parametrize("status", [307, 308])
async def test_a_redirected_upload_is_resent_without_the_token(
    anyio_backend: str, status: int
) -> None:
    async with (
        two_servers(status) as servers,
        OomolConnectClient(base_url=f"{servers.a_url}/elsewhere/api", api_token=TOKEN) as client,
    ):
        with anyio.fail_after(10):
            result = await client.tasks.run_with_files(
                "demo::count-bytes", {}, [b"hello", ("b.txt", b"abc")], FAST
            )
    assert result["result"]["total"] == 8
    assert servers.b_emulator.stats()["tasks_created"] == 1
    assert all("authorization" not in seen.headers for seen in servers.b.seen)


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize("where", ["moved", "elsewhere"])
async def test_a_callers_http_client_follows_the_same_redirect_rules_as_the_default_path(
    anyio_backend: str, status: int, where: str
) -> None:
    """Same-origin and cross-origin 307/308 over real sockets: the same requests reach each
    server, with the same credentials, whichever way the client sends."""
    import httpx

    seen: dict[str, list[list[tuple[str, str, bool, bool]]]] = {}

    def route(path: str, url: str) -> str:
        return re.sub(r"/v1/tasks/[^/]+", "/v1/tasks/{id}", path.replace(url, ""))

    for path in ("default", "http_client"):
        async with two_servers(status) as servers:
            http_client = httpx.AsyncClient() if path == "http_client" else None
            async with OomolConnectClient(
                base_url=f"{servers.a_url}/{where}/api",
                api_token=TOKEN,
                default_headers={"X-Trace": "abc"},
                http_client=http_client,
            ) as client:
                with anyio.fail_after(10):
                    result = await client.tasks.run(
                        {"manifest": "demo::upper", "inputValues": {"text": "a"}}, FAST
                    )
            if http_client is not None:
                await http_client.aclose()
            assert result["result"] == {"text": "A"}
            seen[path] = [
                sorted({
                    (s.method, route(s.path, url), "authorization" in s.headers,
                     "x-trace" in s.headers)
                    for s in server.seen
                })
                for server, url in ((servers.a, servers.a_url), (servers.b, servers.b_url))
            ]
    assert seen["default"] == seen["http_client"]
    on_a, on_b = seen["default"]
    assert all(has_token and has_trace for _, _, has_token, has_trace in on_a)
    assert all(not has_token and not has_trace for _, _, has_token, has_trace in on_b)
    assert (on_b == []) is (where == "moved")


async def test_a_gzip_bomb_over_a_real_socket_stops_at_the_cap(anyio_backend: str) -> None:
    """Half a megabyte that inflates to half a gigabyte, through the default lanes: the
    answer is refused at the 64 MiB default once decompressed, memory stays bounded."""
    import tracemalloc

    from oomol_connect_anyio import InvalidResponseError

    bomb = gzip_bomb()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        await drain(receive)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-encoding", b"gzip"),
            (b"content-length", str(len(bomb)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": bomb})

    async with serve_asgi(app) as url, OomolConnectClient(base_url=f"{url}/api") as client:
        tracemalloc.start()
        try:
            with anyio.fail_after(30), pytest.raises(InvalidResponseError, match="max_response"):
                await client.tasks.list()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 160 << 20  # the cap and one inflated slice, far from 512 MiB


@pytest.mark.parametrize(
    "after",
    [httpx.ConnectError("refused"), httpx.Response(429, headers={"Retry-After": "0"})],
    ids=["unreachable", "429"],
)
async def test_a_create_redirected_as_a_get_is_looked_up_never_sent_again(
    anyio_backend: str, after: httpx.Response | Exception
) -> None:
    # A 303 says the server took the POST. Whatever the GET it turns into meets, the create
    # reached the server: it is looked up, never sent again (that could make a second task).
    request = {"manifest": "demo::echo", "inputValues": {"x": 1}}
    made = task("t-1", "created", manifest_path="/oomol/packages/demo-1.0.0/blocks/echo",
                inputValues=build_create_payload(request)["inputValues"],
                created_at=time.time() * 1000)
    with mock_api() as router:
        created = router.post("/v1/tasks").respond(
            303, headers={"Location": f"{BASE}/v1/tasks/t-1"}
        )
        router.get("/v1/tasks/t-1").mock(side_effect=[after] * 10)
        router.get("/v1/tasks").respond(200, json={"tasks": [made]})
        async with make_client() as client:
            adopted = await client.tasks.create(request)
    assert adopted["id"] == "t-1"
    assert created.call_count == 1
