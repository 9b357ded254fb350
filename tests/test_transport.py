"""The HTTP layer: URLs, path encoding, retries, Retry-After, timeouts and retry logging."""

from __future__ import annotations

import email.utils
import logging
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx
from helpers import BASE, TOKEN, install_task, make_client, mock_api, task

from oomol_connect_anyio import (
    ApiError,
    ConnectionError,
    HookError,
    OomolConnectClient,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from oomol_connect_anyio import _transport as transport_module
from oomol_connect_anyio._transport import RetryPolicy, parse_retry_after

TASK_BODY = {"task": task(), "success": True}
Call = Callable[[OomolConnectClient], Awaitable[Any]]

# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("base_url", "host", "prefix"),
    [
        ("http://h.test/api", "h.test", b"/api"),
        ("http://h.test/api/", "h.test", b"/api"),
        ("http://h.test/api//", "h.test", b"/api"),
        ("http://h.test", "h.test", b""),
        ("http://h.test/", "h.test", b""),
        ("https://h.test:8443/x/y/", "h.test", b"/x/y"),
    ],
)
@pytest.mark.anyio
async def test_base_url_is_joined_with_exactly_one_slash(
    base_url: str, host: str, prefix: bytes
) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.route().respond(200, json={"tasks": [], "packages": []})
        async with make_client(base_url=base_url) as client:
            await client.tasks.list()
            await client.packages.list()
        first, second = (call.request.url for call in router.calls)
    assert first.host == host
    assert first.raw_path == prefix + b"/v1/tasks"
    assert second.raw_path == prefix + b"/packages"


HOSTILE_IDS = [
    ("../x", b"..%2Fx"),
    ("a b", b"a%20b"),
    ("%", b"%25"),
    ("%2F", b"%252F"),
    ("a/b", b"a%2Fb"),
    ("..", b"%2E%2E"),
    (".", b"%2E"),
    ("?q", b"%3Fq"),
    ("#f", b"%23f"),
    ("ü", b"%C3%BC"),
]
ID_METHODS: list[tuple[str, Callable[[OomolConnectClient, str], Awaitable[Any]], bytes, bytes]] = [
    ("tasks.get", lambda c, i: c.tasks.get(i), b"/api/v1/tasks/", b""),
    ("tasks.stop", lambda c, i: c.tasks.stop(i), b"/api/v1/tasks/", b"/stop"),
    ("tasks.get_logs", lambda c, i: c.tasks.get_logs(i), b"/api/v1/tasks/", b"/logs"),
    (
        "packages.get_install_task",
        lambda c, i: c.packages.get_install_task(i),
        b"/api/packages/install/",
        b"",
    ),
]


@pytest.mark.parametrize(
    ("method", "prefix", "suffix"),
    [pytest.param(call, prefix, suffix, id=name) for name, call, prefix, suffix in ID_METHODS],
)
@pytest.mark.anyio
async def test_hostile_ids_stay_on_their_route(
    method: Callable[[OomolConnectClient, str], Awaitable[Any]], prefix: bytes, suffix: bytes
) -> None:
    with respx.mock(assert_all_called=False) as router:
        route = router.route().respond(200, json={"task": install_task(), "logs": []})
        async with make_client() as client:
            for raw_id, _ in HOSTILE_IDS:
                await method(client, raw_id)
    assert route.call_count == len(HOSTILE_IDS)
    for call, (raw_id, encoded) in zip(route.calls, HOSTILE_IDS, strict=True):
        url = call.request.url
        assert url.host == "connect.test", raw_id
        assert url.raw_path == prefix + encoded + suffix, raw_id
        assert url.query == b"", raw_id
        assert url.fragment == "", raw_id


@pytest.mark.parametrize(
    "method",
    [pytest.param(call, id=name) for name, call, _, _ in ID_METHODS],
)
@pytest.mark.parametrize("bad_id", ["", None, 7])
@pytest.mark.anyio
async def test_empty_or_non_string_id_is_rejected_before_any_request(
    method: Callable[[OomolConnectClient, Any], Awaitable[Any]], bad_id: Any
) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.route().respond(200, json={"task": task(), "logs": []})
        async with make_client() as client:
            with pytest.raises(ValueError, match="id"):
                await method(client, bad_id)
        assert len(router.calls) == 0


# --------------------------------------------------------------------------- retries

GETS: list[tuple[str, str, Call]] = [
    ("GET", "/v1/tasks", lambda c: c.tasks.list()),
    ("GET", "/v1/tasks/t-1", lambda c: c.tasks.get("t-1")),
    ("GET", "/v1/tasks/t-1/logs", lambda c: c.tasks.get_logs("t-1")),
    ("GET", "/v1/flows", lambda c: c.flows.list()),
    ("GET", "/v1/blocks", lambda c: c.blocks.list()),
    ("GET", "/packages", lambda c: c.packages.list()),
    ("GET", "/packages/install", lambda c: c.packages.list_install_tasks()),
    ("GET", "/packages/install/i-1", lambda c: c.packages.get_install_task("i-1")),
    ("POST", "/v1/tasks/t-1/stop", lambda c: c.tasks.stop("t-1")),
]
IDEMPOTENT = [pytest.param(m, p, call, id=f"{m} {p}") for m, p, call in GETS]
GOOD_BODY = {
    "task": task(), "tasks": [], "logs": [], "flows": [], "blocks": [], "packages": [],
}


@pytest.mark.parametrize(("method", "path", "call"), IDEMPOTENT)
@pytest.mark.anyio
async def test_idempotent_requests_retry_transport_errors_then_surface(
    method: str, path: str, call: Call
) -> None:
    for failure in (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        with mock_api() as router:
            route = router.request(method, path).mock(side_effect=failure)
            async with make_client(max_retries=2) as client:
                with pytest.raises(ConnectionError) as info:
                    await call(client)
        assert route.call_count == 3, failure
        assert not isinstance(info.value, RequestTimeoutError)
        assert info.value.may_have_reached_server is False
        assert info.value.request_method == method
        assert info.value.url == BASE + path
        assert isinstance(info.value.__cause__, failure)


@pytest.mark.parametrize(("method", "path", "call"), IDEMPOTENT)
@pytest.mark.anyio
async def test_idempotent_requests_recover_after_transient_failures(
    method: str, path: str, call: Call
) -> None:
    with mock_api() as router:
        route = router.request(method, path).mock(side_effect=[
            httpx.ConnectError,
            httpx.Response(503),
            httpx.ReadError,
            httpx.Response(200, json=GOOD_BODY),
        ])
        async with make_client(max_retries=3) as client:
            await call(client)
    assert route.call_count == 4


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, RateLimitError), (502, ServerError), (503, ServerError), (504, ServerError)],
)
@pytest.mark.anyio
async def test_retryable_statuses_are_retried_exactly_max_retries_times(
    status: int, error: type[Exception]
) -> None:
    for max_retries in (0, 1, 4):
        with mock_api() as router:
            route = router.get("/v1/tasks").respond(status, json={"message": f"busy {status}"})
            async with make_client(max_retries=max_retries) as client:
                with pytest.raises(error) as info:
                    await client.tasks.list()
        assert route.call_count == max_retries + 1
        assert info.value.status == status  # type: ignore[attr-defined]
        assert info.value.detail == f"busy {status}"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_other_error_statuses_are_not_retried() -> None:
    for status in (400, 401, 403, 404, 409, 422, 500, 501):
        with mock_api() as router:
            route = router.get("/v1/tasks/x").respond(status, json={"message": "no"})
            async with make_client(max_retries=3) as client:
                with pytest.raises(ApiError) as info:
                    await client.tasks.get("x")
        assert route.call_count == 1, status
        assert info.value.status == status


@pytest.mark.anyio
async def test_max_retries_zero_means_one_attempt_on_connect_errors() -> None:
    with mock_api() as router:
        route = router.get("/v1/flows").mock(side_effect=httpx.ConnectError)
        async with make_client(max_retries=0) as client:
            with pytest.raises(ConnectionError):
                await client.flows.list()
    assert route.call_count == 1


# --------------------------------------------------------------------------- non-idempotent POSTs

CREATES: list[tuple[str, Call, Any]] = [
    ("/v1/tasks", lambda c: c.tasks.create({"manifest": "p::b"}), TASK_BODY),
    ("/v1/tasks", lambda c: c.tasks.create_with_files("p::b", {}, b"x"), TASK_BODY),
    (
        "/packages/install",
        lambda c: c.packages.install("pkg", "1.0.0"),
        {"success": True, "task": install_task()},
    ),
]
NON_IDEMPOTENT = [
    pytest.param(path, call, body, id=name)
    for name, (path, call, body) in zip(
        ["create", "create_with_files", "install"], CREATES, strict=True
    )
]


@pytest.mark.parametrize(("path", "call", "body"), NON_IDEMPOTENT)
@pytest.mark.anyio
async def test_non_idempotent_posts_retry_errors_that_prove_nothing_was_sent(
    path: str, call: Call, body: Any
) -> None:
    with mock_api() as router:
        route = router.post(path).mock(
            side_effect=[httpx.ConnectError, httpx.ConnectTimeout, httpx.Response(200, json=body)]
        )
        async with make_client(max_retries=2) as client:
            await call(client)
    assert route.call_count == 3
    first, last = route.calls[0].request, route.calls[-1].request
    assert last.content == first.content
    assert last.content


@pytest.mark.parametrize(("path", "call", "body"), NON_IDEMPOTENT)
@pytest.mark.anyio
async def test_non_idempotent_posts_give_up_after_max_retries_connect_errors(
    path: str, call: Call, body: Any
) -> None:
    with mock_api() as router:
        route = router.post(path).mock(side_effect=httpx.ConnectError)
        async with make_client(max_retries=1) as client:
            with pytest.raises(ConnectionError) as info:
                await call(client)
    assert route.call_count == 2
    assert info.value.may_have_reached_server is False
    assert "may already exist" not in str(info.value)


@pytest.mark.parametrize(("path", "call", "body"), NON_IDEMPOTENT)
@pytest.mark.anyio
async def test_non_idempotent_posts_are_not_reposted_after_an_error_status(
    path: str, call: Call, body: Any
) -> None:
    for status in (502, 503, 504):  # the server may have taken the request
        with mock_api() as router:
            route = router.post(path).mock(
                side_effect=[httpx.Response(status), httpx.Response(200, json=body)]
            )
            async with make_client() as client:
                with pytest.raises(ServerError) as info:
                    await call(client)
        assert route.call_count == 1, status
        assert info.value.status == status
        assert info.value.retry_after is None


@pytest.mark.parametrize(("path", "call", "body"), NON_IDEMPOTENT)
@pytest.mark.parametrize(
    ("status", "headers"),
    [(429, {}), (429, {"Retry-After": "0"}), (503, {"Retry-After": "0"}),
     (502, {"Retry-After": "0"})],
)
@pytest.mark.anyio
async def test_non_idempotent_posts_are_resent_after_an_answer_the_server_did_not_take(
    path: str, call: Call, body: Any, status: int, headers: dict[str, str]
) -> None:
    with mock_api() as router:
        route = router.post(path).mock(
            side_effect=[httpx.Response(status, headers=headers), httpx.Response(200, json=body)]
        )
        async with make_client() as client:
            await call(client)
    assert route.call_count == 2


@pytest.mark.parametrize(("path", "call", "body"), NON_IDEMPOTENT)
@pytest.mark.anyio
async def test_a_create_refused_with_retry_after_gives_up_after_max_retries(
    path: str, call: Call, body: Any, sleeps: list[float]
) -> None:
    with mock_api() as router:
        route = router.post(path).respond(429, headers={"Retry-After": "7"})
        async with make_client() as client:
            with pytest.raises(RateLimitError) as info:
                await call(client)
    assert route.call_count == 3  # the default max_retries is 2
    assert sleeps == [7.0, 7.0]  # as the server asked
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize(("path", "call", "body"), NON_IDEMPOTENT)
@pytest.mark.anyio
async def test_non_idempotent_posts_are_not_reposted_once_sent(
    path: str, call: Call, body: Any
) -> None:
    for after_sending in (
        httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadTimeout
    ):
        with mock_api() as router:
            route = router.post(path).mock(
                side_effect=[after_sending, httpx.Response(200, json=body)]
            )
            async with make_client(max_retries=3) as client:
                with pytest.raises(ConnectionError) as info:
                    await call(client)
        assert route.call_count == 1, after_sending
        error = info.value
        assert error.may_have_reached_server is True
        assert "may already exist" in str(error)
        assert "not retried" in str(error)
        assert error.request_method == "POST"
        assert error.url == BASE + path
        assert isinstance(error, RequestTimeoutError) == (after_sending is httpx.ReadTimeout)


# --------------------------------------------------------------------------- timeouts


@pytest.mark.anyio
async def test_read_timeout_becomes_request_timeout_error_after_retries() -> None:
    with mock_api() as router:
        route = router.get("/v1/tasks/t").mock(side_effect=httpx.ReadTimeout)
        async with make_client(max_retries=1) as client:
            with pytest.raises(RequestTimeoutError) as info:
                await client.tasks.get("t")
    assert route.call_count == 2
    assert isinstance(info.value, ConnectionError)
    assert info.value.may_have_reached_server is False


@pytest.mark.parametrize(
    ("configured", "expected"),
    [(1.5, 1.5), (httpx.Timeout(2.0, connect=0.5), 2.0), (None, None)],
)
@pytest.mark.anyio
async def test_client_timeout_is_applied_to_each_request(configured: Any, expected: Any) -> None:
    with mock_api() as router:
        route = router.get("/v1/tasks").respond(200, json={"tasks": []})
        async with make_client(timeout=configured) as client:
            await client.tasks.list()
    assert route.calls.last.request.extensions["timeout"]["read"] == expected


# --------------------------------------------------------------------------- Retry-After


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replaces ``anyio.sleep`` as the transport sees it; records the delays asked for."""
    delays: list[float] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)
        await anyio.lowlevel.checkpoint()

    # A copy of the anyio module whose sleep records: only the transport sees it.
    seen_by_transport = types.SimpleNamespace(**{**vars(anyio), "sleep": fake_sleep})
    monkeypatch.setattr(transport_module, "anyio", seen_by_transport)
    return delays


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.anyio
async def test_retry_after_seconds_are_honoured(sleeps: list[float], status: int) -> None:
    with mock_api() as router:
        route = router.get("/v1/tasks").mock(side_effect=[
            httpx.Response(status, headers={"Retry-After": "7"}),
            httpx.Response(status, headers={"Retry-After": "0"}),
            httpx.Response(200, json={"tasks": []}),
        ])
        async with make_client(max_retries=2) as client:
            await client.tasks.list()
    assert route.call_count == 3
    assert sleeps == [7.0, 0.0]


@pytest.mark.anyio
async def test_retry_after_http_date_is_honoured(sleeps: list[float]) -> None:
    with mock_api() as router:
        router.get("/v1/tasks").mock(side_effect=[
            httpx.Response(503, headers={"Retry-After": http_date(30)}),
            httpx.Response(503, headers={"Retry-After": http_date(-3600)}),
            httpx.Response(200, json={"tasks": []}),
        ])
        async with make_client(max_retries=2) as client:
            await client.tasks.list()
    future, past = sleeps
    assert 20 < future <= 30
    assert past == 0.0


@pytest.mark.parametrize(
    "header",
    [
        "86400",
        pytest.param(http_date(7200), id="http-date-in-2-hours"),  # an id the same every time
        "soon", "nan", "inf", "-5", "", "Mon, 99 Foo",
    ],
)
@pytest.mark.anyio
async def test_absurd_or_invalid_retry_after_falls_back_to_backoff(
    sleeps: list[float], header: str
) -> None:
    with mock_api() as router:
        router.get("/v1/tasks").mock(side_effect=[
            httpx.Response(429, headers={"Retry-After": header}),
            httpx.Response(200, json={"tasks": []}),
        ])
        async with make_client(retry_delay=0.001, max_retry_delay=0.001) as client:
            await client.tasks.list()
    (delay,) = sleeps
    assert 0 <= delay <= 0.001


@pytest.mark.parametrize(
    ("header", "expected"),
    [("12", 12.0), ("1.5", 1.5), ("0", 0.0), ("nan", None), ("-1", None), ("inf", None),
     ("", None), (None, None), ("later", None)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(max_retries=5, initial_delay=1.0, max_delay=4.0, max_retry_after=60)
    assert policy.delay(0, 12.0) == 12.0
    assert policy.delay(3, 0.0) == 0.0
    for attempt in range(6):
        assert 0 <= policy.delay(attempt, 61.0) <= min(4.0, 2.0**attempt)
        assert 0 <= policy.delay(attempt) <= min(4.0, 2.0**attempt)
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="retry_delay"):
        RetryPolicy(initial_delay=-1)


@pytest.mark.anyio
async def test_backoff_grows_and_is_capped(sleeps: list[float]) -> None:
    with mock_api() as router:
        router.get("/v1/tasks").respond(503)
        async with make_client(max_retries=6, retry_delay=1.0, max_retry_delay=4.0) as client:
            with pytest.raises(ServerError):
                await client.tasks.list()
    assert len(sleeps) == 6
    for attempt, delay in enumerate(sleeps):
        assert 0 <= delay <= min(4.0, 2.0**attempt)


# --------------------------------------------------------------------------- logging


@pytest.mark.anyio
async def test_every_retry_is_logged_at_debug_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with mock_api() as router:
        router.get("/v1/tasks/t-1").mock(side_effect=[
            httpx.Response(503, text=f"echo {TOKEN}"),
            httpx.ConnectError,
            httpx.Response(200, json=TASK_BODY),
        ])
        router.post("/v1/tasks").mock(side_effect=httpx.ReadError)
        async with make_client(max_retries=2) as client:
            await client.tasks.get("t-1")
            with pytest.raises(ConnectionError) as info:
                await client.tasks.create({"manifest": "p::b"})
    ours = [r for r in caplog.records if r.name == "oomol_connect_anyio"]
    retries = [r for r in ours if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all(r.levelno == logging.DEBUG for r in retries)
    assert "GET /v1/tasks/{id}" in retries[0].getMessage()
    assert "HTTP 503" in retries[0].getMessage()
    assert "ConnectError" in retries[1].getMessage()
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in str(record.exc_text)
    assert TOKEN not in caplog.text
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)


# --------------------------------------------------------------------------- other httpx errors


@pytest.mark.anyio
async def test_a_redirect_loop_is_a_connection_error_not_an_httpx_error() -> None:
    with mock_api() as router:
        route = router.get("/v1/tasks").respond(307, headers={"Location": f"{BASE}/v1/tasks"})
        async with make_client(max_retries=2) as client:
            with pytest.raises(ConnectionError, match="redirect") as info:
                await client.tasks.list()
            assert client.metrics["retries"] == 0
    assert isinstance(info.value.__cause__, httpx.TooManyRedirects)
    assert route.call_count > 1


@pytest.mark.parametrize(("idempotent", "call"), [
    (True, lambda c: c.tasks.get("t")),
    (False, lambda c: c.tasks.create({"manifest": "p::b"})),
])
@pytest.mark.anyio
async def test_an_undecodable_body_is_a_connection_error_not_an_httpx_error(
    idempotent: bool, call: Call
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # A stream, so that nothing decodes the body before the client reads it.
        return httpx.Response(
            200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip")
        )

    async with make_client(transport=httpx.MockTransport(handler), max_retries=2) as client:
        with pytest.raises(ConnectionError) as info:
            await call(client)
    assert isinstance(info.value.__cause__, httpx.DecodingError)
    assert len(seen) == 1
    assert info.value.may_have_reached_server is not idempotent


# --------------------------------------------------------------------------- caps and hooks


def test_backoff_never_overflows_after_many_attempts() -> None:
    policy = RetryPolicy(max_retries=100_000, initial_delay=0.5, max_delay=8.0)
    for attempt in (1023, 1024, 5000, 10**9):
        assert 0 <= policy.delay(attempt) <= 8.0


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
@pytest.mark.anyio
async def test_every_error_answer_carries_its_retry_after(status: int) -> None:
    with mock_api() as router:
        router.get("/v1/tasks").respond(status, headers={"Retry-After": "3"})
        async with make_client(max_retries=0) as client:
            with pytest.raises(ApiError) as info:
                await client.tasks.list()
    assert info.value.retry_after == 3.0


@pytest.mark.parametrize("header", [None, "soon", "inf", "nan", "1e999"])
@pytest.mark.anyio
async def test_retry_after_is_none_without_a_usable_header(header: str | None) -> None:
    headers = {} if header is None else {"Retry-After": header}
    with mock_api() as router:
        router.get("/v1/tasks").respond(503, headers=headers)
        async with make_client(max_retries=0) as client:
            with pytest.raises(ServerError) as info:
                await client.tasks.list()
    assert info.value.retry_after is None


@pytest.mark.anyio
async def test_a_huge_retry_after_falls_back_to_the_capped_backoff(sleeps: list[float]) -> None:
    with mock_api() as router:
        router.get("/v1/tasks").mock(side_effect=[
            httpx.Response(503, headers={"Retry-After": "1e308"}),
            httpx.Response(200, json={"tasks": []}),
        ])
        async with make_client(retry_delay=0.001, max_retry_delay=0.001) as client:
            await client.tasks.list()
    (delay,) = sleeps
    assert 0 <= delay <= 0.001


class HookFailed(Exception):
    pass


@pytest.mark.anyio
async def test_an_on_response_hook_failing_after_a_create_carries_the_created_task() -> None:
    def on_response(event: Any) -> None:
        raise HookFailed("tracing is down")

    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json=TASK_BODY)
        async with make_client(on_response=on_response) as client:
            with pytest.raises(HookError) as info:
                await client.tasks.create({"manifest": "p::b"})
    assert route.call_count == 1  # never re-sent
    assert isinstance(info.value.__cause__, HookFailed)
    assert info.value.body == TASK_BODY
    assert "on_response" in str(info.value)


@pytest.mark.anyio
async def test_an_on_response_hook_failing_after_an_error_answer_has_no_body() -> None:
    async def on_response(event: Any) -> None:
        raise HookFailed

    with mock_api() as router:
        router.get("/v1/tasks").respond(404, json={"message": "nope"})
        async with make_client(on_response=on_response) as client:
            with pytest.raises(HookError) as info:
                await client.tasks.list()
    assert info.value.body is None


@pytest.mark.anyio
async def test_an_on_request_hook_failing_is_a_hook_error_before_anything_is_sent() -> None:
    def on_request(event: Any) -> None:
        raise HookFailed

    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json=TASK_BODY)
        async with make_client(on_request=on_request) as client:
            with pytest.raises(HookError, match="on_request") as info:
                await client.tasks.create({"manifest": "p::b"})
    assert route.call_count == 0
    assert info.value.body is None
    assert isinstance(info.value.__cause__, HookFailed)
