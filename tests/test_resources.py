"""Every non-polling resource method: exact method, path, headers, body and envelopes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from helpers import BASE, TOKEN, install_task, json_of, make_client, mock_api, task

from oomol_connect_anyio import ApiError
from oomol_connect_anyio.resources.blocks import version_from_path

LOG = {"id": 1, "type": "BlockLog", "event": {"log": "hi"}, "created_at": 5}


def assert_common_headers(request: httpx.Request) -> None:
    assert request.headers["authorization"] == TOKEN  # raw token, no "Bearer "
    assert request.headers.get_list("authorization") == [TOKEN]
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("oomol-connect-anyio/")


def assert_get(request: httpx.Request, raw_path: bytes) -> None:
    assert request.method == "GET"
    assert request.url.raw_path == raw_path
    assert request.content == b""
    assert "content-type" not in request.headers
    assert_common_headers(request)


def assert_json_post(request: httpx.Request, raw_path: bytes, body: Any) -> None:
    assert request.method == "POST"
    assert request.url.raw_path == raw_path
    assert request.headers.get_list("content-type") == ["application/json"]
    assert int(request.headers["content-length"]) == len(request.content)
    assert json_of(request) == body
    assert_common_headers(request)


# --------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_tasks_list(wrapped: bool) -> None:
    tasks = [task("t-2", "running"), task("t-1", "completed")]
    with mock_api() as router:
        route = router.get("/v1/tasks").respond(200, json={"tasks": tasks} if wrapped else tasks)
        async with make_client() as client:
            assert await client.tasks.list() == {"tasks": tasks}
    assert route.call_count == 1
    assert_get(route.calls.last.request, b"/api/v1/tasks")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"task": task("t-9"), "userID": "u-1", "success": True}, id="current"),
        pytest.param({"task": task("t-9")}, id="older-image"),
        pytest.param(task("t-9"), id="bare"),
    ],
)
@pytest.mark.anyio
async def test_tasks_create(answer: dict[str, Any]) -> None:
    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json=answer)
        async with make_client() as client:
            created = await client.tasks.create(
                {"manifest": "pkg::blk", "inputValues": {"text": "hi", "n": 3}}
            )
    assert created == task("t-9")
    assert route.call_count == 1
    assert_json_post(route.calls.last.request, b"/api/v1/tasks", {
        "manifest": "pkg::blk",
        "inputValues": [{"nodeId": "_", "inputs": [
            {"handle": "text", "value": "hi"}, {"handle": "n", "value": 3},
        ]}],
    })


@pytest.mark.parametrize(
    ("request_", "wire_inputs"),
    [
        ({"manifest": "f"}, [{"nodeId": "_", "inputs": []}]),
        ({"blockId": "p::b", "inputValues": None}, [{"nodeId": "_", "inputs": []}]),
        (
            {"manifest": "f", "inputValues": [{"nodeId": "n1", "inputs": [{"handle": "h"}]}]},
            [{"nodeId": "n1", "inputs": [{"handle": "h", "value": None}]}],
        ),
    ],
)
@pytest.mark.anyio
async def test_tasks_create_sends_only_manifest_and_wire_inputs(
    request_: dict[str, Any], wire_inputs: Any
) -> None:
    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json={"task": task()})
        async with make_client() as client:
            await client.tasks.create(request_)  # type: ignore[arg-type]
    body = json_of(route.calls.last.request)
    assert set(body) == {"manifest", "inputValues"}
    assert body["inputValues"] == wire_inputs


@pytest.mark.anyio
async def test_a_create_body_is_canonical_utf8_json() -> None:
    """Sorted keys, no spaces, UTF-8: the bytes a journal hashes are the bytes sent."""
    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json={"task": task()})
        async with make_client() as client:
            await client.tasks.create({"inputValues": {"text": "h\u00e9"}, "manifest": "p::b"})
    assert route.calls.last.request.content == (
        '{"inputValues":[{"inputs":[{"handle":"text","value":"h\u00e9"}],"nodeId":"_"}],'
        '"manifest":"p::b"}'
    ).encode()


@pytest.mark.parametrize(
    "value", ["\ud800", {"\udc00": 1}, object()], ids=["lone-surrogate", "in-a-key", "object"]
)
@pytest.mark.anyio
async def test_a_create_that_is_not_json_fails_before_any_request(value: object) -> None:
    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json={"task": task()})
        async with make_client() as client:
            with pytest.raises(TypeError, match="not JSON-serialisable"):
                await client.tasks.create({"manifest": "p::b", "inputValues": {"x": value}})
    assert route.call_count == 0


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_tasks_get(wrapped: bool) -> None:
    found = task("t-1", "running")
    answer = {"task": found, "success": True} if wrapped else found
    with mock_api() as router:
        route = router.get("/v1/tasks/t-1").respond(200, json=answer)
        async with make_client() as client:
            assert await client.tasks.get("t-1") == found
    assert route.call_count == 1
    assert_get(route.calls.last.request, b"/api/v1/tasks/t-1")


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_tasks_stop(wrapped: bool) -> None:
    stopped = task("t-1", "stopped")
    with mock_api() as router:
        route = router.post("/v1/tasks/t-1/stop").respond(
            200, json={"task": stopped, "success": True} if wrapped else stopped
        )
        async with make_client() as client:
            assert await client.tasks.stop("t-1") == stopped
            assert client.metrics["stops_sent"] == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.raw_path == b"/api/v1/tasks/t-1/stop"
    assert request.content == b""
    assert "content-type" not in request.headers
    assert_common_headers(request)


@pytest.mark.parametrize("bad", ["5", -1.0, 0, float("nan"), float("inf"), True])
@pytest.mark.anyio
async def test_a_bad_stop_request_timeout_is_refused_before_any_request(bad: object) -> None:
    with mock_api() as router:
        route = router.post("/v1/tasks/t-1/stop").respond(200, json=task("t-1", "stopped"))
        async with make_client() as client:
            with pytest.raises(ValueError, match="request_timeout must be a positive number"):
                await client.tasks.stop("t-1", request_timeout=bad)  # type: ignore[arg-type]
    assert route.call_count == 0


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_tasks_get_logs(wrapped: bool) -> None:
    logs = [LOG, {**LOG, "id": 2}]
    with mock_api() as router:
        route = router.get("/v1/tasks/t-1/logs").respond(
            200, json={"logs": logs, "success": True} if wrapped else logs
        )
        async with make_client() as client:
            assert await client.tasks.get_logs("t-1") == logs
    assert_get(route.calls.last.request, b"/api/v1/tasks/t-1/logs")


# --------------------------------------------------------------------------- flows and blocks


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_flows_list(wrapped: bool) -> None:
    flows = [{"name": "f", "path": "/f", "inputs": [{"nodeId": "n", "inputs": []}]}]
    with mock_api() as router:
        route = router.get("/v1/flows").respond(200, json={"flows": flows} if wrapped else flows)
        async with make_client() as client:
            assert await client.flows.list() == {"flows": flows}
    assert_get(route.calls.last.request, b"/api/v1/flows")


def block(package: str, name: str, path: str) -> dict[str, Any]:
    return {"package": package, "name": name, "path": path}


BLOCKS = [
    block("img", "resize", "/home/u/.oomol/packages/img-1.9.0/blocks/resize"),
    block("img", "crop", "/home/u/.oomol/packages/img-1.9.0/blocks/crop"),
    block("img", "resize", "/home/u/.oomol/packages/img-1.10.0/blocks/resize"),
    block("txt", "upper", "/srv/packages/txt/0.2.0/blocks/upper"),
    block("txt", "upper", "/srv/packages/txt/0.1.5/blocks/upper"),
    block("raw", "x", "/somewhere/else/x"),
]


@pytest.mark.anyio
async def test_blocks_list_keeps_each_packages_latest_version() -> None:
    with mock_api() as router:
        route = router.get("/v1/blocks").respond(200, json={"blocks": BLOCKS})
        async with make_client() as client:
            result = await client.blocks.list()
    assert_get(route.calls.last.request, b"/api/v1/blocks")
    assert [(b["blockId"], b["version"]) for b in result["blocks"]] == [
        ("img::resize", "1.10.0"),
        ("txt::upper", "0.2.0"),
        ("raw::x", "unknown"),
    ]


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_blocks_list_with_all_versions(wrapped: bool) -> None:
    with mock_api() as router:
        router.get("/v1/blocks").respond(200, json={"blocks": BLOCKS} if wrapped else BLOCKS)
        async with make_client() as client:
            result = await client.blocks.list(include_all_versions=True)
    assert [(b["blockId"], b["version"]) for b in result["blocks"]] == [
        ("img::resize", "1.9.0"),
        ("img::crop", "1.9.0"),
        ("img::resize", "1.10.0"),
        ("txt::upper", "0.2.0"),
        ("txt::upper", "0.1.5"),
        ("raw::x", "unknown"),
    ]
    assert result["blocks"][0]["path"] == BLOCKS[0]["path"]


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/u/packages/pkg-1.2.3/blocks/b", "1.2.3"),
        ("/u/packages/pkg/1.2.3/blocks/b", "1.2.3"),
        ("/u/packages/my-pkg-0.0.12", "0.0.12"),
        ("/opt/studio-2.1/packages/pkg-1.0.0/blocks/b", "1.0.0"),
        ("/opt/studio/2.1/packages/pkg/1.0.0/b", "1.0.0"),
        ("C:\\Users\\me\\packages\\pkg-0.3.1\\blocks\\b", "0.3.1"),
        ("/u/packages/pkg/blocks/b", "unknown"),
        ("/u/packages/pkg-" + "9" * 5000 + ".1/b", "unknown"),
        ("", "unknown"),
    ],
)
def test_version_from_path(path: str, version: str) -> None:
    assert version_from_path(path) == version


# --------------------------------------------------------------------------- packages


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_packages_list_has_no_v1_prefix(wrapped: bool) -> None:
    packages = [{"name": "img", "version": "1.10.0"}]
    with mock_api() as router:
        route = router.get("/packages").respond(
            200, json={"packages": packages} if wrapped else packages
        )
        async with make_client() as client:
            assert await client.packages.list() == {"packages": packages}
    assert_get(route.calls.last.request, b"/api/packages")


@pytest.mark.parametrize(
    ("version", "body"),
    [("1.2.0", {"name": "img", "version": "1.2.0"}), (None, {"name": "img"})],
)
@pytest.mark.anyio
async def test_packages_install_fetches_the_task_once_when_only_its_id_comes_back(
    version: str | None, body: dict[str, Any]
) -> None:
    with mock_api() as router:
        post = router.post("/packages/install").respond(
            200, json={"success": True, "taskId": "i-7"}
        )
        get = router.get("/packages/install/i-7").respond(
            200, json={"success": True, "task": install_task("i-7", "running")}
        )
        async with make_client() as client:
            result = await client.packages.install("img", version)
    assert result == install_task("i-7", "running")
    assert post.call_count == 1
    assert get.call_count == 1
    assert_json_post(post.calls.last.request, b"/api/packages/install", body)
    assert_get(get.calls.last.request, b"/api/packages/install/i-7")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"success": True, "task": install_task("i-8")}, id="wrapped"),
        pytest.param({"success": True, "taskId": "i-8", "task": install_task("i-8")},
                     id="id-and-task"),
        pytest.param(install_task("i-8"), id="bare"),
    ],
)
@pytest.mark.anyio
async def test_packages_install_uses_a_returned_task_without_fetching(
    answer: dict[str, Any],
) -> None:
    with mock_api() as router:
        post = router.post("/packages/install").respond(200, json=answer)
        get = router.get(path__startswith="/packages/install/").respond(
            200, json={"task": install_task("other")}
        )
        async with make_client() as client:
            assert await client.packages.install("img") == install_task("i-8")
    assert post.call_count == 1
    assert get.call_count == 0


@pytest.mark.anyio
async def test_packages_install_failure_is_an_api_error() -> None:
    with mock_api() as router:
        router.post("/packages/install").respond(
            200, json={"success": False, "error": "no such package"}
        )
        async with make_client() as client:
            with pytest.raises(ApiError, match="no such package") as info:
                await client.packages.install("nope")
    assert info.value.request_method == "POST"
    assert info.value.url == f"{BASE}/packages/install"


@pytest.mark.parametrize(
    ("name", "version"), [("", None), ("  ", None), (None, None), ("img", ""), ("img", 3)]
)
@pytest.mark.anyio
async def test_packages_install_validates_before_any_request(name: Any, version: Any) -> None:
    with mock_api() as router:
        route = router.route().respond(200, json={"success": True, "taskId": "i"})
        async with make_client() as client:
            with pytest.raises(ValueError, match="package"):
                await client.packages.install(name, version)
    assert route.call_count == 0


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_packages_list_install_tasks(wrapped: bool) -> None:
    tasks = [install_task("i-1", "success"), install_task("i-2", "failed", error="boom")]
    with mock_api() as router:
        route = router.get("/packages/install").respond(
            200, json={"success": True, "tasks": tasks} if wrapped else tasks
        )
        async with make_client() as client:
            assert await client.packages.list_install_tasks() == {"tasks": tasks}
    assert_get(route.calls.last.request, b"/api/packages/install")


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.anyio
async def test_packages_get_install_task(wrapped: bool) -> None:
    found = install_task("i-3", "success", packagePath="/p/img-1.0.0")
    with mock_api() as router:
        route = router.get("/packages/install/i-3").respond(
            200, json={"success": True, "task": found} if wrapped else found
        )
        async with make_client() as client:
            assert await client.packages.get_install_task("i-3") == found
    assert_get(route.calls.last.request, b"/api/packages/install/i-3")


# --------------------------------------------------------------------------- no token


@pytest.mark.anyio
async def test_without_a_token_no_authorization_header_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OOMOL_CONNECT_TOKEN", raising=False)
    with mock_api() as router:
        route = router.get("/v1/tasks").respond(200, json={"tasks": []})
        async with make_client(api_token=None) as client:
            await client.tasks.list()
    assert "authorization" not in route.calls.last.request.headers
