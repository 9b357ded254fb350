"""From command-line options to a client and to polling options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import OomolConnectClient, PollingOptions
from ._errors import UsageError


def positive_float(text: str) -> float:
    """argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def open_client(args: argparse.Namespace) -> OomolConnectClient:
    """The client for ``--base-url``/``--token`` (or their environment variables)."""
    try:
        return OomolConnectClient(
            base_url=args.base_url,
            api_token=args.token,
            timeout=args.request_timeout,
            on_request=args.ledger.on_request,
            on_response=args.ledger.on_response,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def polling_options(
    args: argparse.Namespace,
    *,
    on_progress: Callable[..., Any] | None = None,
    on_log: Callable[..., Any] | None = None,
    created_here: bool = True,
) -> PollingOptions:
    """``--poll-interval`` (the first interval, growing 1.5x) and run-many's ``--task-timeout``.

    Every task reported is also entered in the command's ledger, unless the command follows a
    task it did not create (``created_here=False``).
    """
    timeout: float | None = getattr(args, "task_timeout", None)
    ledger = args.ledger

    def progress(*report: Any) -> Any:  # (task) for one run, (index, task) for a batch
        if created_here:
            ledger.seen(report[-1])
        return None if on_progress is None else on_progress(*report)

    return {
        "interval_ms": args.poll_interval * 1000,
        "timeout_ms": None if timeout is None else timeout * 1000,
        "on_progress": progress,
        "on_log": on_log,
    }
