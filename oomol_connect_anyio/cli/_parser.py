"""The command line's grammar: global options, commands, and which handler runs each."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from .. import __version__
from . import _commands as commands
from . import _tasks as tasks
from ._completion import completion
from ._demo import demo
from ._emulator import add_emulator_options, emulator
from ._errors import EPILOG, UsageError
from ._inputs import (
    assignment,
    jobs_file,
    json_file,
    manifest,
    package_name,
    readable_file,
    task_id,
)
from ._options import positive_float, positive_int, shard
from ._render import PROG
from ._run import run
from ._run_many import run_many

STATUSES = ("created", "pending", "running", "completed", "failed", "stopped")


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
        "--base-url", action="append", default=default(None), metavar="URL",
        help="server URL (default: $OOMOL_CONNECT_BASE_URL or http://localhost:3000/api); "
        "run-many takes it several times (or a comma-separated $OOMOL_CONNECT_BASE_URL) "
        "to spread its jobs over those servers",
    )
    group.add_argument(
        "--token", default=default(None),
        help="API token, raw, without 'Bearer ' (default: $OOMOL_CONNECT_TOKEN); never printed",
    )
    group.add_argument(
        "--backend", choices=("asyncio", "trio"), default=default("asyncio"),
        help="event loop to run on (default: asyncio)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False),
        help="machine output: one JSON document on stdout, success or failure "
        "(streaming commands: one per line)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default(False),
        help="no progress and no task log lines on stderr (errors are still shown)",
    )
    group.add_argument(
        "--timeout", type=positive_float, default=default(None), metavar="S",
        help="end the whole command after S seconds, stopping the tasks it created (exit 5)",
    )
    group.add_argument(
        "--request-timeout", type=positive_float, default=default(30.0), metavar="S",
        help="give up on one HTTP request after S seconds without an answer (default: 30)",
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
    parser.set_defaults(handler=handler, in_loop=True, ends_on_signal=False)
    return parser


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
        "-i", "--input", type=assignment, action="append", default=[],
        metavar="HANDLE=VALUE",
        help="an input value: a string unless the block declares another type "
        "(-i text=hi, -i zip=01234); HANDLE:=JSON for a JSON value (-i n:=3, -i tags:='[1]'); "
        "NODE.HANDLE=VALUE for a flow's node input, as 'flows' lists them",
    )
    p.add_argument(
        "--inputs-json", type=json_file, metavar="FILE",
        help="input values from a JSON file ('-' for stdin); -i values override its keys",
    )
    p.add_argument(
        "--file", type=readable_file, action="append", default=[], metavar="PATH",
        help="upload a file with the task (repeatable)",
    )

    p = _command(
        sub, common, "run-many", run_many,
        "run a JSONL batch of tasks concurrently, writing outcomes as JSON lines",
        **raw,
    )
    p.add_argument(
        "jobs", type=jobs_file, metavar="JOBS.jsonl",
        help='one {"manifest": ..., "inputValues": ...} per line (\'-\' for stdin); '
        "outcome indexes count its jobs from 0, error messages its lines from 1",
    )
    p.add_argument("-c", "--concurrency", type=positive_int, default=8, metavar="N",
                   help="tasks running at once on each server (default: 8)")
    p.add_argument(
        "--shard", type=shard, metavar="I/N",
        help="run only the jobs whose 0-based index is I modulo N (outcome indexes stay "
        "those of the whole file), so that N machines split one batch; give each its "
        "own --journal",
    )
    p.add_argument(
        "-o", "--output", metavar="OUT.jsonl",
        help="write outcomes there (the summary then goes to stdout); "
        "default: outcomes on stdout, summary on stderr",
    )
    p.add_argument("--fail-fast", action="store_true",
                   help="on the first failure, stop every other task and exit")
    p.add_argument(
        "--journal", metavar="BATCH.journal",
        help="record the batch there (intent, task id, outcome per job) so that it can be "
        "resumed after Ctrl-C, a kill or a crash without creating any task twice",
    )
    p.add_argument(
        "--resume", action="store_true",
        help="go on with the batch of an existing --journal, appending to -o; without it an "
        "existing journal or -o file is refused",
    )
    p.add_argument(
        "--retry-failed", action="store_true",
        help="with --resume: run the jobs that failed last time again, as new tasks",
    )
    p.add_argument(
        "--task-timeout", type=positive_float, metavar="S",
        help="give up on each task after S seconds (it is stopped; its outcome: TimeoutError)",
    )

    group = _command(sub, common, "tasks", None, "list, inspect, follow and stop tasks")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(actions, common, "list", tasks.tasks_list, "list tasks, newest first")
    p.add_argument("--status", choices=STATUSES, help="only tasks with this status")
    p.add_argument("--manifest", metavar="M", help="only tasks of this block ('pkg::block')")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N tasks")
    for name, handler, text in (
        ("get", tasks.tasks_get, "show one task"),
        ("logs", tasks.tasks_logs, "show a task's logs"),
        ("result", tasks.tasks_result, "print a task's result (exit code by its status)"),
        ("watch", tasks.tasks_watch, "follow a task's progress and logs until it ends"),
        ("stop", tasks.tasks_stop, "stop a task"),
    ):
        p = _command(actions, common, name, handler, text)
        p.add_argument("task_id", type=task_id, metavar="ID")

    p = _command(sub, common, "blocks", commands.blocks, "list the installed blocks")
    p.add_argument("--all-versions", action="store_true",
                   help="every installed version, not only each package's latest")
    _command(sub, common, "flows", commands.flows, "list the flows (served by exported images)")

    group = _command(sub, common, "packages", None, "list and install packages")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(actions, common, "list", commands.packages_list, "list installed packages")
    p = _command(actions, common, "install", commands.packages_install, "install a package")
    p.add_argument("name", type=package_name)
    p.add_argument("--version", metavar="V", help="the version (default: the latest)")
    p.add_argument("--wait", action="store_true", help="wait until the install ends")
    _command(actions, common, "install-tasks", commands.install_tasks, "list install tasks")

    p = _command(
        sub, common, "emulator", emulator,
        "serve the Connect emulator until Ctrl-C (the global --token becomes the token it "
        "requires); the first line on stdout gives its URL",
    )
    add_emulator_options(p)
    p.set_defaults(ends_on_signal=True)
    _command(
        sub, common, "demo", demo,
        "run a few demo tasks on an embedded emulator (no account or server needed)",
    )
    p = _command(
        sub, common, "completion", completion,
        "print a shell completion script (bash: eval \"$(oomol-connect completion bash)\")",
    )
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    p.set_defaults(in_loop=False)
    return parser
