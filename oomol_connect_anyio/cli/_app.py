"""Argument parsing, dispatch, and the mapping of errors to one line and an exit code."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from functools import partial
from typing import Any, NoReturn

import anyio

from .. import __version__
from . import _commands as commands
from ._demo import demo
from ._emulator import emulator
from ._errors import EPILOG, Exit, UsageError, exit_code, primary_error
from ._inputs import assignment, jobs_file, json_file, manifest, readable_file
from ._ledger import Ledger
from ._options import positive_float, positive_int
from ._render import PROG, Output, error_line
from ._run import run
from ._run_many import run_many
from ._signals import Interrupted, run_until_signalled

ENV_TOKEN = "OOMOL_CONNECT_TOKEN"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (raised, printed by ``main``) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The global options; subcommands accept them too, without overriding earlier ones."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--base-url", default=default(None), metavar="URL",
        help="server URL (default: $OOMOL_CONNECT_BASE_URL or http://localhost:3000/api)",
    )
    group.add_argument(
        "--token", default=default(None),
        help="API token (default: $OOMOL_CONNECT_TOKEN); never printed",
    )
    group.add_argument(
        "--backend", choices=("asyncio", "trio"), default=default("asyncio"),
        help="event loop to run on (default: asyncio)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False),
        help="machine output: one JSON document on stdout, nothing decorative",
    )
    group.add_argument(
        "--poll-interval", type=positive_float, default=default(0.5), metavar="S",
        help="first status-poll interval in seconds, growing 1.5x up to 10 s (default: 0.5)",
    )


def _command(
    group: Any, common: argparse.ArgumentParser, name: str, handler: Any, text: str, **kw: Any
) -> argparse.ArgumentParser:
    """A subcommand: its handler runs in the event loop unless ``in_loop`` is set to False."""
    parser: argparse.ArgumentParser = group.add_parser(
        name, parents=[common], help=text, description=text, allow_abbrev=False, **kw
    )
    parser.set_defaults(handler=handler, in_loop=True)
    return parser


def _timeout(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--timeout", type=positive_float, metavar="S", help=f"give up {what} after S seconds"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Run OOMOL blocks and flows on an Oomol Connect server, and inspect it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, defaults=True)
    common = _Parser(add_help=False, allow_abbrev=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = {"epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}

    p = _command(sub, common, "run", run, "run one block or flow and print its result", **raw)
    p.add_argument("manifest", type=manifest, help="'package::block' or a flow")
    p.add_argument(
        "-i", "--input", type=assignment, action="append", default=[], metavar="HANDLE=VALUE",
        help="an input value, parsed as JSON when it is JSON (-i n=3 -> 3, -i text=hi -> 'hi')",
    )
    p.add_argument(
        "--inputs-json", type=json_file, metavar="FILE",
        help="input values from a JSON file ('-' for stdin); -i values override its keys",
    )
    p.add_argument(
        "--file", type=readable_file, action="append", default=[], metavar="PATH",
        help="upload a file with the task (repeatable)",
    )
    _timeout(p, "waiting (the task is then stopped on the server)")

    p = _command(
        sub, common, "run-many", run_many,
        "run a JSONL batch of tasks concurrently, writing outcomes as JSON lines",
        **raw,
    )
    p.add_argument(
        "jobs", type=jobs_file, metavar="JOBS.jsonl",
        help='one {"manifest": ..., "inputValues": ...} per line (\'-\' for stdin); '
        "outcome indexes count its non-blank lines from 0",
    )
    p.add_argument("-c", "--concurrency", type=positive_int, default=8, metavar="N",
                   help="tasks running at once (default: 8)")
    p.add_argument(
        "-o", "--output", metavar="OUT.jsonl",
        help="write outcomes there (the summary then goes to stdout); "
        "default: outcomes on stdout, summary on stderr",
    )
    p.add_argument("--fail-fast", action="store_true",
                   help="on the first failure, stop every other task and exit")
    _timeout(p, "waiting for each task (it is then stopped on the server)")

    tasks = _command(sub, common, "tasks", None, "list, inspect and stop tasks")
    tasks_sub = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(tasks_sub, common, "list", commands.tasks_list, "list tasks")
    for name, handler, text in (
        ("get", commands.tasks_get, "show one task"),
        ("logs", commands.tasks_logs, "show a task's logs"),
        ("stop", commands.tasks_stop, "stop a task"),
    ):
        _command(tasks_sub, common, name, handler, text).add_argument("task_id", metavar="ID")

    p = _command(sub, common, "blocks", commands.blocks, "list the installed blocks")
    p.add_argument("--all-versions", action="store_true",
                   help="every installed version, not only each package's latest")
    _command(sub, common, "flows", commands.flows, "list the flows (served by exported images)")

    packages = _command(sub, common, "packages", None, "list and install packages")
    packages_sub = packages.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(packages_sub, common, "list", commands.packages_list, "list installed packages")
    p = _command(packages_sub, common, "install", commands.packages_install, "install a package")
    p.add_argument("name")
    p.add_argument("--version", metavar="V", help="the version (default: the latest)")
    p.add_argument("--wait", action="store_true", help="wait until the install ends")
    _timeout(p, "waiting (with --wait)")

    p = _command(
        sub, common, "emulator", emulator,
        "serve the Connect emulator; its other options (--host, --port, --queue-delay, "
        "--fault-config, ...) are passed on to 'python -m oomol_connect_anyio.emulator' "
        "(the global --token becomes the token it requires)",
    )
    p.set_defaults(in_loop=False)
    _command(
        sub, common, "demo", demo,
        "run a few demo tasks on an embedded emulator (no account or server needed)",
    )
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.in_loop:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        raise UsageError("--backend trio needs trio: pip install 'oomol-connect-anyio[trio]'")
    return args


def main(argv: list[str] | None = None) -> int:
    """The ``oomol-connect`` command; returns the exit status (see ``--help``)."""
    secret = os.environ.get(ENV_TOKEN)
    try:
        args = _parse(argv)
    except UsageError as exc:
        error_line(str(exc), secret)
        return Exit.USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else Exit.OK
    out = Output(json_mode=args.json, secret=args.token or secret)
    args.ledger = Ledger()
    try:
        if not args.in_loop:
            return int(args.handler(args, out))
        return int(anyio.run(_in_loop, args, out, backend=args.backend))
    except Interrupted as exc:
        out.error(_interrupted_line(exc, args.ledger))
        return exc.exit_code
    except BaseException as exc:
        error = primary_error(exc)
        if isinstance(error, BrokenPipeError):
            _silence_stdout()
            return Exit.BROKEN_PIPE
        if isinstance(error, KeyboardInterrupt):
            out.error("interrupted; tasks this command started were asked to stop")
            return Exit.INTERRUPTED
        code = exit_code(error)
        if code is None:
            raise
        out.error(f"cannot reach the server: {error}" if code is Exit.CONNECTION else str(error))
        return code


async def _in_loop(args: argparse.Namespace, out: Output) -> int:
    """The command's handler, ended by SIGINT, SIGTERM or SIGHUP (see ``_signals``)."""
    return int(await run_until_signalled(partial(args.handler, args, out), out, args.ledger))


def _interrupted_line(interrupt: Interrupted, ledger: Ledger) -> str:
    leftovers = ledger.leftovers()
    if leftovers is not None:
        return f"{interrupt}; {leftovers}"
    if ledger.created:
        return f"{interrupt}; the tasks this command created were stopped or had ended"
    return f"{interrupt}; this command created no task"


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so that flushing it at exit cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test harness
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
