"""Output: JSON documents on stdout, rich tables, and one-line errors on stderr."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from .. import TaskLog

PROG = "oomol-connect"
PIPED_WIDTH = 160


def redact(text: str, secret: str | None) -> str:
    """``text`` with the token hidden where it stands as a token, not inside other words
    (as the client sends it: without the whitespace a token read from a file may carry)."""
    secret = secret.strip() if secret else None
    if not secret:
        return text
    return re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", "***", text)


def error_line(message: str, secret: str | None = None) -> None:
    """Print ``oomol-connect: error: ...`` as a single line, the token redacted."""
    text = " ".join(message.splitlines()) or "unknown error"
    print(f"{PROG}: error: {redact(text, secret)}", file=sys.stderr, flush=True)


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """JSON text; values JSON cannot hold are shown as strings."""
    separators = None if indent else (",", ":")
    return json.dumps(value, indent=indent, separators=separators, ensure_ascii=False, default=str)


def compact(value: Any, limit: int = 80) -> str:
    """A one-line JSON rendering cut at ``limit`` characters (strings shown bare)."""
    text = value if isinstance(value, str) else dumps(value, indent=None)
    text = " ".join(text.splitlines())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def log_error(log: TaskLog) -> str | None:
    """The error a log event reports (``BlockFinished``, ``SessionFinished``, ...), if any."""
    event = log.get("event") or {}
    error = event.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error = error["message"]
    return compact(error, 200) if error else None


def timestamp(ms: object) -> str:
    """Epoch milliseconds as local ``YYYY-MM-DD HH:MM:SS``; ``-`` when absent."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


class Output:
    """Where each kind of output goes, given ``--json`` and whether stderr is a terminal."""

    def __init__(self, json_mode: bool, secret: str | None, *, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.secret = secret
        self.quiet = quiet
        self.wrote_document = False  # a whole JSON document is on stdout: no error one after it
        self.stdout = Console(highlight=False)
        if not self.stdout.is_terminal and "COLUMNS" not in os.environ:
            self.stdout.width = PIPED_WIDTH  # a file or a pipe: wide rows rather than folded ones
        self.stderr = Console(stderr=True, highlight=False)

    @property
    def interactive(self) -> bool:
        """Live displays are drawn only for humans at a terminal."""
        return not self.json_mode and not self.quiet and self.stderr.is_terminal

    def json(self, document: Any, *, stderr: bool = False, compact: bool = False) -> None:
        """One JSON document; ``compact``: on one line (a line of a stream)."""
        text = dumps(document, indent=None if compact else 2)
        self.wrote_document |= not stderr and not compact
        print(text, file=sys.stderr if stderr else sys.stdout, flush=True)

    def redact(self, document: dict[str, Any]) -> dict[str, Any]:
        """An error document with the token hidden from its strings."""
        return {
            key: redact(value, self.secret) if isinstance(value, str) else value
            for key, value in document.items()
        }

    def line(self, text: str) -> None:
        """A plain line on stderr."""
        print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A human-only line on stderr (nothing with ``--json`` or ``--quiet``)."""
        if not self.json_mode and not self.quiet:
            self.line(text)

    def error(self, message: str) -> None:
        error_line(message, self.secret)

    def table(self, table: Table, *, stderr: bool = False) -> None:
        (self.stderr if stderr else self.stdout).print(table)

    def show(
        self,
        document: Any,
        title: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[str]],
    ) -> None:
        """``{"ok": true, **document}`` with ``--json``; else a table of ``rows`` at a terminal,
        tab-separated lines (header first) when stdout is a file or a pipe."""
        if self.json_mode:
            self.json({"ok": True, **document})
        elif not self.stdout.is_terminal:
            for cells in (columns, *rows):
                print("\t".join(" ".join(str(cell).split()) for cell in cells), flush=True)
        else:
            self.table(make_table(title, columns, rows))


def make_table(
    title: str | None, columns: Sequence[str] | None, rows: Iterable[Sequence[str]]
) -> Table:
    """A rich table (``columns=None``: two, without a header); only the last column wraps.

    No vertical rules: a task list (a 36-character id, status, time, block) fits 80 columns.
    """
    table = Table(
        title=title, title_justify="left", header_style="bold", show_header=columns is not None,
        box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0),
    )
    names = columns or ("", "")
    for position, column in enumerate(names):
        table.add_column(column, no_wrap=position < len(names) - 1, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table
