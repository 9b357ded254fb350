"""``main``: parse, run the command within its bounds, and map every failure to one line, one
exit code and (with ``--json``) one JSON document."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
from functools import partial

import anyio

from .. import AuthenticationError, ConnectionError, RequestTimeoutError
from ._bounds import EndedEarly, Interrupted, run_bounded
from ._errors import Exit, UsageError, exit_code, primary_error
from ._ledger import Ledger
from ._options import ENV_BASE_URL, base_urls
from ._parser import build_parser
from ._render import Output

ENV_TOKEN = "OOMOL_CONNECT_TOKEN"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        raise UsageError("--backend trio needs trio: pip install 'oomol-connect-anyio[trio]'")
    args.base_urls = base_urls(args.base_url, os.environ.get(ENV_BASE_URL))
    return args


def main(argv: list[str] | None = None) -> int:
    """The ``oomol-connect`` command; returns the exit status (see ``--help``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    secret = os.environ.get(ENV_TOKEN)
    try:
        args = _parse(argv)
    except UsageError as exc:
        # Before parsing succeeded, --json is known only by its presence.
        return _fail(Output(json_mode="--json" in argv, secret=secret), exc, Ledger())
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else Exit.OK
    out = Output(json_mode=args.json, secret=args.token or secret, quiet=args.quiet)
    ledger = args.ledger = Ledger()
    try:
        if not args.in_loop:
            return int(args.handler(args, out))
        return int(anyio.run(_in_loop, args, out, backend=args.backend))
    except BaseException as exc:
        error = primary_error(exc)
        if isinstance(error, BrokenPipeError):
            _silence_stdout()
            return Exit.BROKEN_PIPE
        if isinstance(error, Interrupted) and args.ends_on_signal:
            return Exit.OK
        if isinstance(error, KeyboardInterrupt):  # before the signal receiver was in place
            error = Interrupted(signal.SIGINT, ledger)
        if not isinstance(error, EndedEarly) and exit_code(error) is None:
            raise
        return _fail(out, error, ledger)


async def _in_loop(args: argparse.Namespace, out: Output) -> int:
    """The command's handler, ended early by a signal or ``--timeout`` (see ``_bounds``)."""
    command = partial(args.handler, args, out)
    report = partial(_fail, out, ledger=args.ledger)
    return int(await run_bounded(command, args.ledger, report, deadline_s=args.timeout))


def _fail(out: Output, error: BaseException, ledger: Ledger) -> int:
    """One error line on stderr (and the error document with ``--json``); the exit code."""
    code = error.exit_code if isinstance(error, EndedEarly) else exit_code(error)
    code = Exit.UNEXPECTED if code is None else code
    message = describe(error)
    out.error(message)
    if out.json_mode and not out.wrote_document:
        task = getattr(error, "task_id", None) or (ledger.created[-1] if ledger.created else None)
        out.json(out.redact({
            "ok": False,
            "error": message,
            "error_type": type(error).__name__,
            "exit_code": int(code),
            "task_id": task,
        }), compact=True)
    return int(code)


def describe(error: BaseException) -> str:
    """The error as a CLI user needs it: what failed and what to do, without Python names."""
    if isinstance(error, ConnectionError):
        cause = error.__cause__
        reason = (str(cause) or type(cause).__name__) if cause is not None else str(error)
        where = f"{error.request_method} {error.url}".strip()
        if isinstance(error, RequestTimeoutError):
            message = f"no answer to {where} within the request timeout (--request-timeout)"
        else:
            message = f"cannot reach the server ({where}): {reason}"
        if error.may_have_reached_server:
            message += (
                "; the request may have reached the server, so what it creates may exist: "
                "look with 'oomol-connect tasks list --status running' or "
                "'oomol-connect packages install-tasks' before trying again"
            )
        return message
    if isinstance(error, AuthenticationError):
        return (
            f"{error}: give the API token with --token or $OOMOL_CONNECT_TOKEN, raw "
            "(a 'Bearer ' prefix is rejected)"
        )
    return str(error)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so that flushing it at exit cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test harness
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


__all__ = ["main"]
