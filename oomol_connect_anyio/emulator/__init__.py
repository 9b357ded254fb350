"""Oomol Connect emulator: an in-memory Connect server for tests and benchmarks.

Start it from the command line (the first stdout line gives the URL)::

    python -m oomol_connect_anyio.emulator --port 3000 [--token T] [--auth none|raw|raw-or-bearer]
        [--envelope current|bare] [--queue-delay S] [--log-trail S] [--install-duration S]
        [--max-finished-tasks N] [--fault-config rules.json] [--seed N] [--backend asyncio|trio]
    # Oomol Connect emulator listening on http://127.0.0.1:3000/api

or in-process, under trio or asyncio::

    emu = Emulator(token="secret", queue_delay=0.05)
    async with serve_emulator(emu, port=0) as url:   # "http://127.0.0.1:<port>/api"
        ...

`emu.app` is a plain ASGI app, usable without sockets through `httpx.ASGITransport`.
Every route of the Connect API is served under `/` and `/api`, plus `GET /__emulator/stats`,
`POST /__emulator/reset-stats`, `GET /__emulator/tasks`, `GET|POST|DELETE /__emulator/faults`
(fault rules as JSON) and `POST /__emulator/log-trail` (never authenticated or faulted).

Demo blocks (package `demo` 1.0.0; an older `demo` 0.9.0 `echo` is listed too):
`demo::echo` (result = inputs), `demo::sleep` (`seconds`, default 1), `demo::fail`
(`message`), `demo::progress` (`steps`, `seconds`), `demo::upper` (`text`),
`demo::count-bytes` (uploaded files' sizes and sha256), `demo::log-flood` (`lines`,
`seconds`), and the two-node flow `demo-flow` (`text` -> upper-cased). Installable packages:
`text-tools` (`reverse`, `word-count`) and `image-tools` (`thumbnail`).

Knobs: `token`/`auth` (raw `Authorization` token, optionally `Bearer`), `envelope="bare"`
(older servers' bare task bodies), `queue_delay` (seconds "created" before "running"),
`log_trail` (closing logs lag the terminal status; also `emu.log_trail = s`),
`install_duration`, `seed` and `emu.faults.add(FaultRule(...))` (errors, errors after the
request was handled, 429 + Retry-After, latency, hangs, dropped connections, for routes
matching a pattern such as `"GET *"` or `"POST /v1/tasks/{id}/stop"`, within an optional
`start` + `duration` window; `FaultRule.outage(seconds)` answers every route 503;
`max_active=K` answers 429 + `retry_after` while K tasks or more are active),
`max_finished_tasks` (memory bound), `emu.register_block(...)` for custom blocks.
Statuses are computed from the clock on each request: nothing runs in the
background. `emu.stats()` counts requests, statuses and faults per route template;
`emu.counters.answer_log` holds the last 10,000 answers in order, as (route, status).

A dropped connection (`drop_rate`) starts a 200 response announcing 64 bytes and closes
the connection without them: over a socket httpx raises `httpx.RemoteProtocolError`
("peer closed connection without sending complete message body"); over
`httpx.ASGITransport` the app raises `DroppedConnection`, a subclass of it.
"""

from ._blocks import BlockContext
from ._emulator import Emulator
from ._faults import DroppedConnection, FaultRule
from ._multipart import UploadedFile
from ._server import serve_emulator

__all__ = [
    "BlockContext",
    "DroppedConnection",
    "Emulator",
    "FaultRule",
    "UploadedFile",
    "serve_emulator",
]
