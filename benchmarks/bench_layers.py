"""Client-side cost without sockets: each layer's CPU per poll and per ``run()``.

    python benchmarks/bench_layers.py [--iterations 2000] [--rounds 7] [--quick]

Every client talks to the same in-process ``httpx.MockTransport`` (canned Connect
answers: no server, no sockets, no kernel), so what is left is the Python cost of each
layer, far less noisy than over loopback:

* ``httpx floor``: ``AsyncClient.request`` with client-level headers, ``json.loads``;
* ``httpx floor + per-request options``: the same, passing a copied ``httpx.Headers``,
  an ``httpx.Auth`` and a ``Timeout`` on every call, as this client's transport does;
* this client's ``tasks.get`` / ``tasks.create`` / ``tasks.run`` (asyncio and trio);
* the official client's ``tasks.get`` / ``tasks.run`` (its private ``_http_client`` is
  swapped for one with the mock transport and the same headers: a benchmark-only hack).

``run`` is create + one status poll (already completed) + one log fetch for everyone.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _common
import httpx
from _common import Report, median
from oomol_connect_sdk import OomolConnectClient as OfficialClient

from oomol_connect_anyio import OomolConnectClient as OurClient

URL = "http://connect.invalid/api"
TOKEN = "token"
_TASK = {"id": "t1", "status": "completed", "project_id": "p", "manifest_path": "/demo/echo",
         "created_at": 1, "updated_at": 2}
_LOG_TYPES = ("SessionStarted", "BlockStarted", "BlockFinished", "SessionFinished")
_LOGS = [{"id": n + 1, "type": kind, "session_id": "t1", "node_id": "_",
          "event": {"session_id": "t1", "stacks": [],
                    **({"result": {"text": "hi"}} if kind == "BlockFinished" else {})}}
         for n, kind in enumerate(_LOG_TYPES)]
BODIES = {
    "task": json.dumps({"task": _TASK, "success": True}).encode(),
    "created": json.dumps({"task": _TASK, "userID": "u", "success": True}).encode(),
    "logs": json.dumps({"logs": _LOGS, "success": True}).encode(),
}
ECHO = {"manifest": "demo::echo", "inputValues": {"text": "hi"}}


def _handler(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/logs"):
        body = BODIES["logs"]
    elif request.method == "POST":
        body = BODIES["created"]
    else:
        body = BODIES["task"]
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})


class _Auth(httpx.Auth):
    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = TOKEN
        yield request


async def session(iterations: int, rounds: int) -> dict[str, list[float]]:
    mock = httpx.MockTransport(_handler)
    ours = OurClient(base_url=URL, api_token=TOKEN, transport=mock)
    official = OfficialClient({"base_url": URL, "api_token": TOKEN})
    await official._http_client.aclose()
    official._http_client = httpx.AsyncClient(timeout=30.0, headers=official._default_headers,
                                              transport=mock)
    floor = httpx.AsyncClient(transport=mock, headers={"Authorization": TOKEN})
    floor_opts = httpx.AsyncClient(transport=mock, follow_redirects=True)
    headers = httpx.Headers({"Accept": "application/json", "User-Agent": "bench"})
    auth, timeout = _Auth(), httpx.Timeout(30.0)

    async def floor_get() -> Any:
        return json.loads((await floor.get(URL + "/v1/tasks/t1")).content)

    async def floor_get_opts() -> Any:
        response = await floor_opts.request("GET", URL + "/v1/tasks/t1", headers=headers.copy(),
                                            auth=auth, timeout=timeout)
        return json.loads(response.content)

    async def floor_run() -> Any:
        body = json.dumps({"manifest": "demo::echo", "inputValues": [
            {"nodeId": "_", "inputs": [{"handle": "text", "value": "hi"}]}]}).encode()
        created = await floor.post(URL + "/v1/tasks", content=body,
                                   headers={"Content-Type": "application/json"})
        task_id = json.loads(created.content)["task"]["id"]
        json.loads((await floor.get(f"{URL}/v1/tasks/{task_id}")).content)
        return json.loads((await floor.get(f"{URL}/v1/tasks/{task_id}/logs")).content)

    ops: dict[str, Callable[[], Awaitable[Any]]] = {
        "poll: httpx floor": floor_get,
        "poll: httpx floor + per-request options": floor_get_opts,
        "poll: ours tasks.get": lambda: ours.tasks.get("t1"),
        "poll: official tasks.get": lambda: official.tasks.get("t1"),
        "create: ours tasks.create": lambda: ours.tasks.create(ECHO),  # type: ignore[arg-type]
        "run: httpx floor (3 requests)": floor_run,
        "run: ours tasks.run": lambda: ours.tasks.run(ECHO),  # type: ignore[arg-type]
        "run: official tasks.run": lambda: official.tasks.run(
            {"blockId": "demo::echo", "inputValues": {"text": "hi"}}),
    }
    results: dict[str, list[float]] = {name: [] for name in ops}
    try:
        for op in ops.values():
            for _ in range(100):
                await op()
        for _ in range(rounds):
            for name, op in ops.items():
                gc.collect()
                cpu = time.process_time()
                for _ in range(iterations):
                    await op()
                results[name].append((time.process_time() - cpu) / iterations * 1e6)
    finally:
        for client in (floor, floor_opts):
            await client.aclose()
        await ours.aclose()
        await official.close()
    return results


def main(argv: list[str] | None = None) -> Report:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.rounds = 200, 3
    report = Report("Client-side layers without sockets (httpx.MockTransport)",
                    _common.command(__file__, argv),
                    {"iterations": args.iterations, "rounds": args.rounds})
    by_backend = {b: _common.run_on(b, session, args.iterations, args.rounds)
                  for b in ("asyncio", "trio")}
    table = report.table(
        "CPU per operation in microseconds, median of rounds (no network: the Python layers "
        "only); the official client runs on asyncio only, its trio cells are empty",
        ["operation", "asyncio us", "trio us", "vs httpx floor (asyncio)"],
    )
    floors = {"poll": "poll: httpx floor", "run": "run: httpx floor (3 requests)",
              "create": "poll: httpx floor"}
    summary: dict[str, dict[str, float]] = {}
    for name in by_backend["asyncio"]:
        values = {b: median(by_backend[b][name]) for b in by_backend}
        summary[name] = values
    for name, values in summary.items():
        floor = summary[floors[name.split(":")[0]]]["asyncio"]
        trio = None if "official" in name else values["trio"]
        table.add(name, values["asyncio"], trio, _common.ratio(values["asyncio"], floor))
    own = summary["run: ours tasks.run"]["asyncio"] - summary[
        "run: httpx floor (3 requests)"]["asyncio"]
    report.notes.append(
        f"This client's own logic per run() (ours minus the floor's 3 requests, asyncio): "
        f"{own:.0f} us. 'per-request options' is what passing headers=, auth= and timeout= "
        "on every request costs inside httpx.")
    report.raw = {"by_backend": by_backend}
    report.finish(args)
    return report


if __name__ == "__main__":
    main()
