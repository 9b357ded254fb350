"""Keep-alive lanes: bare httpcore connections handed out most-recent-first, up to a limit."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import anyio
import httpcore
import httpx
import pytest

from oomol_connect_anyio import OomolConnectClient
from oomol_connect_anyio._lanes import DEFAULT_LIMITS, LanePool
from oomol_connect_anyio._routing import ProxyRouter
from oomol_connect_anyio.emulator import Emulator, serve_emulator

pytestmark = pytest.mark.anyio


class FakeConnection(httpcore.AsyncConnectionInterface):
    """Answers with its own number and origin; holds answers while its owner's ``release`` is
    set. ``fail`` raises httpcore's ``ConnectError`` (and leaves it closed, like a failed
    connect); ``fail_body`` raises ``ReadError`` while the body is read."""

    def __init__(self, number: int, origin: httpcore.Origin, owner: Lanes) -> None:
        self.number = number
        self.origin = origin
        self.owner = owner
        self.fail = owner.fail
        self.fail_body = False
        self.busy = False
        self.closed = False
        self.expired = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        assert not self.busy, "a lane carries one request at a time"
        assert request.url.origin == self.origin
        self.busy = True
        try:
            release = self.owner.arrived()
            if release is not None:
                await release.wait()
        except BaseException:  # cancelled while held
            self.busy = False
            raise
        if self.fail:
            self.busy, self.closed = False, True
            raise httpcore.ConnectError("refused")
        body = json.dumps({"lane": self.number}).encode()
        return httpcore.Response(200, content=self._body(body))

    async def _body(self, body: bytes) -> AsyncIterator[bytes]:
        try:
            if self.fail_body:
                self.closed = True
                raise httpcore.ReadError("connection reset")
            yield body
        finally:
            self.busy = False

    async def aclose(self) -> None:
        if self.busy:  # like httpcore's connection while it connects: nothing to close yet
            return
        for _ in range(self.owner.close_yields):  # a real close lets other tasks run
            await anyio.lowlevel.checkpoint()
        if self.owner.closing is not None:  # a real close lets other tasks run meanwhile
            self.owner.close_started.set()
            await self.owner.closing.wait()
        self.closed = True

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self.origin

    def is_available(self) -> bool:
        return self.is_idle()

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return not self.busy and not self.closed

    def is_closed(self) -> bool:
        return self.closed


class Lanes:
    """A ``LanePool`` over ``FakeConnection`` s, and the connections it made."""

    def __init__(
        self,
        max_lanes: int = 4,
        keepalive_expiry: float = 60.0,
        max_idle: int | None = None,
        close_yields: int = 0,
    ) -> None:
        self.made: list[FakeConnection] = []
        self.release: anyio.Event | None = None
        self.expected = 0
        self.all_in = anyio.Event()
        self.fail = False
        self.closing: anyio.Event | None = None
        self.close_started = anyio.Event()
        self.close_yields = close_yields
        limits = httpx.Limits(
            max_connections=max_lanes,
            max_keepalive_connections=max_idle,
            keepalive_expiry=keepalive_expiry,
        )
        self.transport = LanePool(limits=limits, connection_factory=self._make)
        self.client = httpx.AsyncClient(transport=self.transport, base_url="http://lanes.test")

    def _make(self, origin: httpcore.Origin) -> FakeConnection:
        connection = FakeConnection(len(self.made), origin, self)
        self.made.append(connection)
        return connection

    async def lane_of_get(self, url: str = "/", **kwargs: object) -> int:
        response = await self.client.get(url, **kwargs)  # type: ignore[arg-type]
        return int(response.json()["lane"])

    def arrived(self) -> anyio.Event | None:
        """A request reached a connection: what it must wait for, if anything."""
        self.expected -= 1
        if self.expected == 0:
            self.all_in.set()
        return self.release

    async def held_gets(self, count: int, arriving: int | None = None) -> list[int]:
        """``count`` requests at once, held until ``arriving`` of them (all, by default)
        reached a connection; their lanes once all were answered."""
        self.release, self.all_in = anyio.Event(), anyio.Event()
        self.expected = count if arriving is None else arriving
        lanes: list[int] = []

        async def one() -> None:
            lanes.append(await self.lane_of_get())

        async with anyio.create_task_group() as group:
            for _ in range(count):
                group.start_soon(one)
            with anyio.fail_after(5):
                await self.all_in.wait()
            self.release.set()
        self.release = None
        return lanes


async def test_sequential_requests_reuse_one_lane() -> None:
    lanes = Lanes()
    assert [await lanes.lane_of_get() for _ in range(5)] == [0] * 5
    assert lanes.transport.open_lanes == 1


async def test_concurrent_requests_open_one_lane_each_then_reuse_the_latest() -> None:
    lanes = Lanes(max_lanes=4)
    assert sorted(await lanes.held_gets(3)) == [0, 1, 2]
    assert lanes.transport.open_lanes == 3
    # All idle again: the most recently released lane is taken first, no new lane opens.
    assert await lanes.lane_of_get() in {0, 1, 2}
    assert lanes.transport.open_lanes == 3


async def test_beyond_max_lanes_requests_wait_for_a_free_lane() -> None:
    lanes = Lanes(max_lanes=2)
    # Only two requests can reach a connection; the other three wait, then reuse the two.
    used = await lanes.held_gets(5, arriving=2)
    assert len(lanes.made) == 2
    assert sorted(set(used)) == [0, 1]
    assert len(used) == 5


async def test_waiting_for_a_lane_longer_than_the_pool_timeout_is_a_pool_timeout() -> None:
    lanes = Lanes(max_lanes=1)
    lanes.release, lanes.expected = anyio.Event(), 1
    async with anyio.create_task_group() as group:
        group.start_soon(lanes.lane_of_get)
        await lanes.all_in.wait()
        with pytest.raises(httpx.PoolTimeout):
            await lanes.lane_of_get(timeout=httpx.Timeout(5, pool=0.01))
        lanes.release.set()
    assert len(lanes.made) == 1
    assert await lanes.lane_of_get() == 0


async def test_each_origin_has_its_own_lanes() -> None:
    lanes = Lanes()
    assert await lanes.lane_of_get("http://a.test/") == 0
    assert await lanes.lane_of_get("https://a.test/") == 1
    assert await lanes.lane_of_get("http://a.test:8080/") == 2
    assert await lanes.lane_of_get("http://a.test/x") == 0
    assert [c.origin.port for c in lanes.made] == [80, 443, 8080]


async def test_a_failed_request_closes_its_lane_and_frees_its_place() -> None:
    lanes = Lanes(max_lanes=1)
    lanes.fail = True
    for _ in range(3):  # each failure frees the only place; none is left hanging
        with pytest.raises(httpx.ConnectError, match="refused"):
            await lanes.lane_of_get()
    lanes.fail = False
    assert await lanes.lane_of_get() == 3
    assert lanes.transport.open_lanes == 1


async def test_an_error_while_reading_the_body_is_an_httpx_error() -> None:
    lanes = Lanes(max_lanes=1)
    assert await lanes.lane_of_get() == 0
    lanes.made[0].fail_body = True
    with pytest.raises(httpx.ReadError, match="connection reset"):
        await lanes.lane_of_get()
    assert await lanes.lane_of_get() == 1  # the broken connection was not reused
    assert lanes.transport.open_lanes == 1


async def test_a_cancelled_request_gives_its_lane_back() -> None:
    lanes = Lanes(max_lanes=1)
    lanes.release = anyio.Event()  # never set: the request hangs until cancelled
    with anyio.move_on_after(0.05):
        await lanes.lane_of_get()
    lanes.release = None
    assert await lanes.lane_of_get() == 0
    assert lanes.transport.open_lanes == 1


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    lanes = Lanes()
    assert await lanes.lane_of_get() == 0
    lanes.made[0].expired = True  # what httpcore reports once the idle socket is readable
    assert await lanes.lane_of_get() == 1
    assert lanes.made[0].closed
    assert lanes.transport.open_lanes == 1


async def test_lanes_idle_beyond_keepalive_are_closed_on_the_next_request() -> None:
    lanes = Lanes(keepalive_expiry=0.0)
    assert await lanes.lane_of_get() == 0
    await anyio.sleep(0.01)
    assert await lanes.lane_of_get() == 1
    assert lanes.made[0].closed
    assert not lanes.made[1].closed
    assert lanes.transport.open_lanes == 1


async def test_closing_stale_lanes_lets_other_origins_come_and_go() -> None:
    lanes = Lanes(keepalive_expiry=0.0)
    assert await lanes.lane_of_get("http://a.test/") == 0
    await anyio.sleep(0.01)
    closing = lanes.closing = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(lanes.lane_of_get, "http://a.test/")  # closing stale lane 0: held
        with anyio.fail_after(5):
            await lanes.close_started.wait()
        lanes.closing = None
        assert lanes.transport.open_lanes == 1  # lane 0 being closed no longer counts
        with anyio.fail_after(5):
            assert await lanes.lane_of_get("http://b.test/") == 2  # a new origin's lane
        closing.set()
    assert lanes.made[0].closed
    assert lanes.transport.open_lanes == 2


async def test_open_connections_never_exceed_max_lanes_across_origins() -> None:
    lanes = Lanes(max_lanes=2)
    for number, host in enumerate(["a", "b", "c"]):
        assert await lanes.lane_of_get(f"http://{host}.test/") == number
    assert lanes.transport.open_lanes == 2
    assert [c.closed for c in lanes.made] == [True, False, False]  # the oldest idle lane


async def test_a_connection_still_opening_when_the_transport_closes_is_closed_after_it() -> None:
    lanes = Lanes()
    lanes.release, lanes.expected = anyio.Event(), 1
    async with anyio.create_task_group() as group:
        group.start_soon(lanes.lane_of_get)
        await lanes.all_in.wait()
        await lanes.transport.aclose()
        assert not lanes.made[0].closed  # httpcore cannot close a connection mid-connect
        lanes.release.set()
    assert lanes.made[0].closed  # ... so the lane closes it once its request is over
    with pytest.raises(RuntimeError, match="closed"):
        await lanes.lane_of_get()
    assert len(lanes.made) == 1


async def test_aclose_closes_every_lane() -> None:
    lanes = Lanes()
    await lanes.held_gets(3)
    await lanes.client.aclose()
    assert [lane.closed for lane in lanes.made] == [True, True, True]
    assert lanes.transport.open_lanes == 0


async def test_an_unsupported_scheme_is_refused_before_any_connection() -> None:
    lanes = Lanes()
    with pytest.raises(httpx.UnsupportedProtocol, match="ftp"):
        await lanes.transport.handle_async_request(httpx.Request("GET", "ftp://a.test/"))
    assert lanes.made == []


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        (httpx.Limits(max_connections=0), "max_connections"),
        (httpx.Limits(max_keepalive_connections=-1), "max_keepalive_connections"),
        (httpx.Limits(keepalive_expiry=float("nan")), "keepalive_expiry"),
        (httpx.Limits(keepalive_expiry=-1), "keepalive_expiry"),
    ],
)
def test_limits_the_pool_cannot_honour_are_refused_by_the_client(
    limits: httpx.Limits, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        OomolConnectClient(base_url="http://connect.test/api", limits=limits)


def test_limits_must_be_httpx_limits() -> None:
    with pytest.raises(TypeError, match=r"httpx\.Limits"):
        OomolConnectClient(base_url="http://connect.test/api", limits=10)  # type: ignore[arg-type]


async def test_at_most_max_keepalive_connections_idle_lanes_are_kept() -> None:
    lanes = Lanes(max_lanes=5, max_idle=2)
    await lanes.held_gets(5)
    assert lanes.transport.open_lanes == 2
    assert sum(not c.closed for c in lanes.made) == 2
    assert await lanes.lane_of_get() in {c.number for c in lanes.made if not c.closed}


async def test_no_limit_on_connections_when_max_connections_is_none() -> None:
    lanes = Lanes(max_lanes=None)  # type: ignore[arg-type]
    assert sorted(await lanes.held_gets(150)) == list(range(150))


@pytest.mark.parametrize("close_yields", [1, 5])
async def test_bursts_around_the_keepalive_expiry_with_closes_that_yield(
    close_yields: int,
) -> None:
    """The reported race: a burst beyond the limit, the lanes expire, then another burst,
    while closing a connection lets other requests run."""
    lanes = Lanes(max_lanes=100, keepalive_expiry=0.0, close_yields=close_yields)
    for burst in range(3):
        used = await lanes.held_gets(120, arriving=100)
        assert len(used) == 120, burst
        assert lanes.transport.open_lanes <= 100
        await anyio.sleep(0.001)  # every idle lane is now past its (zero) keep-alive
    assert lanes.transport.open_lanes <= 100
    open_connections = [c for c in lanes.made if not c.closed]
    assert len(open_connections) == lanes.transport.open_lanes


async def test_mixed_origins_and_expiring_lanes_never_exceed_the_limit() -> None:
    lanes = Lanes(max_lanes=8, keepalive_expiry=0.0, close_yields=2)
    peak = 0

    async def one(host: str) -> None:
        nonlocal peak
        await lanes.lane_of_get(f"http://{host}.test/")
        peak = max(peak, lanes.transport.open_lanes)

    for _ in range(5):
        async with anyio.create_task_group() as group:
            for number in range(40):
                group.start_soon(one, "abc"[number % 3])
        await anyio.sleep(0.001)
    assert peak <= 8
    assert len(lanes.made) > 8  # lanes did expire and were replaced


async def test_a_client_opens_one_connection_when_sequential_and_at_most_its_concurrency(
) -> None:
    emulator = Emulator()
    async with (
        serve_emulator(emulator, host="127.0.0.1", port=0) as url,
        OomolConnectClient(base_url=url) as client,
    ):
        task = await client.tasks.create({"manifest": "demo::echo", "inputValues": {}})
        for _ in range(10):
            await client.tasks.get(task["id"])
        assert emulator.stats()["connections"] == 1
        emulator.reset_stats()
        requests = [{"manifest": "demo::sleep", "inputValues": {"seconds": 0.05}}] * 24
        results = await client.tasks.run_many(
            requests, max_concurrency=6, polling_options={"interval_ms": 10}  # type: ignore[arg-type]
        )
        assert len(results) == 24
        connections = emulator.stats()["connections"]
        assert 1 < connections <= 6


def _clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


async def test_an_owned_client_sends_on_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    async with OomolConnectClient(base_url="http://connect.test/api") as client:
        assert isinstance(client._transport._sender._transport, LanePool)


async def test_no_proxy_alone_keeps_the_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    async with OomolConnectClient(base_url="http://connect.test/api") as client:
        assert isinstance(client._transport._sender._transport, LanePool)


async def test_the_pools_limits_are_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=1, keepalive_expiry=2)
    async with OomolConnectClient(base_url="http://connect.test/api", limits=limits) as client:
        pool = client._transport._sender._transport
        assert isinstance(pool, LanePool)
        assert (pool._max_open, pool._max_idle, pool._keepalive_expiry) == (3, 1, 2)


async def test_a_proxy_in_the_environment_routes_only_the_urls_it_applies_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "bypassed.test")
    async with OomolConnectClient(base_url="http://connect.test/api") as client:
        router = client._transport._sender._transport
        assert isinstance(router, ProxyRouter)
        proxied = router.route(httpx.URL("http://connect.test/api"))
        assert isinstance(proxied, httpx.AsyncHTTPTransport)
        assert router.route(httpx.URL("https://connect.test/api")) is not router._direct
        assert isinstance(router.route(httpx.URL("http://bypassed.test/")), LanePool)


async def test_a_scheme_without_a_proxy_goes_straight(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    async with OomolConnectClient(base_url="http://connect.test/api") as client:
        router = client._transport._sender._transport
        assert isinstance(router, ProxyRouter)
        assert isinstance(router.route(httpx.URL("http://connect.test/")), LanePool)
        proxied = router.route(httpx.URL("https://connect.test/"))
        assert isinstance(proxied, httpx.AsyncHTTPTransport)


def test_an_unusable_proxy_is_named_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "gopher://user:pa55word@proxy.invalid:1")
    with pytest.raises(ValueError, match="http proxy") as info:
        OomolConnectClient(base_url="http://connect.test/api")
    assert "pa55word" not in str(info.value)


def test_the_default_limits() -> None:
    assert DEFAULT_LIMITS.max_connections == 100
    assert DEFAULT_LIMITS.max_keepalive_connections == 100
