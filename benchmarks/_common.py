"""Shared plumbing of the benchmarks: the emulator process, counters, tables and JSON.

Every benchmark runs the emulator in a *separate process* (so the server never shares
the client's event loop or CPU time), or talks to ``--base-url``. Client CPU is
``time.process_time()`` of the benchmark process; server CPU is read from
``/proc/<pid>/stat`` of the emulator process when this script started it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"
EMULATOR_LINE = "Oomol Connect emulator listening on "


# --------------------------------------------------------------------------- arguments


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--base-url",
        help="use this running Connect server instead of starting the emulator "
        "(server CPU and emulator counters are then unavailable unless it is the emulator)",
    )
    p.add_argument("--token", default=None, help="API token (default: the emulator's own)")
    p.add_argument(
        "--server",
        choices=["auto", "uvicorn", "hypercorn"],
        default="auto",
        help="how to serve the emulator in its own process: uvicorn+httptools when "
        "installed (auto), else hypercorn (the emulator's own CLI)",
    )
    p.add_argument("--quick", action="store_true", help="a few seconds: a smoke test")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    return p


# --------------------------------------------------------------------------- the server


def _proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc (Linux only)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            fields = file.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A Connect server: its base URL, and its process when the benchmark started it."""

    url: str
    token: str | None
    pid: int | None = None
    kind: str = "external"
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    @property
    def is_emulator(self) -> bool:
        try:
            return self._http.get(self.url + "/__emulator/stats").status_code == 200
        except httpx.HTTPError:
            return False

    def cpu(self) -> float | None:
        """CPU seconds the server process has used so far (None if unknown)."""
        return None if self.pid is None else _proc_cpu(self.pid)

    def stats(self) -> dict[str, Any]:
        """The emulator's counters since the last reset."""
        return dict(self._http.get(self.url + "/__emulator/stats").json())

    def reset_stats(self) -> None:
        self._http.post(self.url + "/__emulator/reset-stats").raise_for_status()

    def tasks(self) -> dict[str, dict[str, Any]]:
        """The emulator's task table by id (status, stop_requested)."""
        rows = self._http.get(self.url + "/__emulator/tasks").json()["tasks"]
        return {row["id"]: row for row in rows}

    def task(self, task_id: str) -> dict[str, Any]:
        """``GET /v1/tasks/{id}`` (unwrapped), outside any measured section."""
        headers = {"Authorization": self.token} if self.token else {}
        body = self._http.get(f"{self.url}/v1/tasks/{task_id}", headers=headers).json()
        return dict(body.get("task", body))

    def stop(self, task_id: str) -> None:
        """``POST /v1/tasks/{id}/stop``, outside any measured section."""
        headers = {"Authorization": self.token} if self.token else {}
        self._http.post(f"{self.url}/v1/tasks/{task_id}/stop", headers=headers)

    def close(self) -> None:
        self._http.close()


@dataclass
class Meter:
    """Client CPU, wall time and server CPU over one measured section."""

    server: Server
    wall: float = 0.0
    cpu: float = 0.0
    server_cpu: float | None = None
    _t0: tuple[float, float, float | None] = (0.0, 0.0, None)

    def __enter__(self) -> Meter:
        self._t0 = (time.perf_counter(), time.process_time(), self.server.cpu())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, cpu0, server0 = self._t0
        self.wall = time.perf_counter() - wall0
        self.cpu = time.process_time() - cpu0
        server1 = self.server.cpu()
        self.server_cpu = None if server0 is None or server1 is None else server1 - server0


def _read_line(stream: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise RuntimeError("the emulator did not announce its URL in time")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            raise RuntimeError("the emulator exited before announcing its URL")
        line += chunk
    return line.decode()


def _uvicorn_available() -> bool:
    try:
        import httptools  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


def server_command(kind: str, *, token: str, max_finished: int | None = None,
                   extra: Sequence[str] = ()) -> tuple[str, list[str]]:
    """(resolved kind, argv) of an emulator process on a free loopback port."""
    if kind == "auto":
        kind = "uvicorn" if _uvicorn_available() else "hypercorn"
    options = ["--host", "127.0.0.1", "--port", "0", "--token", token, *extra]
    if max_finished is not None:
        options += ["--max-finished-tasks", str(max_finished)]
    if kind == "uvicorn":
        return kind, [sys.executable, str(HERE / "_uvicorn_emulator.py"), *options]
    return kind, [sys.executable, "-m", "oomol_connect_anyio.emulator", *options]


@contextlib.contextmanager
def start_server(args: argparse.Namespace, *, max_finished: int | None = None,
                 extra: Sequence[str] = ()) -> Iterator[Server]:
    """The server of a benchmark: ``--base-url``, or an emulator in its own process."""
    if args.base_url:
        server = Server(args.base_url.rstrip("/"), args.token)
        try:
            yield server
        finally:
            server.close()
        return
    token = args.token or TOKEN
    kind, argv = server_command(args.server, token=token, max_finished=max_finished, extra=extra)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=HERE.parent)
    try:
        line = _read_line(proc.stdout, 30.0)
        if not line.startswith(EMULATOR_LINE):
            raise RuntimeError(f"unexpected first line from the emulator: {line!r}")
        server = Server(line[len(EMULATOR_LINE):].strip(), token, proc.pid, kind)
        try:
            yield server
        finally:
            server.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def command(script: str, argv: Sequence[str] | None = None) -> str:
    """The command line that produced a report (without ``--json OUT``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--json" in args:
        at = args.index("--json")
        del args[at:at + 2]
    if "--server" in args and args[args.index("--server") + 1] == "auto":
        at = args.index("--server")
        del args[at:at + 2]
    return " ".join(["python", f"benchmarks/{Path(script).name}", *args])


def describe_server(server: Server) -> str:
    if server.pid is None:
        return f"external server at {server.url}"
    return f"emulator (pid {server.pid}, {server.kind}) at {server.url}"


# --------------------------------------------------------------------------- numbers


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded to ``digits`` significant figures."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "-"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 10 ** digits:
            return f"{value:,.0f}"
        decimals = max(0, digits - 1 - int(f"{magnitude:e}".split("e")[1]))
        return f"{value:.{decimals}f}"
    return str(value)


# --------------------------------------------------------------------------- results


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append(list(cells))

    def text(self) -> str:
        cells = [self.columns, *([fmt(c) for c in row] for row in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [self.title]
        for n, row in enumerate(cells):
            lines.append("  ".join(c.rjust(w) if n and i else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(row, widths, strict=True))))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" if i == 0 else "--:" for i in range(len(self.columns))) + "|"]
        lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows}


@dataclass
class Goal:
    text: str
    measured: str
    met: bool | None  # None: could not be measured


@dataclass
class Report:
    """What a benchmark prints and writes: tables, goals and notes."""

    name: str
    command: str
    params: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def table(self, title: str, columns: list[str]) -> Table:
        table = Table(title, columns)
        self.tables.append(table)
        return table

    def goal(self, text: str, measured: str, met: bool | None) -> None:
        self.goals.append(Goal(text, measured, met))

    def text(self) -> str:
        parts = [f"== {self.name} ==", "params: " + json.dumps(self.params)]
        parts += [table.text() for table in self.tables]
        if self.goals:
            parts.append("goals:")
            parts += [f"  [{_mark(g.met)}] {g.text}: {g.measured}" for g in self.goals]
        parts += [f"note: {note}" for note in self.notes]
        return "\n\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": self.command,
            "params": self.params,
            "environment": environment(),
            "tables": [t.to_json() for t in self.tables],
            "goals": [g.__dict__ for g in self.goals],
            "notes": self.notes,
            "raw": self.raw,
        }

    def finish(self, args: argparse.Namespace) -> None:
        """Print the report and write it as JSON when asked."""
        print(self.text(), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(self.to_json(), indent=1, default=str) + "\n")


def _mark(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "n/a"}[met]


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("oomol-connect-anyio", "httpx", "httpcore", "h11", "anyio", "trio",
                 "oomol-connect-sdk", "uvicorn", "httptools", "hypercorn"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "load_avg_1min": load,
            **versions}


def render_markdown(report: dict[str, Any]) -> str:
    """A JSON report (``Report.to_json``) as Markdown, for the README."""
    lines = [f"### {report['name']}", "", f"`{report['command']}`", ""]
    for table in report["tables"]:
        lines += [Table(table["title"], table["columns"], table["rows"]).markdown(), ""]
    if report["goals"]:
        lines += ["Goals:", ""]
        lines += [f"- **{_mark(g['met'])}** — {g['text']}: {g['measured']}"
                  for g in report["goals"]]
        lines.append("")
    lines += [f"> {note}" for note in report["notes"]]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- misc


def run_on(backend: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``anyio.run`` on a backend."""
    import anyio

    return anyio.run(fn, *args, backend=backend)


def peak_rss_mb() -> float:
    """The peak resident set size of this process so far, in MiB (Linux: ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as file:
            pages = int(file.read().split()[1])
    except OSError:
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
