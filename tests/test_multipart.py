"""``tasks.create_with_files``: a real, streamed ``multipart/form-data`` body."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from helpers import (
    BASE,
    TOKEN,
    Part,
    Received,
    StreamingTransport,
    make_client,
    mock_api,
    parse_multipart,
    task,
)

from oomol_connect_anyio import (
    ConnectionError,
    OomolConnectClient,
    RequestEvent,
    UploadChangedError,
    UploadError,
)
from oomol_connect_anyio import _multipart as multipart_module
from oomol_connect_anyio._multipart import CHUNK_SIZE, MultipartBody

WIRE_INPUTS = [{"nodeId": "_", "inputs": [{"handle": "text", "value": "hé"}]}]


def ok(_: Received) -> httpx.Response:
    return httpx.Response(200, json={"task": task(), "success": True})


def fields(parts: list[Part]) -> dict[str, bytes]:
    return {p.name: bytes(p.data) for p in parts if p.filename is None}


def file_parts(parts: list[Part]) -> list[Part]:
    return [p for p in parts if p.filename is not None]


async def upload(files: Any, inputs: Any = None) -> tuple[Received, dict[str, Any]]:
    transport = StreamingTransport(ok)
    async with make_client(transport=transport) as client:
        created = await client.tasks.create_with_files("pkg::blk", inputs, files)
    assert len(transport.received) == 1
    return transport.received[0], dict(created)


@pytest.mark.anyio
async def test_body_is_multipart_with_fields_and_one_part_per_file(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG fake")
    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json={"task": task("t-9")})
        async with make_client() as client:
            created = await client.tasks.create_with_files(
                "pkg::blk", {"text": "hé"}, [str(path), ("notes.txt", b"hello", "text/plain")]
            )
    assert created["id"] == "t-9"
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.raw_path == b"/api/v1/tasks"
    assert request.headers["authorization"] == TOKEN
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    assert "application/json" not in request.headers.get_list("content-type")
    assert len(request.headers.get_list("content-type")) == 1
    parts = parse_multipart(request)
    assert [p.name for p in parts] == ["manifest", "inputValues", "files", "files"]
    assert fields(parts)["manifest"] == b"pkg::blk"
    assert json.loads(fields(parts)["inputValues"]) == WIRE_INPUTS
    photo, notes = file_parts(parts)
    assert (photo.filename, photo.content_type, bytes(photo.data)) == (
        "photo.png", "image/png", b"\x89PNG fake",
    )
    assert (notes.filename, notes.content_type, bytes(notes.data)) == (
        "notes.txt", "text/plain", b"hello",
    )
    assert int(request.headers["content-length"]) == len(request.content)


@pytest.mark.anyio
async def test_no_files_and_no_inputs_still_send_both_fields() -> None:
    received, _ = await upload(None)
    assert received.parts is not None
    assert set(fields(received.parts)) == {"manifest", "inputValues"}
    assert json.loads(fields(received.parts)["inputValues"]) == [{"nodeId": "_", "inputs": []}]
    assert file_parts(received.parts) == []


@pytest.mark.parametrize("kind", ["str", "path"])
@pytest.mark.anyio
async def test_path_inputs(tmp_path: pathlib.Path, kind: str) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n")
    received, _ = await upload(str(path) if kind == "str" else path)
    assert received.parts is not None
    (part,) = file_parts(received.parts)
    assert (part.filename, part.content_type, bytes(part.data)) == (
        "data.csv", "text/csv", b"a,b\n1,2\n",
    )


@pytest.mark.anyio
async def test_bytes_input_gets_a_generic_name_and_type() -> None:
    received, _ = await upload(b"\x00\x01raw")
    assert received.parts is not None
    (part,) = file_parts(received.parts)
    assert (part.filename, part.content_type, bytes(part.data)) == (
        "file", "application/octet-stream", b"\x00\x01raw",
    )


@pytest.mark.anyio
async def test_binary_file_object_is_sent_from_its_current_position(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "log.bin"
    path.write_bytes(b"HEADER|payload bytes")
    with path.open("rb") as handle:
        handle.seek(7)
        received, _ = await upload(handle)
    assert received.parts is not None
    (part,) = file_parts(received.parts)
    assert part.filename == "log.bin"
    assert bytes(part.data) == b"payload bytes"
    assert int(received.request.headers["content-length"]) == sum(received.chunk_sizes)


@pytest.mark.anyio
async def test_bytesio_from_position_in_a_tuple_with_content_type() -> None:
    buffer = io.BytesIO(b"skip-me{json}")
    buffer.seek(7)
    received, _ = await upload([("doc.json", buffer, "application/json")])
    assert received.parts is not None
    (part,) = file_parts(received.parts)
    assert (part.filename, part.content_type, bytes(part.data)) == (
        "doc.json", "application/json", b"{json}",
    )


@pytest.mark.anyio
async def test_two_tuple_guesses_the_content_type() -> None:
    received, _ = await upload(("page.html", b"<p>"))
    assert received.parts is not None
    (part,) = file_parts(received.parts)
    assert (part.filename, part.content_type) == ("page.html", "text/html")


@pytest.mark.anyio
async def test_a_list_of_several_mixed_inputs_keeps_order(tmp_path: pathlib.Path) -> None:
    first = tmp_path / "one.txt"
    first.write_bytes(b"1")
    items = [first, b"2", ("three.bin", io.BytesIO(b"3"), "application/x-three"), str(first)]
    received, _ = await upload(items, [{"handle": "text", "value": "hé"}])
    assert received.parts is not None
    assert json.loads(fields(received.parts)["inputValues"]) == WIRE_INPUTS
    got = [(p.filename, bytes(p.data)) for p in file_parts(received.parts)]
    assert got == [("one.txt", b"1"), ("file", b"2"), ("three.bin", b"3"), ("one.txt", b"1")]
    assert int(received.request.headers["content-length"]) == sum(received.chunk_sizes)


@pytest.mark.anyio
async def test_hostile_filenames_cannot_break_the_part_headers() -> None:
    received, _ = await upload(('evil"\r\nX-Injected: 1.txt', b"x", "text/plain"))
    assert received.parts is not None
    (part,) = file_parts(received.parts)
    assert "x-injected" not in part.headers
    assert bytes(part.data) == b"x"
    assert [p.name for p in received.parts] == ["manifest", "inputValues", "files"]


@pytest.mark.anyio
async def test_content_length_is_the_real_body_length(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ü.txt"
    path.write_bytes(b"z" * (CHUNK_SIZE + 17))
    received, _ = await upload([path, ("named.bin", b"abc", "application/x")],
                               {"k": "ünïcode"})
    assert "transfer-encoding" not in received.request.headers
    assert int(received.request.headers["content-length"]) == sum(received.chunk_sizes)
    assert received.parts is not None
    assert file_parts(received.parts)[0].filename == "ü.txt"


# --------------------------------------------------------------------------- bad files


@pytest.mark.anyio
async def test_missing_path_raises_before_the_post(tmp_path: pathlib.Path) -> None:
    with mock_api() as router:
        async with make_client() as client:
            with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
                await client.tasks.create_with_files("a::b", {}, [b"ok", tmp_path / "nope.txt"])
        assert len(router.calls) == 0


@pytest.mark.anyio
async def test_directory_raises_before_the_post(tmp_path: pathlib.Path) -> None:
    with mock_api() as router:
        async with make_client() as client:
            with pytest.raises(IsADirectoryError):
                await client.tasks.create_with_files("a::b", {}, str(tmp_path))
        assert len(router.calls) == 0


@pytest.mark.anyio
async def test_closed_file_object_raises_value_error(tmp_path: pathlib.Path) -> None:
    handle = io.BytesIO(b"x")
    handle.close()
    with mock_api() as router:
        async with make_client() as client:
            with pytest.raises(ValueError, match="closed"):
                await client.tasks.create_with_files("a::b", {}, handle)
        assert len(router.calls) == 0


@pytest.mark.parametrize("text_file", ["open", "stringio"])
@pytest.mark.anyio
async def test_text_mode_file_raises_type_error(tmp_path: pathlib.Path, text_file: str) -> None:
    path = tmp_path / "t.txt"
    path.write_text("text")
    with mock_api() as router, path.open() as opened:
        handle = opened if text_file == "open" else io.StringIO("text")
        async with make_client() as client:
            with pytest.raises(TypeError, match="binary"):
                await client.tasks.create_with_files("a::b", {}, handle)
        assert len(router.calls) == 0


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(42, id="int"),
        pytest.param(("only-name",), id="one-tuple"),
        pytest.param((b"x", b"y"), id="tuple-without-name"),
        pytest.param([b"ok", None], id="none-in-list"),
        pytest.param(b"x".decode, id="callable"),
    ],
)
@pytest.mark.anyio
async def test_other_bad_file_inputs_raise_type_error(bad: Any) -> None:
    with mock_api() as router:
        async with make_client() as client:
            with pytest.raises(TypeError, match="files"):
                await client.tasks.create_with_files("a::b", {}, bad)
        assert len(router.calls) == 0


# --------------------------------------------------------------------------- streaming


@pytest.mark.anyio
async def test_a_large_file_is_streamed_in_bounded_chunks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 8 * 1024 * 1024
    block = bytes(range(256)) * 4096  # 1 MiB, not uniform so misplaced bytes show
    path = tmp_path / "big.bin"
    path.write_bytes(block * 8)
    produced: list[int] = []
    original = MultipartBody.stream

    async def recording_stream(self: MultipartBody) -> AsyncIterator[bytes]:
        async for chunk in original(self):
            produced.append(len(chunk))
            yield chunk

    monkeypatch.setattr(MultipartBody, "stream", recording_stream)
    digests: list[str] = []

    def handler(received: Received) -> httpx.Response:
        assert received.parts is not None
        (part,) = file_parts(received.parts)
        digests.append(hashlib.sha256(part.data).hexdigest())
        return httpx.Response(200, json={"task": task()})

    transport = StreamingTransport(handler)
    async with make_client(transport=transport) as client:
        await client.tasks.create_with_files("pkg::big", {}, path)
    (received,) = transport.received
    assert digests == [hashlib.sha256(block * 8).hexdigest()]
    assert max(produced) <= CHUNK_SIZE
    assert len(produced) >= size // CHUNK_SIZE
    assert max(received.chunk_sizes) <= CHUNK_SIZE
    assert sum(received.chunk_sizes) == int(received.request.headers["content-length"])


@pytest.mark.anyio
async def test_multipart_body_is_resent_whole_after_a_connect_error(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(b"0123456789" * 1000)
    handle = path.open("rb")
    handle.seek(5)
    attempts: list[Received] = []

    def handler(received: Received) -> httpx.Response:
        attempts.append(received)
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=received.request)
        return httpx.Response(200, json={"task": task("t-2")})

    transport = StreamingTransport(handler)
    with handle:
        async with make_client(transport=transport) as client:
            created = await client.tasks.create_with_files("a::b", {"n": 1}, [handle, b"tail"])
    assert created["id"] == "t-2"
    assert len(attempts) == 2
    for received in attempts:
        assert received.parts is not None
        data = [bytes(p.data) for p in file_parts(received.parts)]
        assert data == [(b"0123456789" * 1000)[5:], b"tail"]
        assert sum(received.chunk_sizes) == int(received.request.headers["content-length"])


@pytest.mark.anyio
async def test_multipart_upload_is_not_resent_after_a_read_error() -> None:
    attempts: list[Received] = []

    def handler(received: Received) -> httpx.Response:
        attempts.append(received)
        raise httpx.ReadError("connection reset", request=received.request)

    async with make_client(transport=StreamingTransport(handler)) as client:
        with pytest.raises(ConnectionError) as info:
            await client.tasks.create_with_files("a::b", {}, b"x")
    posts = [a for a in attempts if a.request.method == "POST"]
    assert len(posts) == 1  # the look-up for its task failed as well: not sent again
    assert info.value.may_have_reached_server is True
    assert BASE in info.value.url


# --------------------------------------------------------------------------- unusual files


def _nothing_sent() -> StreamingTransport:
    return StreamingTransport(ok)


@pytest.mark.anyio
async def test_a_fifo_is_refused_before_any_request(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    transport = _nothing_sent()
    async with make_client(transport=transport) as client:
        with pytest.raises(ValueError, match="not a regular file") as info:
            await client.tasks.create_with_files("pkg::blk", {}, fifo)
    assert "files[0]" in str(info.value)
    assert transport.received == []


@pytest.mark.anyio
async def test_a_unix_socket_is_refused_before_any_request(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        transport = _nothing_sent()
        async with make_client(transport=transport) as client:
            with pytest.raises(ValueError, match="not a regular file"):
                await client.tasks.create_with_files("pkg::blk", {}, path)
        assert transport.received == []
    finally:
        server.close()


@pytest.mark.parametrize("path", ["/dev/null", "/dev/zero"])
@pytest.mark.anyio
async def test_a_device_is_refused_before_any_request(path: str) -> None:
    transport = _nothing_sent()
    async with make_client(transport=transport) as client:
        with pytest.raises(ValueError, match="not a regular file"):
            await client.tasks.create_with_files("pkg::blk", {}, path)
        handle = open(path, "rb")  # noqa: ASYNC230, SIM115 - a device opens at once
        with handle, pytest.raises(ValueError, match="not a regular file"):
            await client.tasks.create_with_files("pkg::blk", {}, handle)
    assert transport.received == []


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc")
@pytest.mark.anyio
async def test_a_proc_file_with_a_false_size_is_refused_before_any_request() -> None:
    transport = _nothing_sent()
    async with make_client(transport=transport) as client:
        with pytest.raises(ValueError, match="size of 0 but has content"):
            await client.tasks.create_with_files("pkg::blk", {}, "/proc/self/status")
        handle = open("/proc/self/status", "rb")  # noqa: ASYNC230, SIM115 - opens at once
        with handle, pytest.raises(ValueError, match="size of 0 but has content"):
            await client.tasks.create_with_files("pkg::blk", {}, handle)
    assert transport.received == []


@pytest.mark.anyio
async def test_an_empty_regular_file_is_still_fine(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    received, _ = await upload(empty)
    (part,) = file_parts(received.parts)
    assert bytes(part.data) == b""


@pytest.mark.parametrize("change", ["grow", "shrink"])
@pytest.mark.anyio
async def test_a_file_that_changes_size_while_uploading_is_a_named_error_not_retried(
    tmp_path: pathlib.Path, change: str, emulator_url: str
) -> None:
    """Over real sockets and the default lanes: without the check h11 refuses the body
    with its own LocalProtocolError."""
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * (3 * CHUNK_SIZE))
    attempts = []

    def on_request(event: RequestEvent) -> None:
        if event.method != "POST":
            return
        attempts.append(event)
        if change == "grow":
            with path.open("ab") as handle:
                handle.write(b"more")
        else:
            path.write_bytes(b"x" * 10)

    async with OomolConnectClient(base_url=emulator_url, on_request=on_request) as client:
        with pytest.raises(UploadChangedError, match="grew" if change == "grow" else "shrank"):
            await client.tasks.create_with_files("demo::count-bytes", {}, path)
        assert await client.tasks.list() == {"tasks": []}
    assert len(attempts) == 1


class _DropsMidBody(httpx.AsyncBaseTransport):
    """Reads the body up to the first bytes of its file, then loses the connection."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        chunks = 0
        async for _ in request.stream:
            chunks += 1
            if chunks == 3:  # the fields, the file's part header, its first chunk
                break
        raise httpx.WriteError("connection lost while sending")


@pytest.mark.anyio
async def test_an_aborted_upload_closes_its_file_at_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"y" * (4 * CHUNK_SIZE))
    opened: list[Any] = []

    def recording_open(*args: Any, **kwargs: Any) -> Any:
        handle = open(*args, **kwargs)  # noqa: SIM115 - closed by the code under test
        opened.append(handle)
        return handle

    monkeypatch.setattr(multipart_module, "open", recording_open, raising=False)
    async with make_client(transport=_DropsMidBody()) as client:
        with pytest.raises(ConnectionError):
            await client.tasks.create_with_files("pkg::blk", {}, path)
        assert opened
        assert all(handle.closed for handle in opened)  # before any garbage collection


@pytest.mark.anyio
async def test_a_file_object_closed_by_its_owner_mid_upload_is_an_upload_error() -> None:
    data = io.BytesIO(b"z" * 1000)

    def close_it(event: RequestEvent) -> None:
        data.close()

    transport = StreamingTransport(ok)
    async with make_client(transport=transport, on_request=close_it) as client:
        with pytest.raises(UploadError, match="could not be read") as info:
            await client.tasks.create_with_files("pkg::blk", {}, data)
    assert isinstance(info.value.__cause__, ValueError)
    assert not isinstance(info.value, UploadChangedError)
