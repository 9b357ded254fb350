"""Error bodies, status classes, and success bodies of the wrong shape."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from helpers import BASE, TOKEN, make_client, mock_api, task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oomol_connect_anyio import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    NotFoundError,
    OomolConnectClient,
    OomolConnectError,
    RateLimitError,
    ServerError,
)

Call = Callable[[OomolConnectClient], Awaitable[Any]]

# --------------------------------------------------------------------------- error bodies


@pytest.mark.parametrize(
    ("body", "detail", "parsed"),
    [
        pytest.param(
            {"success": False, "message": "manifest not found"},
            "manifest not found", {"success": False, "message": "manifest not found"},
            id="message",
        ),
        pytest.param({"error": "boom"}, "boom", {"error": "boom"}, id="error-string"),
        pytest.param(
            {"success": False, "error": {"message": "deep", "stack": "at x"}},
            "deep", {"success": False, "error": {"message": "deep", "stack": "at x"}},
            id="error-object",
        ),
        pytest.param(
            {"message": "first", "error": "second"}, "first",
            {"message": "first", "error": "second"}, id="message-wins",
        ),
        pytest.param(
            {"message": "  ", "error": "fallback"}, "fallback",
            {"message": "  ", "error": "fallback"}, id="blank-message",
        ),
        pytest.param(
            {"message": 42, "error": {"stack": "no message"}}, "Bad Request",
            {"message": 42, "error": {"stack": "no message"}}, id="no-usable-text",
        ),
        pytest.param("Task not here\n", "Task not here", "Task not here\n", id="plain-text"),
        pytest.param(b"", "Bad Request", None, id="empty-body"),
        pytest.param([1, 2], "Bad Request", [1, 2], id="json-list"),
        pytest.param(
            "<html><body><h1>Bad gateway</h1></body></html>",
            "<html><body><h1>Bad gateway</h1></body></html>",
            "<html><body><h1>Bad gateway</h1></body></html>",
            id="html",
        ),
    ],
)
@pytest.mark.anyio
async def test_error_bodies_are_read_message_then_error_then_text(
    body: Any, detail: str, parsed: Any
) -> None:
    if isinstance(body, (dict, list)):
        response = httpx.Response(400, json=body)
    elif isinstance(body, str):
        response = httpx.Response(400, text=body, headers={"Content-Type": "text/html"})
    else:
        response = httpx.Response(400, content=body)
    with mock_api() as router:
        router.get("/v1/tasks/t-1").mock(return_value=response)
        async with make_client() as client:
            with pytest.raises(BadRequestError) as info:
                await client.tasks.get("t-1")
    error = info.value
    assert error.status == 400
    assert error.detail == detail
    assert error.body == parsed
    assert error.request_method == "GET"
    assert error.url == f"{BASE}/v1/tasks/t-1"
    assert str(error) == f"HTTP 400: {detail} (GET {BASE}/v1/tasks/t-1)"


@pytest.mark.anyio
async def test_a_huge_text_error_is_truncated_in_the_detail_but_kept_in_the_body() -> None:
    text = "x" * 5000
    with mock_api() as router:
        router.get("/v1/flows").respond(500, text=text)
        async with make_client(max_retries=0) as client:
            with pytest.raises(ServerError) as info:
                await client.flows.list()
    assert len(info.value.detail) <= 500
    assert info.value.body == text


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, ServerError),
        (501, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (599, ServerError),
        (405, ApiError),
        (409, ApiError),
        (418, ApiError),
    ],
)
@pytest.mark.anyio
async def test_status_maps_to_its_error_class(status: int, error_class: type[ApiError]) -> None:
    with mock_api() as router:
        router.post("/v1/tasks").respond(status, json={"message": "nope"})
        async with make_client(max_retries=0) as client:
            with pytest.raises(ApiError) as info:
                await client.tasks.create({"manifest": "p::b"})
    assert type(info.value) is error_class
    assert isinstance(info.value, OomolConnectError)
    assert info.value.status == status
    assert info.value.request_method == "POST"
    assert TOKEN not in repr(info.value)


# ---------------------------------------------------------------- 2xx that are not usable


@pytest.mark.parametrize(
    "content",
    [b'{"tasks": [', b"not json", b"\xff\xfe\x00", b"{'tasks': []}", b"[" * 100_000],
)
@pytest.mark.anyio
async def test_invalid_json_in_a_success_is_an_invalid_response(content: bytes) -> None:
    with mock_api() as router:
        router.get("/v1/tasks").respond(200, content=content)
        async with make_client() as client:
            with pytest.raises(InvalidResponseError) as info:
                await client.tasks.list()
    assert info.value.status == 200
    assert info.value.request_method == "GET"
    assert info.value.url == f"{BASE}/v1/tasks"
    assert "not valid JSON" in info.value.detail


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"success": False, "error": "package not found"}, "package not found"),
        ({"success": False, "message": "m", "error": {"message": "e"}}, "m"),
        ({"success": False, "error": {"message": "nested"}}, "nested"),
        ({"success": False}, "the server reported failure"),
    ],
)
@pytest.mark.anyio
async def test_success_false_in_a_200_is_an_api_error(body: Any, detail: str) -> None:
    with mock_api() as router:
        router.get("/packages/install/i-1").respond(200, json=body)
        async with make_client() as client:
            with pytest.raises(ApiError) as info:
                await client.packages.get_install_task("i-1")
    assert type(info.value) is ApiError
    assert info.value.status == 200
    assert info.value.detail == detail
    assert info.value.body == body


WRONG_SHAPES: list[tuple[str, Call, str, Any]] = [
    ("tasks.list", lambda c: c.tasks.list(), "/v1/tasks", {"tasks": 3}),
    ("tasks.list-missing", lambda c: c.tasks.list(), "/v1/tasks", {"success": True}),
    ("tasks.list-items", lambda c: c.tasks.list(), "/v1/tasks", {"tasks": [task(), "t-2"]}),
    ("tasks.list-null", lambda c: c.tasks.list(), "/v1/tasks", None),
    ("tasks.get-no-id", lambda c: c.tasks.get("t"), "/v1/tasks/t",
     {"task": {"status": "running"}}),
    ("tasks.get-int-id", lambda c: c.tasks.get("t"), "/v1/tasks/t",
     {"task": {"id": 5, "status": "running"}}),
    ("tasks.get-no-status", lambda c: c.tasks.get("t"), "/v1/tasks/t", {"task": {"id": "t"}}),
    ("tasks.get-string", lambda c: c.tasks.get("t"), "/v1/tasks/t", {"task": "t"}),
    ("tasks.get-list", lambda c: c.tasks.get("t"), "/v1/tasks/t", [task()]),
    ("tasks.create", lambda c: c.tasks.create({"manifest": "p::b"}), "/v1/tasks",
     {"success": True, "userID": "u"}),
    ("tasks.stop", lambda c: c.tasks.stop("t"), "/v1/tasks/t/stop", {}),
    ("tasks.get_logs", lambda c: c.tasks.get_logs("t"), "/v1/tasks/t/logs", {"logs": [1]}),
    ("tasks.get_logs-obj", lambda c: c.tasks.get_logs("t"), "/v1/tasks/t/logs", {"logs": {}}),
    ("flows.list", lambda c: c.flows.list(), "/v1/flows", {"flows": "x"}),
    ("blocks.list", lambda c: c.blocks.list(), "/v1/blocks", {"blocks": [None]}),
    ("blocks.list-package", lambda c: c.blocks.list(), "/v1/blocks",
     {"blocks": [{"package": ["x"], "name": "b", "path": "/p/x-1.0.0/b"}]}),
    ("blocks.list-name", lambda c: c.blocks.list(), "/v1/blocks",
     {"blocks": [{"package": "x", "name": {"n": 1}, "path": "/p/x-1.0.0/b"}]}),
    ("packages.list", lambda c: c.packages.list(), "/packages", {"packages": None}),
    ("packages.install", lambda c: c.packages.install("p"), "/packages/install",
     {"success": True}),
    ("packages.install-int", lambda c: c.packages.install("p"), "/packages/install",
     {"success": True, "taskId": 5}),
    ("packages.list_install_tasks", lambda c: c.packages.list_install_tasks(),
     "/packages/install", {"success": True, "tasks": [[]]}),
    ("packages.get_install_task", lambda c: c.packages.get_install_task("i"),
     "/packages/install/i", {"success": True, "task": None}),
]


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [pytest.param(call, path, body, id=name) for name, call, path, body in WRONG_SHAPES],
)
@pytest.mark.anyio
async def test_a_success_of_the_wrong_shape_is_an_invalid_response(
    call: Call, path: str, body: Any
) -> None:
    with mock_api() as router:
        route = router.route(path=path).respond(200, json=body)
        async with make_client() as client:
            with pytest.raises(InvalidResponseError) as info:
                await call(client)
    assert route.call_count == 1
    assert info.value.body == body
    assert "unexpected response" in info.value.detail


@pytest.mark.anyio
async def test_install_answering_an_empty_task_id_is_an_invalid_response() -> None:
    with mock_api() as router:
        router.post("/packages/install").respond(200, json={"success": True, "taskId": ""})
        async with make_client() as client:
            with pytest.raises(InvalidResponseError):
                await client.packages.install("p")


# --------------------------------------------------------------------------- property

PARSERS: list[tuple[str, Call]] = [
    ("tasks.list", lambda c: c.tasks.list()),
    ("tasks.create", lambda c: c.tasks.create({"manifest": "p::b", "inputValues": {"a": 1}})),
    ("tasks.create_with_files", lambda c: c.tasks.create_with_files("p::b", {}, b"f")),
    ("tasks.get", lambda c: c.tasks.get("t")),
    ("tasks.stop", lambda c: c.tasks.stop("t")),
    ("tasks.get_logs", lambda c: c.tasks.get_logs("t")),
    ("flows.list", lambda c: c.flows.list()),
    ("blocks.list", lambda c: c.blocks.list()),
    ("blocks.list-all", lambda c: c.blocks.list(include_all_versions=True)),
    ("packages.list", lambda c: c.packages.list()),
    ("packages.install", lambda c: c.packages.install("p", "1.0.0")),
    ("packages.list_install_tasks", lambda c: c.packages.list_install_tasks()),
    ("packages.get_install_task", lambda c: c.packages.get_install_task("i")),
]
FIELDS = ["id", "status", "package", "name", "path", "taskId"]


def pick(*choices: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each equally likely (``a | b`` would flatten nested unions)."""
    return st.integers(0, len(choices) - 1).flatmap(lambda index: choices[index])


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.sampled_from(["running", "completed", "success", "failed", "/pk/n-1.2.3/b", "t", ""])
    | st.text(max_size=4)
)
json_values = pick(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=2), scalars, max_size=2),
)
# Objects made of the API's own field names with random values: all of them, or a few.
api_objects = pick(
    st.fixed_dictionaries(dict.fromkeys(FIELDS, json_values)),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
)
ENVELOPES = ["task", "tasks", "logs", "flows", "blocks", "packages"]
_objects = st.lists(api_objects, min_size=1, max_size=2)
# Every envelope at once, so that one body reaches deep into every method's parsing.
_enveloped = st.fixed_dictionaries(
    dict.fromkeys(ENVELOPES, pick(_objects, _objects, api_objects, json_values)),
    optional={"success": st.booleans(), "taskId": json_values, "id": json_values},
)
BODIES = pick(
    _enveloped.map(lambda value: json.dumps(value).encode()),
    _enveloped.map(lambda value: json.dumps(value).encode()),
    pick(_objects, api_objects, json_values).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=8),
)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(status=st.sampled_from([200, 200, 200, 200, 201, 400, 503]), body=BODIES)
@pytest.mark.anyio
async def test_random_bodies_only_ever_raise_api_errors(status: int, body: bytes) -> None:
    with mock_api() as router:
        router.route().respond(status, content=body)
        async with make_client(max_retries=0) as client:
            await call_every_parser(client, status, body)


async def call_every_parser(client: OomolConnectClient, status: int, body: bytes) -> None:
    for name, call in PARSERS:
        error: ApiError | None = None
        try:
            result = await call(client)
        except ApiError as exc:
            error = exc
        if error is None:
            assert status < 300, name
            assert isinstance(result, (dict, list)), name
        else:
            assert error.status == status or status < 300, name
            assert TOKEN not in str(error)
