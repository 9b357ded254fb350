"""The floors the client is measured against: no SDK logic at all.

* ``HttpxFloor``: one shared ``httpx.AsyncClient``, ``GET``/``POST`` and ``json.loads``.
* ``H11Floor``: HTTP/1.1 with h11 over anyio sockets, keep-alive connections reused
  (no timeouts, no TLS, no retries): the cheapest Python client one can write.

Both expose ``create``, ``get``, ``logs`` and ``run`` (create, poll at a fixed
interval until terminal, fetch the logs once), the same requests as ``tasks.run``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
import httpx

TERMINAL = frozenset({"completed", "failed", "stopped"})


class _FloorBase:
    async def request(self, method: str, path: str, body: Any = None) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def create(self, manifest: str, inputs: dict[str, Any]) -> str:
        handles = [{"handle": key, "value": value} for key, value in inputs.items()]
        values = [{"nodeId": "_", "inputs": handles}]
        payload = {"manifest": manifest, "inputValues": values}
        body = await self.request("POST", "/v1/tasks", payload)
        return str(body["task"]["id"])

    async def get(self, task_id: str) -> dict[str, Any]:
        body = await self.request("GET", f"/v1/tasks/{task_id}")
        return dict(body.get("task", body))

    async def logs(self, task_id: str) -> list[dict[str, Any]]:
        return list((await self.request("GET", f"/v1/tasks/{task_id}/logs"))["logs"])

    async def run(self, manifest: str, inputs: dict[str, Any], interval: float) -> dict[str, Any]:
        task_id = await self.create(manifest, inputs)
        while True:
            task = await self.get(task_id)
            if task["status"] in TERMINAL:
                break
            await anyio.sleep(interval)
        return {"task": task, "logs": await self.logs(task_id)}


class HttpxFloor(_FloorBase):
    """Plain httpx: one shared ``AsyncClient``, nothing else."""

    def __init__(self, base_url: str, token: str | None,
                 limits: httpx.Limits | None = None) -> None:
        headers = {"Authorization": token} if token else {}
        self.base = base_url.rstrip("/")
        # httpx's own default pool: 100 connections, 20 kept alive.
        self.client = httpx.AsyncClient(headers=headers, limits=limits or httpx.Limits(
            max_connections=100, max_keepalive_connections=20))

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        content = None if body is None else json.dumps(body).encode()
        headers = None if body is None else {"Content-Type": "application/json"}
        response = await self.client.request(method, self.base + path, content=content,
                                             headers=headers)
        return json.loads(response.content)

    async def aclose(self) -> None:
        await self.client.aclose()


class _H11Connection:
    __slots__ = ("conn", "stream")

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def roundtrip(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                        body: bytes | None) -> tuple[int, bytes]:
        conn = self.conn
        data = conn.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await self.stream.send(data)
        status = 0
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await self.stream.receive(65536))
                except anyio.EndOfStream:
                    conn.receive_data(b"")
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data:
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.ConnectionClosed:
                raise ConnectionError("server closed the connection")
        conn.start_next_cycle()
        return status, b"".join(chunks)


class H11Floor(_FloorBase):
    """h11 over anyio sockets with keep-alive reuse: a raw HTTP/1.1 floor."""

    def __init__(self, base_url: str, token: str | None) -> None:
        url = urlsplit(base_url.rstrip("/"))
        if url.scheme != "http":
            raise ValueError("the h11 floor speaks plain http only")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.prefix = url.path.encode()
        self.headers = [(b"host", url.netloc.encode()), (b"accept", b"application/json")]
        if token:
            self.headers.append((b"authorization", token.encode()))
        self.idle: list[_H11Connection] = []

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        conn = self.idle.pop() if self.idle else _H11Connection(
            await anyio.connect_tcp(self.host, self.port))
        headers = self.headers
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers = [*headers, (b"content-type", b"application/json"),
                       (b"content-length", str(len(content)).encode())]
        try:
            _status, data = await conn.roundtrip(method.encode(), self.prefix + path.encode(),
                                                 headers, content)
        except BaseException:
            await anyio.aclose_forcefully(conn.stream)
            raise
        self.idle.append(conn)
        return json.loads(data)

    async def aclose(self) -> None:
        for conn in self.idle:
            await conn.stream.aclose()
        self.idle.clear()
