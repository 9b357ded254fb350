"""Client configuration: base URL, env vars, options dict, headers, HTTP clients, metrics."""

from __future__ import annotations

import inspect
import json
import tracemalloc
from typing import Any

import httpx
import pytest
from helpers import (
    BASE,
    TOKEN,
    Received,
    StreamingTransport,
    gzip_bomb,
    make_client,
    mock_api,
    task,
)

from oomol_connect_anyio import InvalidResponseError, NotFoundError, OomolConnectClient

ENV_BASE = "OOMOL_CONNECT_BASE_URL"
ENV_TOKEN = "OOMOL_CONNECT_TOKEN"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BASE, raising=False)
    monkeypatch.delenv(ENV_TOKEN, raising=False)


def tasks_ok(_: Received) -> httpx.Response:
    return httpx.Response(200, json={"tasks": []})


async def list_tasks(client: OomolConnectClient, transport: StreamingTransport) -> httpx.Request:
    await client.tasks.list()
    return transport.received[-1].request


# --------------------------------------------------------------------------- base URL and token


@pytest.mark.anyio
async def test_env_vars_are_used_when_arguments_are_omitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_BASE, "http://env.test:8080/api/")
    monkeypatch.setenv(ENV_TOKEN, "env-token")
    transport = StreamingTransport(tasks_ok)
    async with OomolConnectClient(transport=transport) as client:
        assert client.base_url == "http://env.test:8080/api"
        request = await list_tasks(client, transport)
    assert str(request.url) == "http://env.test:8080/api/v1/tasks"
    assert request.headers["authorization"] == "env-token"


@pytest.mark.anyio
async def test_arguments_win_over_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BASE, "http://env.test/api")
    monkeypatch.setenv(ENV_TOKEN, "env-token")
    transport = StreamingTransport(tasks_ok)
    async with OomolConnectClient(
        base_url="http://arg.test/", api_token="arg-token", transport=transport
    ) as client:
        request = await list_tasks(client, transport)
    assert str(request.url) == "http://arg.test/v1/tasks"
    assert request.headers["authorization"] == "arg-token"


@pytest.mark.anyio
async def test_default_base_url_and_no_token() -> None:
    transport = StreamingTransport(tasks_ok)
    async with OomolConnectClient(transport=transport) as client:
        assert client.base_url == "http://localhost:3000/api"
        request = await list_tasks(client, transport)
    assert str(request.url) == "http://localhost:3000/api/v1/tasks"
    assert "authorization" not in request.headers


@pytest.mark.anyio
async def test_the_official_options_dict_form() -> None:
    transport = StreamingTransport(tasks_ok)
    options = {
        "base_url": "http://opts.test/api",
        "api_token": "opt-token",
        "default_headers": {"X-Team": "a"},
        "timeout": 4.0,
    }
    async with OomolConnectClient(options, transport=transport) as client:  # type: ignore[arg-type]
        request = await list_tasks(client, transport)
    assert str(request.url) == "http://opts.test/api/v1/tasks"
    assert request.headers["authorization"] == "opt-token"
    assert request.headers["x-team"] == "a"
    assert request.extensions["timeout"]["read"] == 4.0


@pytest.mark.anyio
async def test_keyword_arguments_win_over_the_options_dict() -> None:
    transport = StreamingTransport(tasks_ok)
    options = {"base_url": "http://opts.test/api", "api_token": "opt-token"}
    async with OomolConnectClient(
        options,  # type: ignore[arg-type]
        base_url="http://kw.test",
        api_token="kw-token",
        transport=transport,
    ) as client:
        request = await list_tasks(client, transport)
    assert str(request.url) == "http://kw.test/v1/tasks"
    assert request.headers["authorization"] == "kw-token"


def test_options_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="options"):
        OomolConnectClient("http://h.test/api")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        "localhost:3000/api",
        "h.test/api",
        "ftp://h.test/api",
        "garbage",
        "http://",
        "http:///api",
        "http://h.test/api?x=1",
        "http://h.test/api#frag",
        "http://exa mple.test/",
        "http://h.test/a b",
        "http://h.test:99999/api",
        "http://h.test/api?",
        "http://h.test/api#",
    ],
)
def test_bad_base_url_is_a_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="base_url") as info:
        OomolConnectClient(base_url=bad, transport=StreamingTransport(tasks_ok))
    assert repr(bad) in str(info.value)


def test_bad_base_url_from_the_environment_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BASE, "ftp://env.test")
    with pytest.raises(ValueError, match=r"'ftp://env\.test'"):
        OomolConnectClient(transport=StreamingTransport(tasks_ok))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"base_url": 3}, TypeError),
        ({"api_token": 3}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"timeout": -1.0}, ValueError),
        ({"timeout": True}, ValueError),
        ({"max_retries": -1}, ValueError),
        ({"max_retries": "2"}, TypeError),
        ({"max_retries": True}, TypeError),
        ({"retry_delay": -0.1}, ValueError),
        ({"retry_delay": float("inf")}, ValueError),
        ({"retry_delay": float("nan")}, ValueError),
        ({"max_retry_delay": float("inf")}, ValueError),
        ({"max_retry_delay": float("nan")}, ValueError),
        ({"max_retry_delay": -1}, ValueError),
        ({"retry_delay": "1"}, TypeError),
        ({"max_response_bytes": 0}, ValueError),
        ({"max_response_bytes": 1.5}, TypeError),
        ({"max_response_bytes": True}, TypeError),
        ({"default_headers": {"X-Bad": "caf\u00e9"}}, ValueError),
        ({"default_headers": {"X-Bad": "a\nb"}}, ValueError),
        ({"default_headers": {"Bad Name": "v"}}, ValueError),
        ({"default_headers": {"X-N": 3}}, TypeError),
        ({"default_headers": {"X-Api-Key": "s3cret-value "}}, ValueError),
        ({"default_headers": {"X-Api-Key": "\ts3cret-value"}}, ValueError),
        ({"http_client": "x", "transport": "y"}, ValueError),
    ],
)
def test_bad_settings_are_rejected_at_construction(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        OomolConnectClient(**kwargs)
    assert "s3cret-value" not in str(caught.value)  # a header is named, never its value


# --------------------------------------------------------------------------- HTTP clients


@pytest.mark.anyio
async def test_a_caller_http_client_is_used_and_left_open() -> None:
    transport = StreamingTransport(tasks_ok)
    http_client = httpx.AsyncClient(transport=transport, headers={"X-Caller": "yes"})
    async with OomolConnectClient(
        base_url=BASE, api_token=TOKEN, http_client=http_client
    ) as client:
        request = await list_tasks(client, transport)
    assert request.headers["x-caller"] == "yes"
    assert request.headers["authorization"] == TOKEN
    assert http_client.is_closed is False
    assert transport.closed is False
    response = await http_client.get("http://other.test/v1/tasks")
    assert response.status_code == 200
    assert "authorization" not in transport.received[-1].request.headers
    await http_client.aclose()
    assert transport.closed is True


@pytest.mark.anyio
async def test_a_caller_transport_is_used_and_closed_with_the_client() -> None:
    transport = StreamingTransport(tasks_ok)
    client = make_client(transport=transport)
    await client.tasks.list()
    assert len(transport.received) == 1
    assert transport.closed is False
    await client.aclose()
    assert transport.closed is True


@pytest.mark.anyio
async def test_close_is_an_alias_and_async_with_returns_the_client() -> None:
    transport = StreamingTransport(tasks_ok)
    client = make_client(transport=transport)
    async with client as entered:
        assert entered is client
    assert transport.closed is True
    other = StreamingTransport(tasks_ok)
    await make_client(transport=other).close()
    assert other.closed is True


@pytest.mark.anyio
async def test_the_default_http_client_works_with_respx() -> None:
    # No transport/http_client: the client builds its own httpx.AsyncClient.
    with mock_api() as router:
        route = router.get("/v1/tasks").respond(200, json={"tasks": []})
        async with OomolConnectClient(base_url=BASE, api_token=TOKEN) as client:
            await client.tasks.list()
    assert route.calls.last.request.headers["authorization"] == TOKEN


# --------------------------------------------------------------------------- default headers


@pytest.mark.anyio
async def test_default_headers_are_sent_and_the_callers_dict_is_not_mutated() -> None:
    headers = {"X-Team": "data", "User-Agent": "mine/1.0"}
    snapshot = dict(headers)
    transport = StreamingTransport(lambda _: httpx.Response(200, json={"task": task()}))
    async with make_client(transport=transport, default_headers=headers) as client:
        await client.tasks.create({"manifest": "p::b"})
        await client.tasks.get("t-1")
    assert headers == snapshot
    for received in transport.received:
        assert received.request.headers["x-team"] == "data"
        assert received.request.headers.get_list("user-agent") == ["mine/1.0"]
        assert received.request.headers["authorization"] == TOKEN


@pytest.mark.parametrize("key", ["Authorization", "authorization", "AUTHORIZATION"])
def test_authorization_in_default_headers_is_rejected(key: str) -> None:
    with pytest.raises(ValueError, match="api_token"):
        make_client(default_headers={key: "Bearer x"})
    with pytest.raises(ValueError, match="api_token"):
        OomolConnectClient({"default_headers": {key: "x"}})  # type: ignore[typeddict-item]


@pytest.mark.anyio
async def test_a_content_type_default_never_doubles_the_requests_content_type() -> None:
    # The official SDK's bug: a client-level JSON content type wins over multipart.
    headers = {"content-type": "application/json", "accept": "text/plain"}
    transport = StreamingTransport(lambda _: httpx.Response(200, json={"task": task()}))
    async with make_client(transport=transport, default_headers=headers) as client:
        await client.tasks.create_with_files("p::b", {"a": 1}, b"data")
        await client.tasks.create({"manifest": "p::b"})
    upload, create = (r.request for r in transport.received)
    (content_type,) = upload.headers.get_list("content-type")
    assert content_type.startswith("multipart/form-data; boundary=")
    assert upload.headers.get_list("accept") == ["text/plain"]
    assert [p.name for p in parse_multipart_request(upload, transport)] == [
        "manifest", "inputValues", "files",
    ]
    assert create.headers.get_list("content-type") == ["application/json"]
    assert json.loads(create.content) == {
        "manifest": "p::b", "inputValues": [{"nodeId": "_", "inputs": []}],
    }


def parse_multipart_request(request: httpx.Request, transport: StreamingTransport) -> list[Any]:
    (received,) = [r for r in transport.received if r.request is request]
    assert received.parts is not None
    return received.parts


# --------------------------------------------------------------------------- metrics


@pytest.mark.anyio
async def test_metrics_count_routes_status_classes_retries_and_bytes() -> None:
    listed = json.dumps({"tasks": [task()]}).encode()
    got = json.dumps({"task": task("t-1")}).encode()
    with mock_api() as router:
        router.get("/v1/tasks").respond(200, content=listed)
        router.get("/v1/tasks/t-1").mock(side_effect=[
            httpx.Response(503, content=b"busy"),
            httpx.ConnectError,
            httpx.Response(200, content=got),
        ])
        router.get("/v1/tasks/gone").respond(404, content=b"{}")
        async with make_client(max_retries=2) as client:
            assert client.metrics["requests"] == {}
            await client.tasks.list()
            await client.tasks.list()
            await client.tasks.get("t-1")
            with pytest.raises(NotFoundError):
                await client.tasks.get("gone")
            metrics = client.metrics
    assert metrics["requests"] == {
        "GET /v1/tasks": {"2xx": 2},
        "GET /v1/tasks/{id}": {"5xx": 1, "2xx": 1, "4xx": 1},
    }
    assert metrics["retries"] == 2
    assert metrics["bytes_received"] == 2 * len(listed) + len(b"busy") + len(got) + 2
    assert metrics["stops_sent"] == 0


@pytest.mark.anyio
async def test_metrics_are_a_snapshot() -> None:
    with mock_api() as router:
        router.get("/v1/flows").respond(200, json={"flows": []})
        async with make_client() as client:
            before = client.metrics
            await client.flows.list()
            after = client.metrics
    assert before["requests"] == {}
    assert after["requests"] == {"GET /v1/flows": {"2xx": 1}}


# --------------------------------------------------------------------------- the constructor


def test_a_bad_header_value_is_named_by_its_header_not_echoed() -> None:
    with pytest.raises(ValueError, match="X-Api-Key") as info:
        OomolConnectClient(base_url=BASE, default_headers={"X-Api-Key": "s3cret\n"})
    assert "s3cret" not in str(info.value)


@pytest.mark.anyio
async def test_max_response_bytes_is_the_clients() -> None:
    transport = StreamingTransport(lambda _: httpx.Response(200, json={"tasks": ["x" * 100]}))
    async with make_client(transport=transport, max_response_bytes=64) as client:
        with pytest.raises(InvalidResponseError, match="max_response_bytes"):
            await client.tasks.list()
    assert len(transport.received) == 1  # not retried


@pytest.mark.anyio
async def test_a_gzip_bomb_stops_at_the_default_cap_without_filling_memory() -> None:
    bomb = gzip_bomb()  # 512 MiB inflated
    assert len(bomb) < 1 << 20

    def answer(_: Received) -> httpx.Response:
        # One piece: however a transport slices the body, no decompression step may
        # inflate past the cap by much.
        return httpx.Response(
            200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(bomb)
        )

    tracemalloc.start()
    try:
        async with make_client(transport=StreamingTransport(answer)) as client:
            with pytest.raises(InvalidResponseError, match="max_response_bytes"):
                await client.tasks.list()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 160 << 20  # the 64 MiB cap and one inflated slice, not 512 MiB


def test_the_sync_client_takes_the_async_clients_arguments_and_its_own() -> None:
    from oomol_connect_anyio import SyncOomolConnectClient

    async_parameters = dict(inspect.signature(OomolConnectClient).parameters)
    sync_parameters = dict(inspect.signature(SyncOomolConnectClient).parameters)
    assert sync_parameters.pop("backend_options").default is None
    assert sync_parameters.pop("backend").default == "asyncio"
    assert sync_parameters == async_parameters
