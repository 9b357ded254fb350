"""Multipart uploads: streamed, hashed, and rejected clearly when malformed."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from oomol_connect_anyio.emulator import Emulator

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


async def _result(client, task_id):
    logs = (await client.get(f"/v1/tasks/{task_id}/logs")).json()["logs"]
    return logs[-2]["event"]["result"]


async def test_count_bytes(client_for):
    emu = Emulator()
    contents = {"a.txt": b"hello", "empty.bin": b"", "big.bin": os.urandom(3 * MIB + 17)}
    files = [("files", (name, data, "application/octet-stream")) for name, data in contents.items()]
    async with client_for(emu) as client:
        response = await client.post(
            "/v1/tasks", data={"manifest": "demo::count-bytes"}, files=files
        )
        assert response.status_code == 200, response.text
        task_id = response.json()["task"]["id"]
        result = await _result(client, task_id)
    assert result == {
        "files": [
            {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in contents.items()
        ],
        "total": sum(len(data) for data in contents.values()),
    }
    uploaded = emu.tasks[task_id].files
    assert [f.head for f in uploaded[:2]] == [b"hello", b""]
    assert uploaded[2].head == contents["big.bin"][:MIB]
    assert uploaded[0].content_type == "application/octet-stream"


async def test_fields_and_unicode_names(client_for):
    emu = Emulator()
    values = [{"nodeId": "_", "inputs": [{"handle": "text", "value": "hé"}]}]
    async with client_for(emu) as client:
        response = await client.post(
            "/v1/tasks",
            data={"blockId": "demo::upper", "inputValues": json.dumps(values), "other": "ignored"},
            files=[("files", ("résumé.txt", b"x", "text/plain"))],
        )
        assert response.status_code == 200, response.text
        task = emu.tasks[response.json()["task"]["id"]]
        assert task.input_values == values
        assert task.files[0].name == "résumé.txt"
        assert task.files[0].content_type == "text/plain"
        assert await _result(client, task.id) == {"text": "HÉ"}


async def test_forms_one_and_two_in_multipart(client_for):
    async with client_for(Emulator()) as client:
        for values in ({"text": "a"}, [{"handle": "text", "value": "a"}]):
            response = await client.post(
                "/v1/tasks",
                data={"manifest": "demo::upper", "inputValues": json.dumps(values)},
                files=[("files", ("f", b"1"))],
            )
            assert await _result(client, response.json()["task"]["id"]) == {"text": "A"}


def _multipart(boundary: str, *parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


MANIFEST_PART = b'Content-Disposition: form-data; name="manifest"\r\n\r\ndemo::count-bytes'
FILE_PART = b'Content-Disposition: form-data; name="files"; filename="a"\r\n\r\nabc'


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (_multipart("b", MANIFEST_PART), "multipart/form-data", 400, "without a boundary"),
        (_multipart("b", MANIFEST_PART), "application/json", 415, "multipart/form-data"),
        (_multipart("b", MANIFEST_PART, FILE_PART), None, 415, "boundary"),
        (
            _multipart("b", MANIFEST_PART, FILE_PART, close=False),
            "multipart/form-data; boundary=b",
            400,
            "incomplete multipart body",
        ),
        (b"garbage", "multipart/form-data; boundary=b", 400, "multipart body"),
        (
            _multipart("b", b'Content-Disposition: form-data; name="inputValues"\r\n\r\n{x'),
            "multipart/form-data; boundary=b",
            400,
            "invalid JSON inputValues field",
        ),
        (_multipart("b", FILE_PART), "multipart/form-data; boundary=b", 400, "missing manifest"),
    ],
)
async def test_bad_multipart(client_for, post_bytes, content, content_type, status, message):
    headers = {"Content-Type": content_type} if content_type else {}
    async with client_for(Emulator()) as client:
        # the emulator may answer before reading the whole body
        response = await post_bytes(client, "/v1/tasks", content, headers)
    assert response.status_code == status, response.text
    assert response.json()["success"] is False
    assert message in response.json()["message"]


async def test_hand_written_multipart_with_nameless_file(client_for):
    emu = Emulator()
    part = b'Content-Disposition: form-data; name="files"\r\nContent-Type: image/png\r\n\r\n\x89PNG'
    body = _multipart("xyz", MANIFEST_PART, part)
    async with client_for(emu) as client:
        response = await client.post(
            "/v1/tasks", content=body, headers={"Content-Type": "multipart/form-data; boundary=xyz"}
        )
        assert response.status_code == 200, response.text
        file = emu.tasks[response.json()["task"]["id"]].files[0]
    assert (file.name, file.size, file.content_type, file.head) == ("", 4, "image/png", b"\x89PNG")


async def test_streamed_upload_in_small_chunks(client_for):
    emu = Emulator()
    data = os.urandom(2 * MIB)
    body = _multipart(
        "s",
        MANIFEST_PART,
        b'Content-Disposition: form-data; name="files"; filename="s"\r\n\r\n' + data,
    )

    async def chunks():
        for start in range(0, len(body), 7919):
            yield body[start : start + 7919]

    async with client_for(emu) as client:
        response = await client.post(
            "/v1/tasks",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=s"},
        )
        assert response.status_code == 200, response.text
        result = await _result(client, response.json()["task"]["id"])
    assert result["files"] == [
        {"name": "s", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    ]
