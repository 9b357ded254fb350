"""The token stays secret: never in reprs, errors or logs, never sent to another origin."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from helpers import BASE, TOKEN, make_client, mock_api, task

from oomol_connect_anyio import ConnectionError, OomolConnectClient

Call = Callable[[OomolConnectClient], Awaitable[Any]]


def assert_secret(*things: object) -> None:
    for thing in things:
        assert TOKEN not in str(thing)
        assert TOKEN not in repr(thing)


def test_token_is_not_in_the_clients_repr_or_str() -> None:
    client = make_client()
    assert_secret(client, vars(client), client._transport.__dict__)
    assert "connect.test" in repr(client)


ERROR_SCENARIOS: list[tuple[str, Any, Call]] = [
    ("401", httpx.Response(401, json={"message": "bad token"}), lambda c: c.tasks.list()),
    ("404-text", httpx.Response(404, text="nope"), lambda c: c.tasks.get("t")),
    ("500-html", httpx.Response(500, text="<h1>x</h1>"), lambda c: c.flows.list()),
    ("invalid-json", httpx.Response(200, content=b"{"), lambda c: c.blocks.list()),
    ("wrong-shape", httpx.Response(200, json={"tasks": 1}), lambda c: c.tasks.list()),
    ("success-false", httpx.Response(200, json={"success": False}), lambda c: c.packages.list()),
    ("read-error", httpx.ReadError, lambda c: c.tasks.create({"manifest": "p::b"})),
    ("connect-error", httpx.ConnectError, lambda c: c.tasks.get_logs("t")),
    ("timeout", httpx.ReadTimeout, lambda c: c.packages.install("p")),
    ("bad-id", None, lambda c: c.tasks.stop("")),
    ("bad-input", None, lambda c: c.tasks.create({"manifest": "p::b", "inputValues": 3})),
    ("bad-file", None, lambda c: c.tasks.create_with_files("p::b", {}, pathlib.Path("/nope"))),
]


@pytest.mark.parametrize(
    ("answer", "call"),
    [pytest.param(answer, call, id=name) for name, answer, call in ERROR_SCENARIOS],
)
@pytest.mark.anyio
async def test_token_is_in_no_exception_nor_log_record(
    answer: Any, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx, httpcore
    with mock_api() as router:
        route = router.route()
        if isinstance(answer, httpx.Response):
            route.mock(return_value=answer)
        else:
            route.mock(side_effect=answer)
        async with make_client(max_retries=1) as client:
            with pytest.raises(Exception) as info:  # noqa: PT011 - each scenario its own class
                await call(client)
    error = info.value
    chain = [error, error.__cause__, error.__context__]
    assert_secret(*chain, vars(error))
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert_secret(record.getMessage(), record.args, record.exc_text)


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.test/steal",
        "http://connect.test:8080/api/v1/tasks",
        "https://evil.test/api/v1/tasks",
    ],
)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.anyio
async def test_a_redirect_to_another_origin_does_not_carry_the_token(
    target: str, status: int
) -> None:
    with respx.mock(assert_all_called=False) as router:
        # The more specific route first: respx ignores an unspecified port.
        second = router.route(url=target).respond(200, json={"tasks": []})
        first = router.get(f"{BASE}/v1/tasks").respond(status, headers={"Location": target})
        async with make_client() as client:
            await client.tasks.list()
    assert first.calls.last.request.headers["authorization"] == TOKEN
    assert second.call_count == 1
    assert "authorization" not in second.calls.last.request.headers


@pytest.mark.anyio
async def test_a_redirect_within_the_origin_keeps_the_token() -> None:
    with mock_api() as router:
        router.get("/v1/tasks").respond(307, headers={"Location": f"{BASE}/v1/tasks/"})
        second = router.get("/v1/tasks/").respond(200, json={"tasks": []})
        async with make_client() as client:
            await client.tasks.list()
    assert second.calls.last.request.headers["authorization"] == TOKEN


@pytest.mark.anyio
async def test_a_redirected_post_does_not_carry_the_token_elsewhere() -> None:
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{BASE}/v1/tasks").respond(
            307, headers={"Location": "http://evil.test/v1/tasks"}
        )
        evil = router.post("http://evil.test/v1/tasks").respond(200, json={"task": task()})
        async with make_client() as client:
            await client.tasks.create({"manifest": "p::b"})
    assert "authorization" not in evil.calls.last.request.headers


@pytest.mark.anyio
async def test_token_is_never_put_in_the_url() -> None:
    with mock_api() as router:
        route = router.route().respond(200, json={"task": task(), "tasks": []})
        async with make_client() as client:
            await client.tasks.list()
            await client.tasks.get("t")
    for call in route.calls:
        assert TOKEN not in str(call.request.url)


@pytest.mark.anyio
async def test_token_is_only_added_for_the_configured_origin_with_a_shared_http_client() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"tasks": []})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http_client:
        ours = OomolConnectClient(base_url=BASE, api_token=TOKEN, http_client=http_client)
        other = OomolConnectClient(base_url="http://other.test", http_client=http_client)
        await ours.tasks.list()
        await other.tasks.list()
        await http_client.get("http://connect.test:81/api/v1/tasks")
    assert seen[0].headers["authorization"] == TOKEN
    assert "authorization" not in seen[1].headers
    assert "authorization" not in seen[2].headers


# --------------------------------------------------------------------------- the token itself


@pytest.mark.parametrize("spaced", [f"{TOKEN}\n", f"  {TOKEN}\r\n", f"\t{TOKEN} "])
@pytest.mark.anyio
async def test_surrounding_whitespace_is_stripped_from_the_token(
    spaced: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for from_env in (False, True):
        if from_env:
            monkeypatch.setenv("OOMOL_CONNECT_TOKEN", spaced)
        with mock_api() as router:
            route = router.get("/v1/tasks").respond(200, json={"tasks": []})
            kwargs: dict[str, Any] = {} if from_env else {"api_token": spaced}
            async with OomolConnectClient(base_url=BASE, **kwargs) as client:
                await client.tasks.list()
        assert route.calls.last.request.headers["authorization"] == TOKEN


@pytest.mark.parametrize(
    "bad",
    [f"{TOKEN}\nX-Evil: 1", f"{TOKEN}\x00", f"{TOKEN}\x7f", f"{TOKEN}\u00e9", f"\u200b{TOKEN}"],
)
def test_a_token_with_control_or_non_ascii_characters_is_refused_without_echoing_it(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError, match="api_token") as info:
        OomolConnectClient(base_url=BASE, api_token=bad)
    assert_secret(info.value, info.value.__cause__, info.value.__context__)
    assert TOKEN not in caplog.text


def test_a_blank_token_means_no_token() -> None:
    client = OomolConnectClient(base_url=BASE, api_token="  \n")
    assert "Authorization" not in client._transport._sender._origin_headers


@pytest.mark.anyio
async def test_a_local_protocol_error_is_not_retried_and_does_not_quote_headers() -> None:
    with mock_api() as router:
        route = router.get("/v1/tasks").mock(
            side_effect=httpx.LocalProtocolError(f"Illegal header value b'{TOKEN}'")
        )
        async with make_client() as client:
            with pytest.raises(ConnectionError) as info:
                await client.tasks.list()
    assert route.call_count == 1
    assert info.value.may_have_reached_server is False
    assert TOKEN not in str(info.value)
