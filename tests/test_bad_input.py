"""Bad input end to end: a named exception, before any request when the input is ours,
and never a KeyError/TypeError/... from a body the server got wrong.

Against the emulator over loopback sockets (checking it saw no request), plus
property-based fuzzing of the multi-request flows (waits, runs, installs) through an
``httpx.MockTransport``; ``test_errors.py`` fuzzes the single-request parsers.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_redirects import Receive, Scope, Send, drain, lifespan, serve_asgi

from oomol_connect_anyio import (
    ApiError,
    ConnectionError,
    InvalidResponseError,
    NotFoundError,
    OomolConnectClient,
    OomolConnectError,
    normalize_input_values,
)
from oomol_connect_anyio.emulator import Emulator

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

FAST: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}
Call = Callable[[OomolConnectClient], Awaitable[Any]]
Draw = Callable[[st.SearchStrategy[Any]], Any]


def no_request_reached(emulator: Emulator) -> None:
    assert emulator.stats()["requests"] == {}, emulator.stats()["requests"]


async def unwrap(call: Awaitable[Any]) -> Any:
    """Await ``call``; a lone error inside an ExceptionGroup (run_many) is raised bare."""
    try:
        return await call
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def entry_points(request: Any, files: Any = None) -> list[tuple[str, Call]]:
    """Every way to start a task, each given the same (bad) request."""
    manifest = request.get("manifest") if isinstance(request, dict) else request
    values = request.get("inputValues") if isinstance(request, dict) else None
    return [
        ("create", lambda c: c.tasks.create(request)),
        ("run", lambda c: c.tasks.run(request, FAST)),
        ("create_and_wait", lambda c: c.tasks.create_and_wait(request, FAST)),
        ("run_many", lambda c: unwrap(c.tasks.run_many([request], polling_options=FAST))),
        ("create_with_files", lambda c: c.tasks.create_with_files(manifest, values, files)),
        ("run_with_files", lambda c: c.tasks.run_with_files(manifest, values, files, FAST)),
    ]


# --------------------------------------------------------------------------- manifests


BAD_MANIFESTS: list[tuple[Any, type[Exception]]] = [
    (None, TypeError),
    (3, TypeError),
    (b"demo::echo", TypeError),
    (["demo::echo"], TypeError),
    ({"manifest": "demo::echo"}, TypeError),
    ("", ValueError),
    ("   ", ValueError),
    ("\n\t", ValueError),
]


async def test_a_bad_manifest_is_refused_before_any_request_by_every_entry_point(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    for manifest, error in BAD_MANIFESTS:
        for name, call in entry_points({"manifest": manifest, "inputValues": {"a": 1}}):
            with pytest.raises(error, match="manifest"):
                await call(client)
            assert emulator.stats()["requests"] == {}, (manifest, name)


# --------------------------------------------------------------------------- input values

handles = st.text(min_size=1, max_size=6)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
not_json = st.sampled_from([{1, 2}, object(), math.nan, math.inf, b"raw", 1j, (1, {2})])
not_a_dict = st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2)
form1 = st.dictionaries(handles, json_values, max_size=4)
form2 = st.lists(
    st.fixed_dictionaries({"handle": handles, "value": json_values}), min_size=1, max_size=4
)
form3 = st.lists(
    st.fixed_dictionaries(
        {
            "nodeId": handles,
            "inputs": st.lists(
                st.fixed_dictionaries({"handle": handles, "value": json_values}), max_size=3
            ),
        }
    ),
    min_size=1,
    max_size=3,
)


def wire_of(form: int, values: Any) -> list[dict[str, Any]]:
    """What each valid form must become on the wire (written out, not computed by the SDK)."""
    if form == 1:
        return [{"nodeId": "_", "inputs": [{"handle": k, "value": v} for k, v in values.items()]}]
    if form == 2:
        return [{"nodeId": "_", "inputs": list(values)}]
    return list(values)


def mutate_input(item: dict[str, Any], draw: Draw) -> Any:
    """One {handle, value} item made invalid (or replaced by a non-dict)."""
    how = draw(st.sampled_from(["not a dict", "no handle", "bad handle", "extra", "value"]))
    item = dict(item)
    if how == "not a dict":
        return draw(not_a_dict)
    if how == "no handle":
        del item["handle"]
    elif how == "bad handle":
        item["handle"] = draw(st.sampled_from(["", None, 7, ["h"]]))
    elif how == "extra":
        item[draw(st.sampled_from(["nodeId", "Handle", "inputs", "x"]))] = 1
    else:
        item["value"] = draw(not_json)
    return item


def mutate(form: int, values: Any, draw: Draw) -> Any:
    """A valid value of ``form`` with one thing made invalid."""
    if draw(st.integers(0, 9)) == 0:  # the top level itself is of the wrong type
        return draw(st.sampled_from(["a=1", b"a=1", 3, 2.5, {"a", "b"}, True]))
    if form == 1:
        values = dict(values)
        how = draw(st.sampled_from(["bad key", "empty key", "value"]))
        if how == "bad key":
            values[draw(st.integers() | st.none() | st.tuples(st.integers()))] = 1
        elif how == "empty key":
            values[""] = 1
        else:
            values[draw(handles)] = draw(not_json)
        return values
    values = [dict(item) for item in values]
    index = draw(st.integers(0, len(values) - 1))
    if form == 2:
        if draw(st.booleans()) and len(values) > 1:  # mix in a node-form item
            values[index] = {"nodeId": "n", "inputs": []}
        else:
            values[index] = mutate_input(values[index], draw)
        return values
    node = values[index]
    how = draw(st.sampled_from(["node id", "inputs", "input", "extra", "mix"]))
    if how == "node id":
        node["nodeId"] = draw(st.sampled_from(["", None, 0, ["n"]]))
    elif how == "inputs":
        node["inputs"] = draw(st.sampled_from(["a", {"handle": "a"}, 5]))
    elif how == "input" and node["inputs"]:
        inputs = list(node["inputs"])
        inputs[0] = mutate_input(inputs[0], draw)
        node["inputs"] = inputs
    elif how == "mix" and len(values) > 1:
        del node["nodeId"]
    else:
        node[draw(st.sampled_from(["handle", "value", "nodes", "x"]))] = 1
    return values


FORMS = {1: form1, 2: form2, 3: form3}
valid_inputs = st.sampled_from([1, 2, 3]).flatmap(
    lambda form: st.tuples(st.just(form), FORMS[form])
)


@st.composite
def mutated_inputs(draw: Draw) -> Any:
    form, values = draw(valid_inputs)
    return mutate(form, values, draw)


def in_process(emulator: Emulator) -> OomolConnectClient:
    """A client for the emulator's ASGI app without sockets: hypothesis examples cannot
    share the socket-serving async fixtures (anyio's pytest plugin closes its runner)."""
    transport = httpx.ASGITransport(app=emulator.app)
    return OomolConnectClient(base_url="http://emulator.test/api", transport=transport)


hypothesis_settings = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@hypothesis_settings
@given(form_and_values=valid_inputs)
async def test_valid_input_forms_reach_the_server_normalised(
    anyio_backend: str, form_and_values: tuple[int, Any]
) -> None:
    form, values = form_and_values
    wire = wire_of(form, values)
    assert normalize_input_values(values) == wire
    emulator = Emulator()
    async with in_process(emulator) as client:
        task = await client.tasks.create({"manifest": "demo::echo", "inputValues": values})
    assert emulator.tasks[task["id"]].input_values == wire
    assert task["inputValues"] == wire


@hypothesis_settings
@given(bad=mutated_inputs())
async def test_mutated_input_forms_are_refused_before_any_request(
    anyio_backend: str, bad: Any
) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        normalize_input_values(bad)
    assert str(info.value)
    emulator = Emulator()
    async with in_process(emulator) as client:
        for name, call in entry_points({"manifest": "demo::echo", "inputValues": bad}):
            with pytest.raises((TypeError, ValueError)):
                await call(client)
            assert emulator.stats()["requests"] == {}, name


# --------------------------------------------------------------------------- files


async def test_bad_files_are_refused_before_any_request(
    emulator: Emulator, client: OomolConnectClient, tmp_path: Any
) -> None:
    closed = io.BytesIO(b"x")
    closed.close()
    cases: list[tuple[Any, type[Exception]]] = [
        (tmp_path / "missing.bin", FileNotFoundError),
        (str(tmp_path / "missing.bin"), FileNotFoundError),
        (tmp_path, IsADirectoryError),
        (closed, ValueError),
        ([b"fine", tmp_path / "missing.bin"], FileNotFoundError),
        (("name.txt", tmp_path), IsADirectoryError),
    ]
    for files, error in cases:
        for name, call in entry_points({"manifest": "demo::count-bytes"}, files)[-2:]:
            with pytest.raises(error):
                await call(client)
            assert emulator.stats()["requests"] == {}, (name, files)


async def test_an_unreadable_file_is_refused_before_any_request(
    emulator: Emulator, client: OomolConnectClient, tmp_path: Any
) -> None:
    path = tmp_path / "secret.bin"
    path.write_bytes(b"x")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): a mode-000 file is readable")
        for name, call in entry_points({"manifest": "demo::count-bytes"}, path)[-2:]:
            with pytest.raises(PermissionError):
                await call(client)
            assert emulator.stats()["requests"] == {}, name
    finally:
        path.chmod(0o600)


# --------------------------------------------------------------------------- polling options


BAD_POLLING: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"interval_ms": 0}, ValueError),
    ({"interval_ms": -1}, ValueError),
    ({"interval_ms": math.nan}, ValueError),
    ({"interval_ms": math.inf}, ValueError),
    ({"interval_ms": True}, TypeError),
    ({"max_interval_ms": 0}, ValueError),
    ({"max_interval_ms": -10}, ValueError),
    ({"backoff_factor": 0.999}, ValueError),
    ({"backoff_factor": 0}, ValueError),
    ({"backoff_factor": -2}, ValueError),
    ({"backoff_factor": math.nan}, ValueError),
    ({"timeout_ms": 0}, ValueError),
    ({"timeout_ms": -1}, ValueError),
    ({"timeout_ms": "10"}, TypeError),
    ({"log_grace_ms": 0}, ValueError),
]


def waits(options: dict[str, Any]) -> list[tuple[str, Call]]:
    """Every wait that takes polling options."""
    request: Any = {"manifest": "demo::echo"}

    async def watch(client: OomolConnectClient) -> None:
        async with client.tasks.watch("some-task", options):  # type: ignore[arg-type]
            pass

    return [
        ("run", lambda c: c.tasks.run(request, options)),
        ("create_and_wait", lambda c: c.tasks.create_and_wait(request, options)),
        ("wait_for_completion", lambda c: c.tasks.wait_for_completion("t", options)),
        ("watch", watch),
        ("run_with_files", lambda c: c.tasks.run_with_files("demo::echo", {}, b"x", options)),
        ("run_many", lambda c: c.tasks.run_many([request], polling_options=options)),
        ("install_and_wait", lambda c: c.packages.install_and_wait("text-tools", None, options)),
        ("wait_for_install", lambda c: c.packages.wait_for_install_completion("i", options)),
    ]


async def test_bad_polling_options_are_refused_before_any_request_by_every_wait(
    emulator: Emulator, client: OomolConnectClient
) -> None:
    for options, error in BAD_POLLING:
        for name, call in waits(options):
            with pytest.raises(error):
                await call(client)
            assert emulator.stats()["requests"] == {}, (name, options)


# --------------------------------------------------------------------------- addresses and ids


async def test_a_base_url_without_a_scheme_is_refused_before_any_request(
    emulator: Emulator, emulator_url: str
) -> None:
    bare = emulator_url.removeprefix("http://")  # "127.0.0.1:PORT/api"
    with pytest.raises(ValueError, match="scheme"):
        OomolConnectClient(base_url=bare)
    with pytest.raises(ValueError, match="scheme"):
        OomolConnectClient(base_url=f"//{bare}")
    no_request_reached(emulator)


TRAVERSALS: list[tuple[str, Call, str]] = [
    (
        "GET /v1/tasks/{id}",
        lambda c: c.tasks.get("../../packages"),
        "/api/v1/tasks/..%2F..%2Fpackages",
    ),
    (
        "GET /v1/tasks/{id}/logs",
        lambda c: c.tasks.get_logs("../../../packages"),
        "/api/v1/tasks/..%2F..%2F..%2Fpackages/logs",
    ),
    (
        "POST /v1/tasks/{id}/stop",
        lambda c: c.tasks.stop("../../packages/install"),
        "/api/v1/tasks/..%2F..%2Fpackages%2Finstall/stop",
    ),
    (
        "GET /packages/install/{id}",
        lambda c: c.packages.get_install_task("../../v1/tasks"),
        "/api/packages/install/..%2F..%2Fv1%2Ftasks",
    ),
    ("GET /v1/tasks/{id}", lambda c: c.tasks.get(".."), "/api/v1/tasks/%2E%2E"),
]


async def test_ids_that_try_path_traversal_stay_on_their_route(
    emulator: Emulator, emulator_url: str
) -> None:
    from soak import RecordingTransport

    recorder = RecordingTransport()
    async with OomolConnectClient(base_url=emulator_url, transport=recorder) as client:
        for route, call, raw_path in TRAVERSALS:
            with pytest.raises(NotFoundError) as info:
                await call(client)
            assert info.value.status == 404
            assert recorder.attempts[-1].path == raw_path
            assert list(emulator.stats()["requests"]) == [route], route
            emulator.reset_stats()
    assert emulator.stats()["tasks_created"] == 0
    assert list(emulator.installs.tasks) == []  # nothing was installed


# --------------------------------------------------------------------------- bad success bodies

TRUNCATED = object()
BODIES: dict[str, tuple[int, list[tuple[bytes, bytes]], Any]] = {
    "truncated-json": (200, [], b'{"task": {"id": "t", "status": "comp'),
    "html": (200, [(b"content-type", b"text/html")], b"<html><body>maintenance</body></html>"),
    "empty": (200, [], b""),
    "latin1": (200, [], b'{"task": "\xff\xfe"}'),
    "success-false": (200, [], b'{"success": false, "message": "nope"}'),
    "bad-gzip": (200, [(b"content-encoding", b"gzip")], b"definitely not gzip"),
    "short-body": (200, [], TRUNCATED),
}


class BadBodies:
    """Answers ``/<case>/...`` with the case's status, headers and body, counting requests."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        await drain(receive)
        case = scope["path"].split("/")[1]
        self.requests[case] = self.requests.get(case, 0) + 1
        status, headers, body = BODIES[case]
        if body is TRUNCATED:  # promise 100 bytes, send 10, hang up
            head = [(b"content-length", b"100"), (b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": b'{"task": {', "more_body": True})
            return
        head = [(b"content-length", str(len(body)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def bad_server() -> AsyncIterator[tuple[BadBodies, str]]:
    app = BadBodies()
    async with serve_asgi(app) as url:
        yield app, url


@pytest.mark.parametrize(
    ("case", "error", "attempts"),
    [
        ("truncated-json", InvalidResponseError, 1),
        ("html", InvalidResponseError, 1),
        ("empty", InvalidResponseError, 1),
        ("latin1", InvalidResponseError, 1),
        ("success-false", ApiError, 1),
        ("bad-gzip", OomolConnectError, None),
        ("short-body", ConnectionError, 3),  # a GET: retried, max_retries=2
    ],
)
async def test_a_broken_success_body_is_a_named_error(
    anyio_backend: str, case: str, error: type[Exception], attempts: int | None
) -> None:
    async with (
        bad_server() as (app, url),
        OomolConnectClient(base_url=f"{url}/{case}", retry_delay=0.001) as client,
    ):
        with anyio.fail_after(10), pytest.raises(error) as info:
            await client.tasks.get("t")
        assert not isinstance(info.value, (KeyError, TypeError, AttributeError, IndexError))
        if attempts is not None:
            assert app.requests[case] == attempts
        if isinstance(info.value, ApiError):
            assert info.value.status == 200
        # A creation answered the same way is never sent twice (a look-up for its task,
        # answered the same way, may follow).
        before = app.requests[case]
        with anyio.fail_after(10), pytest.raises(OomolConnectError):
            await client.tasks.create({"manifest": "demo::echo"})
    assert app.requests[case] - before in (1, 1 + (attempts or 1))


# --------------------------------------------------------------------------- fuzzing the waits

FIELD_NAMES = [
    "id",
    "status",
    "type",
    "event",
    "result",
    "error",
    "stacks",
    "task",
    "logs",
    "success",
    "taskId",
    "message",
    "name",
    "updated_at",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.text(max_size=3)
    | st.sampled_from(
        [
            "t",
            "completed",
            "failed",
            "stopped",
            "running",
            "success",
            "BlockFinished",
            "SessionFinished",
            "BlockError",
        ]
    )
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=2), inner, max_size=4)
    ),
    max_leaves=10,
)
log_ids = st.integers(0, 5) | st.none() | st.text(max_size=2) | st.floats(allow_nan=False)
events = st.fixed_dictionaries(
    {}, optional={"result": values, "error": values, "stacks": values, "session_id": scalars}
)
logs = st.fixed_dictionaries(
    {},
    optional={
        "id": log_ids,
        "type": st.sampled_from(["BlockFinished", "SessionFinished", "BlockLog", "BlockError"])
        | st.text(max_size=2),
        "event": events | values,
    },
)
statuses = st.sampled_from(["created", "running", "completed", "failed", "stopped", "success"])
tasks = st.fixed_dictionaries(
    {"id": st.just("t") | scalars, "status": statuses | scalars},
    optional={"updated_at": scalars, "manifest_path": scalars, "error": values, "name": scalars},
)
task_bodies = (
    st.fixed_dictionaries({"task": tasks | values}, optional={"success": st.booleans()})
    | tasks
    | values
)
log_bodies = (
    st.fixed_dictionaries(
        {"logs": st.lists(logs | values, max_size=4)}, optional={"success": st.booleans()}
    )
    | st.lists(logs, max_size=3)
    | values
)
raw = st.binary(max_size=6)
answers = st.tuples(
    st.sampled_from([200] * 8 + [404, 500]),
    st.one_of(task_bodies.map(lambda v: ("json", v)), raw.map(lambda b: ("raw", b))),
)
log_answers = st.tuples(
    st.sampled_from([200] * 8 + [500]),
    st.one_of(log_bodies.map(lambda v: ("json", v)), raw.map(lambda b: ("raw", b))),
)
DONE = {"task": {"id": "t", "status": "completed"}, "success": True}
INSTALLED = {"id": "i", "status": "success"}


class Script:
    """A server answering from drawn bodies; once they run out, the task is completed."""

    def __init__(self, polls: list[Any], log_pages: list[Any], install: list[Any]) -> None:
        self.polls, self.log_pages, self.install = polls, log_pages, install

    @staticmethod
    def answer(status: int, kind_body: tuple[str, Any]) -> httpx.Response:
        kind, body = kind_body
        return httpx.Response(status, content=body if kind == "raw" else json.dumps(body))

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/v1/tasks"):
            return httpx.Response(200, json={"task": {"id": "t", "status": "created"}})
        if path.endswith("/stop"):
            return httpx.Response(200, json={"task": {"id": "t", "status": "stopped"}})
        if path.endswith("/logs"):
            if self.log_pages:
                return self.answer(*self.log_pages.pop(0))
            return httpx.Response(200, json={"logs": [{"id": 9, "type": "SessionFinished"}]})
        if "/packages/install" in path:
            if request.method == "POST":
                return httpx.Response(200, json={"success": True, "taskId": "i"})
            if self.install:
                return self.answer(*self.install.pop(0))
            return httpx.Response(200, json={"success": True, "task": INSTALLED})
        if self.polls:
            return self.answer(*self.polls.pop(0))
        return httpx.Response(200, json=DONE)


FUZZ_OPTIONS: Any = {
    "interval_ms": 1,
    "backoff_strategy": "fixed",
    "log_grace_ms": 5,
    "timeout_ms": 2000,
}


def flows(options: Any) -> list[tuple[str, Call]]:
    async def watch(client: OomolConnectClient) -> list[Any]:
        async with client.tasks.watch("t", options) as stream:
            return [event async for event in stream]

    request: Any = {"manifest": "p::b"}
    follow = {**options, "on_log": lambda log: None}
    return [
        ("run", lambda c: c.tasks.run(request, options)),
        ("run+on_log", lambda c: c.tasks.run(request, follow)),
        ("create_and_wait", lambda c: c.tasks.create_and_wait(request, options)),
        ("wait_for_completion", lambda c: c.tasks.wait_for_completion("t", follow)),
        ("watch", watch),
        ("run_many", lambda c: unwrap(c.tasks.run_many([request], polling_options=options))),
        ("install_and_wait", lambda c: c.packages.install_and_wait("p", None, options)),
    ]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    phases=[Phase.generate],  # shrinking 7 multi-request flows per example takes minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    polls=st.lists(answers, max_size=3),
    log_pages=st.lists(log_answers, max_size=3),
    install=st.lists(answers, max_size=2),
)
async def test_random_bodies_in_every_wait_only_ever_raise_named_errors(
    anyio_backend: str, polls: list[Any], log_pages: list[Any], install: list[Any]
) -> None:
    for name, call in flows(FUZZ_OPTIONS):
        script = Script(list(polls), list(log_pages), list(install))
        transport = httpx.MockTransport(script.handle)
        async with OomolConnectClient(
            base_url="http://connect.test/api", transport=transport, max_retries=0
        ) as client:
            try:
                with anyio.fail_after(10):
                    await call(client)
            except OomolConnectError:
                pass
            except Exception as exc:
                raise AssertionError(
                    f"{name} raised {exc!r} for {polls=} {log_pages=} {install=}"
                ) from exc


# Regressions the fuzzing above found (each was a bare TypeError, KeyError, ValueError or
# ExceptionGroup before the fix).


@pytest.mark.parametrize(
    "page",
    [
        pytest.param([{"id": "a", "type": "BlockLog"}, {"id": 2, "type": "BlockLog"}], id="str"),
        pytest.param([{"type": "BlockLog"}], id="missing"),
        pytest.param([{"id": None}, {"id": 1}], id="null"),
    ],
)
async def test_log_ids_that_are_not_integers_are_an_invalid_response(
    anyio_backend: str, page: list[Any]
) -> None:
    script = Script([], [(200, ("json", {"logs": page}))] * 2, [])
    async with OomolConnectClient(
        base_url="http://connect.test/api", transport=httpx.MockTransport(script.handle)
    ) as client:
        with pytest.raises(InvalidResponseError, match="id"):
            await client.tasks.run({"manifest": "p::b"}, FUZZ_OPTIONS)


async def test_a_poll_and_a_log_fetch_failing_together_raise_one_named_error(
    anyio_backend: str,
) -> None:
    script = Script([(500, ("json", {"message": "down"}))], [(500, ("raw", b""))], [])
    options = {**FUZZ_OPTIONS, "on_log": lambda log: None}
    async with OomolConnectClient(
        base_url="http://connect.test/api",
        transport=httpx.MockTransport(script.handle),
        max_retries=0,
    ) as client:
        with pytest.raises(OomolConnectError):
            await client.tasks.wait_for_completion("t", options)


@pytest.mark.parametrize("what", ["run", "install_and_wait"])
async def test_a_task_with_an_empty_id_is_an_invalid_response(
    anyio_backend: str, what: str
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "task": {"id": "", "status": "pending"}})

    async with OomolConnectClient(
        base_url="http://connect.test/api", transport=httpx.MockTransport(handle)
    ) as client:
        call: Awaitable[Any] = (
            client.tasks.run({"manifest": "p::b"}, FUZZ_OPTIONS)
            if what == "run"
            else client.packages.install_and_wait("p", None, FUZZ_OPTIONS)
        )
        with pytest.raises(InvalidResponseError):
            await call
