"""From command-line options to a client and to polling options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import OomolConnectClient, PollingOptions
from ._errors import UsageError

ENV_BASE_URL = "OOMOL_CONNECT_BASE_URL"


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


def shard(text: str) -> tuple[int, int]:
    """argparse type: ``I/N``, with 0 <= I < N."""
    index, sep, count = text.partition("/")
    try:
        parsed = int(index), int(count)
    except ValueError:
        parsed = (-1, 0)
    if not sep or not 0 <= parsed[0] < parsed[1]:
        raise argparse.ArgumentTypeError(
            f"expected I/N with 0 <= I < N (e.g. 0/4 for the first of 4 shards), got {text!r}"
        )
    return parsed


def base_urls(given: list[str] | None, environment: str | None) -> list[str]:
    """The servers of ``--base-url`` (repeatable), else of the comma-separated
    ``$OOMOL_CONNECT_BASE_URL``; none means the client's default."""
    if given:
        urls, where = [url.strip() for url in given], "--base-url"
        if "" in urls:
            raise UsageError(
                "--base-url is empty (omit it for $OOMOL_CONNECT_BASE_URL or localhost)"
            )
    else:
        urls, where = [url.strip() for url in (environment or "").split(",")], ENV_BASE_URL
        if urls == [""]:
            return []
        if "" in urls:
            raise UsageError(f"${ENV_BASE_URL} names an empty server URL between its commas")
    if len(set(urls)) < len(urls):
        raise UsageError(f"{where} names the same server twice")
    return urls


def open_client(args: argparse.Namespace, base_url: str | None = None) -> OomolConnectClient:
    """The client for ``base_url`` (default: the one server ``--base-url`` or its
    environment variable names) and ``--token``."""
    if base_url is None and len(args.base_urls) > 1:
        raise UsageError(
            f"{args.command} talks to one server, but {len(args.base_urls)} are named "
            "(several servers are for run-many)"
        )
    try:
        return OomolConnectClient(
            base_url=base_url or (args.base_urls[0] if args.base_urls else None),
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
