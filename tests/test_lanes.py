"""Keep-alive lanes: one-connection pools handed out most-recent-first, up to a limit."""

from __future__ import annotations

import os

import anyio
import httpx
import pytest

from oomol_connect_anyio import OomolConnectClient
from oomol_connect_anyio._lanes import LaneTransport
from oomol_connect_anyio.emulator import Emulator, serve_emulator

pytestmark = pytest.mark.anyio


class FakeLane(httpx.AsyncBaseTransport):
    """Answers with its own number; holds answers while its owner's ``release`` is set."""

    def __init__(self, number: int, owner: Lanes) -> None:
        self.number = number
        self.owner = owner
        self.fail = owner.fail
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        release = self.owner.arrived()
        if release is not None:
            await release.wait()
        if self.fail:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"lane": self.number})

    async def aclose(self) -> None:
        self.closed = True


class Lanes:
    """A ``LaneTransport`` over ``FakeLane`` s, and the lanes it made."""

    def __init__(self, max_lanes: int = 4, keepalive_expiry: float = 60.0) -> None:
        self.made: list[FakeLane] = []
        self.release: anyio.Event | None = None
        self.expected = 0
        self.all_in = anyio.Event()
        self.fail = False
        self.transport = LaneTransport(
            max_lanes=max_lanes, keepalive_expiry=keepalive_expiry, lane_factory=self._make
        )
        self.client = httpx.AsyncClient(transport=self.transport, base_url="http://lanes.test")

    def _make(self) -> FakeLane:
        lane = FakeLane(len(self.made), self)
        self.made.append(lane)
        return lane

    async def lane_of_get(self) -> int:
        response = await self.client.get("/")
        return int(response.json()["lane"])

    def arrived(self) -> anyio.Event | None:
        """A request reached a lane: what it must wait for, if anything."""
        self.expected -= 1
        if self.expected == 0:
            self.all_in.set()
        return self.release

    async def held_gets(self, count: int) -> list[int]:
        """``count`` requests in flight at once; their lanes once all were answered."""
        self.release, self.expected, self.all_in = anyio.Event(), count, anyio.Event()
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


async def test_beyond_max_lanes_requests_share_the_least_busy_lane() -> None:
    lanes = Lanes(max_lanes=2)
    used = await lanes.held_gets(5)
    assert lanes.transport.open_lanes == 2
    assert sorted(used) in ([0, 0, 0, 1, 1], [0, 0, 1, 1, 1])


async def test_a_failed_request_gives_its_lane_back() -> None:
    lanes = Lanes()
    lanes.fail = True
    with pytest.raises(httpx.ConnectError):
        await lanes.lane_of_get()
    lanes.made[0].fail = False
    assert await lanes.lane_of_get() == 0
    assert lanes.transport.open_lanes == 1


async def test_a_cancelled_request_gives_its_lane_back() -> None:
    lanes = Lanes()
    lanes.release = anyio.Event()  # never set: the request hangs until cancelled
    with anyio.move_on_after(0.05):
        await lanes.lane_of_get()
    lanes.release = None
    assert await lanes.lane_of_get() == 0
    assert lanes.transport.open_lanes == 1


async def test_lanes_idle_beyond_keepalive_are_closed_on_the_next_request() -> None:
    lanes = Lanes(keepalive_expiry=0.0)
    assert await lanes.lane_of_get() == 0
    await anyio.sleep(0.01)
    assert await lanes.lane_of_get() == 1
    assert lanes.made[0].closed
    assert not lanes.made[1].closed
    assert lanes.transport.open_lanes == 1


async def test_aclose_closes_every_lane() -> None:
    lanes = Lanes()
    await lanes.held_gets(3)
    await lanes.client.aclose()
    assert [lane.closed for lane in lanes.made] == [True, True, True]
    assert lanes.transport.open_lanes == 0


def test_max_lanes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_lanes"):
        LaneTransport(max_lanes=0)


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


def _transport_for(client: OomolConnectClient) -> httpx.AsyncBaseTransport:
    http = client._transport._client
    return http._transport_for_url(httpx.URL(client.base_url))


async def test_an_owned_client_sends_on_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    async with OomolConnectClient(base_url="http://connect.test/api") as client:
        assert isinstance(_transport_for(client), LaneTransport)


async def test_a_proxy_in_the_environment_keeps_httpx_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    async with OomolConnectClient(base_url="http://connect.test/api") as client:
        assert isinstance(_transport_for(client), httpx.AsyncHTTPTransport)
