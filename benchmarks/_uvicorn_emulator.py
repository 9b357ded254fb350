"""The emulator's ASGI app under uvicorn + httptools, in its own process (benchmarks only).

Same first line as ``python -m oomol_connect_anyio.emulator``::

    python benchmarks/_uvicorn_emulator.py --port 0 --token T [--max-finished-tasks N]
    # Oomol Connect emulator listening on http://127.0.0.1:PORT/api

Hypercorn (the emulator's own server) spends several times more CPU per request than
uvicorn with the httptools parser; on a 2-core machine shared with the client, a slow
server makes a client benchmark measure the server. No fault injection here.
"""

from __future__ import annotations

import argparse
import json
import socket

import uvicorn

from oomol_connect_anyio.emulator import Emulator, FaultRule


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token")
    parser.add_argument("--max-finished-tasks", type=int)
    parser.add_argument("--queue-delay", type=float, default=0.0)
    parser.add_argument("--fault-config", help="a JSON list of FaultRule fields (latency only "
                        "makes sense here: dropped connections need hypercorn)")
    args = parser.parse_args()
    emulator = Emulator(
        token=args.token,
        queue_delay=args.queue_delay,
        max_finished_tasks=args.max_finished_tasks,
    )
    if args.fault_config:
        with open(args.fault_config, encoding="utf-8") as file:
            for rule in json.load(file):
                fields = {k: tuple(v) if isinstance(v, list) else v for k, v in rule.items()}
                emulator.faults.add(FaultRule(**fields))
    sock = socket.create_server((args.host, args.port), backlog=2048)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = uvicorn.Config(
        emulator.app,
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        timeout_keep_alive=60,
        backlog=2048,
    )
    port = sock.getsockname()[1]
    print(f"Oomol Connect emulator listening on http://{args.host}:{port}/api", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
