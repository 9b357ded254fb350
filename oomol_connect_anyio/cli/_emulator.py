"""``emulator``: serve the Connect emulator (the ``emulator`` extra) until a signal."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from ._errors import LocalError, UsageError
from ._options import positive_float
from ._render import Output


@contextmanager
def emulator_extra() -> Iterator[None]:
    """Around an import of the emulator: a missing extra becomes one usage line."""
    try:
        yield
    except ImportError as exc:
        raise UsageError(
            f"this command needs the 'emulator' extra ({exc}): "
            "pip install 'oomol-connect-anyio[emulator]'"
        ) from None


def add_emulator_options(parser: argparse.ArgumentParser) -> None:
    """The emulator's knobs (see ``oomol_connect_anyio.emulator.Emulator``)."""
    group = parser.add_argument_group("emulator options")
    group.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    group.add_argument("--port", type=int, default=3000, help="0 picks a free port (default: 3000)")
    group.add_argument("--auth", choices=("none", "raw", "raw-or-bearer"),
                       help="how the token is checked (default: raw with --token, else none)")
    group.add_argument("--envelope", choices=("current", "bare"), default="current",
                       help="'bare': task bodies as older servers send them")
    group.add_argument("--queue-delay", type=positive_float, default=0.0, metavar="S",
                       help="seconds a task stays 'created' before it runs")
    group.add_argument("--log-trail", type=positive_float, default=0.0, metavar="S",
                       help="seconds the closing logs lag the terminal status")
    group.add_argument("--install-duration", type=positive_float, default=0.05, metavar="S",
                       help="seconds a package install takes")
    group.add_argument("--max-finished-tasks", type=int, metavar="N",
                       help="forget the oldest finished tasks beyond N")
    group.add_argument("--fault-config", metavar="JSON_FILE",
                       help="a JSON list of fault rules (FaultRule fields: route, error_rate, "
                       "latency, hang, drop_rate, ...)")
    group.add_argument("--seed", type=int, help="seed of the faults' random draws")


def _rule_fields(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(rule, dict) for rule in data):
        raise ValueError("expected a JSON list of rule objects")
    return [
        {key: tuple(v) if isinstance(v, list) else v for key, v in rule.items()} for rule in data
    ]


def _fault_rules(path: str) -> list[Any]:
    from ..emulator import FaultRule

    try:
        with open(path, encoding="utf-8") as file:
            data: Any = json.load(file)
        return [FaultRule(**rule) for rule in _rule_fields(data)]
    except (OSError, TypeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"--fault-config {path}: {reason}") from None


async def emulator(args: argparse.Namespace, out: Output) -> int:
    """Serve until SIGINT or SIGTERM (then exit 0); the first stdout line gives the URL."""
    with emulator_extra():
        from ..emulator import Emulator, serve_emulator

    try:
        emu = Emulator(
            token=args.token, auth=args.auth, envelope=args.envelope,
            queue_delay=args.queue_delay, log_trail=args.log_trail,
            install_duration=args.install_duration, seed=args.seed,
            max_finished_tasks=args.max_finished_tasks,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"emulator: {exc}") from None
    for rule in _fault_rules(args.fault_config) if args.fault_config else []:
        emu.faults.add(rule)
    try:
        async with serve_emulator(emu, host=args.host, port=args.port) as url:
            if out.json_mode:
                out.json({"ok": True, "url": url}, compact=True)
            else:
                print(f"Oomol Connect emulator listening on {url}", flush=True)
            await anyio.sleep_forever()
    except OSError as exc:  # binding the port: in use, not allowed, no such address
        if isinstance(exc, BrokenPipeError):
            raise
        where = f"{args.host}:{args.port}"
        raise LocalError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return 0
