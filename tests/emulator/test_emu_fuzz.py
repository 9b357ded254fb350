"""The ASGI app answers any request without crashing (status < 500 without faults)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oomol_connect_anyio.emulator import Emulator

pytestmark = pytest.mark.anyio

SEGMENTS = ["api", "v1", "tasks", "blocks", "flows", "packages", "install", "stop", "logs", ""]
MANIFESTS = ["demo::echo", "demo::upper", "demo::fail", "demo-flow", "demo::count-bytes", "x"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
create_bodies = st.fixed_dictionaries(
    {},
    optional={
        "manifest": st.sampled_from(MANIFESTS) | json_values,
        "blockId": st.sampled_from(MANIFESTS),
        "inputValues": json_values
        | st.dictionaries(st.sampled_from(["text", "seconds", "steps", "lines"]), json_values)
        | st.lists(st.fixed_dictionaries({"handle": st.text(max_size=5), "value": json_values})),
        "name": st.sampled_from(["text-tools", "nope"]) | json_values,
    },
).map(lambda body: json.dumps(body).encode())
multipart_bodies = st.lists(
    st.tuples(st.sampled_from(["manifest", "inputValues", "files", "x"]), st.binary(max_size=40)),
    max_size=4,
).map(
    lambda parts: (
        b"".join(
            b'--B\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"\r\n\r\n'
            + data
            + b"\r\n"
            for name, data in parts
        )
        + b"--B--\r\n"
    )
)
bodies = st.binary(max_size=300) | create_bodies | multipart_bodies
content_types = st.sampled_from(
    [
        b"application/json",
        b"multipart/form-data; boundary=B",
        b"multipart/form-data",
        b"text/plain",
        b"application/json; charset=utf-8",
    ]
) | st.binary(max_size=30)
paths = st.lists(
    st.sampled_from(SEGMENTS) | st.text(max_size=6).map(lambda s: quote(s, safe="")),
    max_size=5,
).map(lambda segs: ("/" + "/".join(segs)).encode()) | st.binary(max_size=30)
headers = st.lists(
    st.tuples(
        st.sampled_from([b"content-type", b"authorization", b"x-any"]) | st.binary(max_size=8),
        st.binary(max_size=30),
    ),
    max_size=4,
)


def _scope(method: str, path: bytes, request_headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": b"",
        "headers": request_headers,
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
    path=paths,
    content_type=content_types,
    extra_headers=headers,
    body=bodies,
    chunk=st.integers(1, 64),
    token=st.sampled_from([None, "tok"]),
)
async def test_app_always_answers(method, path, content_type, extra_headers, body, chunk, token):
    emu = Emulator(token=token, auth="raw-or-bearer" if token else None)
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    request_headers = [(b"content-type", content_type), *extra_headers]
    await emu.app(_scope(method, path, request_headers), receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    status = sent[0]["status"]
    assert status < 500
    payload = json.loads(sent[1]["body"])
    if status >= 400:
        assert payload["success"] is False
        assert isinstance(payload["message"], str)


@settings(max_examples=30, deadline=None)
@given(path=paths, body=bodies)
async def test_app_with_faults_answers_or_drops(path, body):
    from oomol_connect_anyio.emulator import DroppedConnection, FaultRule

    emu = Emulator(seed=0)
    emu.faults.add(FaultRule(error_rate=0.3, drop_rate=0.3, rate_limit_every=4))
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    for method in ("GET", "POST"):
        sent.clear()
        try:
            await emu.app(
                _scope(method, path, [(b"content-type", b"application/json")]), receive, send
            )
        except DroppedConnection:
            assert [m["type"] for m in sent] == ["http.response.start"]
        else:
            assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
