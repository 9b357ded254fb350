"""The sender that drives a transport without httpx.AsyncClient: redirects, token, timeouts.

Each case is checked against what httpx.AsyncClient itself does on the same exchange, so
the two ways this client sends (its own transport, or a caller's http_client) agree.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from oomol_connect_anyio._senders import ClientSender, Sender, TransportSender, origin_of

pytestmark = pytest.mark.anyio

BASE = httpx.URL("http://connect.test/api")
TOKEN = "sender-T0KEN-9f2"
Route = Callable[[httpx.Request], httpx.Response]


class Recorder(httpx.AsyncBaseTransport):
    """Answers by ``route`` and keeps every request it got, with its body read."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.seen: list[httpx.Request] = []
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.seen.append(request)
        return self.route(request)

    async def aclose(self) -> None:
        self.closed = True


def redirect(status: int, location: str) -> Route:
    """Redirect every request to /api/... at ``location``; answer everything else."""

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/"):
            return httpx.Response(status, headers={"Location": location})
        return httpx.Response(200, json={"method": request.method})

    return route


def senders(route: Route) -> list[tuple[Sender, Recorder]]:
    """Ours on a transport, and httpx.AsyncClient through ClientSender, on the same route."""
    ours, theirs = Recorder(route), Recorder(route)
    client = httpx.AsyncClient(transport=theirs, follow_redirects=True)
    return [
        (TransportSender(ours, TOKEN, origin_of(BASE)), ours),
        (ClientSender(client, TOKEN, origin_of(BASE), owned=True), theirs),
    ]


async def send(sender: Sender, method: str = "GET", content: bytes | None = None) -> httpx.Response:
    headers = httpx.Headers({"Accept": "application/json"})
    if content is not None:
        headers["Content-Type"] = "application/json"
    return await sender.send(
        method, "http://connect.test/api/v1/tasks", headers, content, httpx.Timeout(5)
    )


def summary(seen: list[httpx.Request]) -> list[tuple[str, str, bool, bytes, str | None]]:
    return [
        (r.method, str(r.url), "authorization" in r.headers, r.content, r.headers.get("host"))
        for r in seen
    ]


@pytest.mark.parametrize(
    ("status", "method", "after"),
    [
        (301, "POST", "GET"), (302, "POST", "GET"), (303, "POST", "GET"), (303, "PUT", "GET"),
        (307, "POST", "POST"), (308, "POST", "POST"), (301, "PUT", "PUT"), (302, "HEAD", "HEAD"),
    ],
)
async def test_redirects_change_the_method_and_body_as_httpx_does(
    status: int, method: str, after: str
) -> None:
    found = []
    for sender, recorder in senders(redirect(status, "http://other.test/moved")):
        response = await send(sender, method, b'{"a":1}')
        assert response.status_code == 200
        found.append(summary(recorder.seen))
        moved = recorder.seen[-1]
        assert moved.method == after
        if after == "GET":
            assert moved.content == b""
            assert "content-length" not in moved.headers
        elif after != "HEAD":
            assert moved.content == b'{"a":1}'
            assert moved.headers["content-type"] == "application/json"
    ours, httpx_client = found
    assert ours == httpx_client


async def test_a_body_dropped_by_a_redirect_takes_its_content_type_along() -> None:
    ours = Recorder(redirect(303, "/moved"))
    await send(TransportSender(ours, TOKEN, origin_of(BASE)), "POST", b"{}")
    assert ours.seen[0].headers["content-type"] == "application/json"
    assert "content-type" not in ours.seen[1].headers  # httpx itself keeps it


@pytest.mark.parametrize(
    ("location", "token_after"),
    [
        ("http://other.test/moved", False),
        ("http://connect.test:8080/moved", False),
        ("/moved", True),
        ("http://connect.test:80/moved", True),  # the default port is the same origin
    ],
)
async def test_the_token_goes_to_the_configured_origin_only(
    location: str, token_after: bool
) -> None:
    for sender, recorder in senders(redirect(307, location)):
        await send(sender)
        first, moved = recorder.seen
        assert first.headers["authorization"] == TOKEN
        assert ("authorization" in moved.headers) is token_after
        assert moved.headers["host"] == moved.url.netloc.decode()


async def test_the_token_does_not_follow_an_upgrade_to_https() -> None:
    # Stricter than httpx, which keeps it on an http -> https redirect to the same host:
    # the token goes to the configured origin (scheme, host, port) and nowhere else.
    ours = Recorder(redirect(307, "https://connect.test/moved"))
    await send(TransportSender(ours, TOKEN, origin_of(BASE)))
    assert "authorization" not in ours.seen[1].headers


async def test_more_than_twenty_redirects_is_too_many() -> None:
    for sender, recorder in senders(redirect(302, "/api/again")):
        with pytest.raises(httpx.TooManyRedirects):
            await send(sender)
        assert len(recorder.seen) == 21


@pytest.mark.parametrize("location", ["ftp://files.test/x", "mailto:someone@test"])
async def test_a_redirect_to_another_scheme_is_refused_before_it_is_sent(location: str) -> None:
    ours = Recorder(redirect(302, location))
    with pytest.raises(httpx.UnsupportedProtocol, match="scheme"):
        await send(TransportSender(ours, TOKEN, origin_of(BASE)))
    assert len(ours.seen) == 1


async def test_the_response_comes_back_read_and_closed_with_its_request() -> None:
    ours = Recorder(lambda request: httpx.Response(200, json={"ok": True}))
    sender = TransportSender(ours, None, origin_of(BASE))
    response = await send(sender)
    assert response.is_closed
    assert response.json() == {"ok": True}
    assert response.request is ours.seen[0]
    assert "authorization" not in ours.seen[0].headers  # no token, no header
    assert ours.seen[0].extensions["timeout"] == httpx.Timeout(5).as_dict()
    await sender.aclose()
    assert ours.closed


async def test_only_an_owned_client_is_closed() -> None:
    client = httpx.AsyncClient(transport=Recorder(redirect(200, "/")))
    await ClientSender(client, TOKEN, origin_of(BASE), owned=False).aclose()
    assert not client.is_closed
    await ClientSender(client, TOKEN, origin_of(BASE), owned=True).aclose()
    assert client.is_closed


async def test_a_callers_cookie_does_not_follow_a_redirect_to_another_origin() -> None:
    ours = Recorder(redirect(302, "http://other.test/moved"))
    headers = httpx.Headers({"Cookie": "sid=1"})
    await TransportSender(ours, TOKEN, origin_of(BASE)).send(
        "GET", "http://connect.test/api/v1/tasks", headers, None, httpx.Timeout(5)
    )
    first, moved = ours.seen
    assert first.headers["cookie"] == "sid=1"
    assert "cookie" not in moved.headers
    assert headers["cookie"] == "sid=1"  # the caller's headers are untouched
