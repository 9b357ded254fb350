"""Command line: `python -m oomol_connect_anyio.emulator`."""

from __future__ import annotations

import argparse
import json
import signal
from typing import Any

import anyio

from ._emulator import Emulator
from ._faults import FaultRule, rules_from_json
from ._server import serve_emulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oomol_connect_anyio.emulator",
        description="Serve an emulated Oomol Connect API (demo blocks, fault injection).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    parser.add_argument("--token", help="enforce this token in the Authorization header")
    parser.add_argument("--auth", choices=["none", "raw", "raw-or-bearer"])
    parser.add_argument("--envelope", choices=["current", "bare"], default="current")
    parser.add_argument("--queue-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--log-trail", type=float, default=0.0, metavar="S")
    parser.add_argument("--install-duration", type=float, default=0.05, metavar="S")
    parser.add_argument("--max-finished-tasks", type=int, metavar="N")
    parser.add_argument("--fault-config", metavar="JSON_FILE", help="a JSON list of FaultRule")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    return parser


def _fault_rules(path: str) -> list[FaultRule]:
    with open(path, encoding="utf-8") as file:
        data: Any = json.load(file)
    if not isinstance(data, list):
        raise TypeError("the fault config must be a JSON list of rule objects")
    return rules_from_json(data)


async def _serve_until_signal(emulator: Emulator, host: str, port: int) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serve_emulator(emulator, host=host, port=port) as url:
            print(f"Oomol Connect emulator listening on {url}", flush=True)
            async for _ in signals:
                return


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        emulator = Emulator(
            token=args.token,
            auth=args.auth,
            envelope=args.envelope,
            queue_delay=args.queue_delay,
            log_trail=args.log_trail,
            install_duration=args.install_duration,
            seed=args.seed,
            max_finished_tasks=args.max_finished_tasks,
        )
        for rule in _fault_rules(args.fault_config) if args.fault_config else []:
            emulator.faults.add(rule)
    except (OSError, TypeError, ValueError) as exc:
        parser.error(str(exc))
    anyio.run(_serve_until_signal, emulator, args.host, args.port, backend=args.backend)
    return 0
