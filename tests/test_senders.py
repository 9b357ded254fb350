"""``RequestSender``: redirects, token and header scoping, size cap, timeouts.

Every case runs on both ways a request can leave: straight onto a transport (the default
path: lanes, a caller's ``transport=``, the proxy router) and through a caller's
``http_client`` (wrapped in ``ClientTransport``). Both must send exactly the same requests;
the redirect rules are also checked against what ``httpx.AsyncClient`` itself does.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

import httpx
import pytest

from oomol_connect_anyio import InvalidResponseError
from oomol_connect_anyio._senders import ClientTransport, RequestSender, origin_of

pytestmark = pytest.mark.anyio

BASE = httpx.URL("http://connect.test/api")
TOKEN = "sender-T0KEN-9f2"
Route = Callable[[httpx.Request], httpx.Response]
FOREIGN = httpx.Headers({"Accept": "application/json"})
OWN = httpx.Headers({"Accept": "application/json", "X-Api-Key": "k3y", "Cookie": "sid=1"})


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


def sender_over(
    transport: httpx.AsyncBaseTransport, token: str | None = TOKEN, max_bytes: int = 1 << 20
) -> RequestSender:
    return RequestSender(
        transport, origin=origin_of(BASE), token=token, origin_headers=OWN,
        foreign_headers=FOREIGN, max_response_bytes=max_bytes,
    )


def both_paths(route: Route) -> list[tuple[RequestSender, Recorder]]:
    """The default path and a caller's http_client, each over its own recorder."""
    direct, theirs = Recorder(route), Recorder(route)
    client = httpx.AsyncClient(transport=theirs)
    wrapped = ClientTransport(client, origin_of(BASE), client_auth=False)
    return [(sender_over(direct), direct), (sender_over(wrapped), theirs)]


async def send(sender: RequestSender, method: str = "GET", content: bytes | None = None) -> int:
    headers = None if content is None else httpx.Headers({"Content-Type": "application/json"})
    reply = await sender.send(
        method, "http://connect.test/api/v1/tasks", headers, content, httpx.Timeout(5)
    )
    return reply.status


def summary(seen: list[httpx.Request]) -> list[tuple[object, ...]]:
    return [
        (r.method, str(r.url), r.content, sorted(r.headers.multi_items())) for r in seen
    ]


def assert_same_on_both_paths(found: list[list[tuple[object, ...]]]) -> None:
    default, via_client = found
    assert default == via_client


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
    for sender, recorder in both_paths(redirect(status, "http://other.test/moved")):
        assert await send(sender, method, b'{"a":1}') == 200
        found.append(summary(recorder.seen))
        moved = recorder.seen[-1]
        assert moved.method == after
        if after == "GET":
            assert moved.content == b""
            assert "content-length" not in moved.headers
        elif after != "HEAD":
            assert moved.content == b'{"a":1}'
            assert moved.headers["content-type"] == "application/json"
    assert_same_on_both_paths(found)
    native = Recorder(redirect(status, "http://other.test/moved"))
    async with httpx.AsyncClient(transport=native, follow_redirects=True) as client:
        await client.request(method, "http://connect.test/api/v1/tasks", content=b'{"a":1}')
    assert [(r.method, str(r.url), r.content) for r in native.seen] == [
        (r.method, str(r.url), r.content) for r in both_paths_last(found)
    ]


def both_paths_last(found: list[list[tuple[object, ...]]]) -> list[httpx.Request]:
    return [_Seen(*entry[:3]) for entry in found[0]]  # type: ignore[list-item]


class _Seen:
    def __init__(self, method: object, url: object, content: object) -> None:
        self.method, self.url, self.content = method, url, content


async def test_a_body_dropped_by_a_redirect_takes_its_content_type_along() -> None:
    for sender, recorder in both_paths(redirect(303, "/moved")):
        await send(sender, "POST", b"{}")
        assert recorder.seen[0].headers["content-type"] == "application/json"
        assert "content-type" not in recorder.seen[1].headers  # httpx itself keeps it


@pytest.mark.parametrize(
    ("location", "same_origin"),
    [
        ("http://other.test/moved", False),
        ("http://connect.test:8080/moved", False),
        ("https://connect.test/moved", False),  # stricter than httpx: the scheme counts
        ("/moved", True),
        ("http://connect.test:80/moved", True),  # the default port is the same origin
    ],
)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_token_and_caller_headers_go_to_the_configured_origin_only(
    location: str, same_origin: bool, status: int
) -> None:
    found = []
    for sender, recorder in both_paths(redirect(status, location)):
        await send(sender, "POST", b"{}")
        first, moved = recorder.seen
        assert first.headers["authorization"] == TOKEN
        assert first.headers["x-api-key"] == "k3y"
        assert first.headers["cookie"] == "sid=1"
        for name in ("authorization", "x-api-key", "cookie"):
            assert (name in moved.headers) is same_origin, name
        assert moved.headers["host"] == moved.url.netloc.decode()
        found.append(summary(recorder.seen))
    assert_same_on_both_paths(found)


async def test_more_than_twenty_redirects_is_too_many() -> None:
    for sender, recorder in both_paths(redirect(302, "/api/again")):
        with pytest.raises(httpx.TooManyRedirects):
            await send(sender)
        assert len(recorder.seen) == 21


@pytest.mark.parametrize("location", ["ftp://files.test/x", "mailto:someone@test"])
async def test_a_redirect_to_another_scheme_is_refused_before_it_is_sent(location: str) -> None:
    for sender, recorder in both_paths(redirect(302, location)):
        with pytest.raises(httpx.UnsupportedProtocol, match="scheme"):
            await send(sender)
        assert len(recorder.seen) == 1


async def test_the_reply_comes_back_read_with_the_timeout_sent_along() -> None:
    ours = Recorder(lambda request: httpx.Response(200, json={"ok": True}))
    sender = sender_over(ours, token=None)
    reply = await sender.send(
        "GET", "http://connect.test/api/v1/tasks", None, None, httpx.Timeout(5)
    )
    assert reply.content == b'{"ok":true}'
    assert "authorization" not in ours.seen[0].headers  # no token, no header
    assert ours.seen[0].extensions["timeout"] == httpx.Timeout(5).as_dict()
    await sender.aclose()
    assert ours.closed


async def test_a_callers_client_is_left_open() -> None:
    client = httpx.AsyncClient(transport=Recorder(redirect(200, "/")))
    await sender_over(ClientTransport(client, origin_of(BASE), client_auth=False)).aclose()
    assert not client.is_closed
    await client.aclose()


@pytest.mark.parametrize("token", [TOKEN, None])
async def test_a_callers_client_auth_applies_only_without_a_token_and_only_at_home(
    token: str | None,
) -> None:
    seen = Recorder(redirect(307, "http://other.test/moved"))
    client = httpx.AsyncClient(transport=seen, auth=("user", "pw"))
    wrapped = ClientTransport(client, origin_of(BASE), client_auth=token is None)
    await send(sender_over(wrapped, token=token))
    first, moved = seen.seen
    if token is None:
        assert first.headers["authorization"].startswith("Basic ")
    else:
        assert first.headers["authorization"] == TOKEN
    assert "authorization" not in moved.headers


async def test_an_answer_larger_than_the_cap_is_refused_once_decompressed() -> None:
    bomb = gzip.compress(b"\0" * (4 << 20))  # 4 MiB of zeros in a few KiB

    def route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(bomb)
        )

    for sender, _ in both_paths(route):
        sender._max_bytes = 1 << 20
        with pytest.raises(InvalidResponseError, match="max_response_bytes"):
            await send(sender)
    assert len(bomb) < 1 << 20


async def test_an_answer_within_the_cap_is_returned_whole() -> None:
    body = b"[" + b"1," * 1000 + b"1]"
    ours = Recorder(lambda request: httpx.Response(200, content=body))
    reply = await sender_over(ours, max_bytes=len(body)).send(
        "GET", "http://connect.test/api/v1/tasks", None, None, httpx.Timeout(5)
    )
    assert reply.content == body


class _CutAfterFirstChunk(httpx.AsyncBaseTransport):
    """Takes one chunk of a create's body, then the connection breaks (a cancellation
    mid-write leaves the body's iterator the same way); anything else is refused."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            raise httpx.ConnectError("refused")
        chunks = request.stream.__aiter__()  # type: ignore[union-attr]
        await chunks.__anext__()
        raise httpx.WriteError("connection cut mid-body")


async def test_a_send_cut_mid_body_leaves_nothing_to_the_garbage_collector() -> None:
    """The body's iterator is a plain object, not an async generator that trio's finalizer
    would report (the suite turns that ResourceWarning into an error)."""
    import gc

    from oomol_connect_anyio import ConnectionError, OomolConnectClient

    async with OomolConnectClient(
        base_url=str(BASE), transport=_CutAfterFirstChunk(), max_retries=0
    ) as client:
        with pytest.raises(ConnectionError):
            await client.tasks.create({"manifest": "demo::echo", "inputValues": {"a": 1}})
    gc.collect()
