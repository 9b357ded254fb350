"""Shared utilities of the command-line tests (not a test module): emulator subprocesses, the
CLI in a subprocess, and what the emulator has left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

CLI = [sys.executable, "-m", "oomol_connect_anyio.cli"]
FAST = ["--poll-interval", "0.02"]
ERROR_PREFIX = "oomol-connect: error: "
TERMINAL = frozenset({"completed", "failed", "stopped"})
WAIT_S = 30  # how long a test waits for a state before it fails (never reached when it works)


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: no token or base URL of the machine's user."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OOMOL_CONNECT_")}


@contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """``oomol-connect emulator --port 0 ARGS`` in a subprocess; yields its base URL."""
    with subprocess.Popen(
        [*CLI, "emulator", "--port", "0", *args], stdout=subprocess.PIPE, text=True, env=cli_env()
    ) as server:  # leaving it closes the pipe
        assert server.stdout is not None
        try:
            line = server.stdout.readline()
            assert line.startswith("Oomol Connect emulator listening on http://127.0.0.1:"), line
            yield line.split()[-1]
        finally:
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=WAIT_S) == 0


def fault_config(path: Path, *rules: dict[str, Any]) -> str:
    """A ``--fault-config`` file holding ``rules``."""
    path.write_text(json.dumps(list(rules)))
    return str(path)


def spawn(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI run to its end in a subprocess."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=WAIT_S, input=stdin,
        env=cli_env(), stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def spawn_all(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several independent CLI runs at once (each waits mostly on its own start-up)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: spawn(*args), commands))


def start(*args: str) -> subprocess.Popen[str]:
    """The CLI started in a subprocess, its output captured."""
    return subprocess.Popen(
        [*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=cli_env(),
    )


def one_error_line(err: str) -> str:
    """The text of the single ``oomol-connect: error:`` line that ``err`` must be."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR_PREFIX), err
    assert "Traceback" not in err
    return lines[0][len(ERROR_PREFIX):]


def write_jobs(path: Path, jobs: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs) + "\n")
    return str(path)


def tasks_marked(url: str, marker: str) -> list[dict[str, Any]]:
    """The emulator's tasks whose input values contain the string ``marker``."""
    tasks: list[dict[str, Any]] = httpx.get(f"{url}/v1/tasks").json()["tasks"]
    return [task for task in tasks if marker in json.dumps(task.get("inputValues"))]


def still_running(url: str, marker: str) -> list[str]:
    """Ids of the marked tasks that have not ended: what a command left behind."""
    return [task["id"] for task in tasks_marked(url, marker) if task["status"] not in TERMINAL]


def requests_to(url: str, route: str) -> int:
    """How many requests the emulator has received for ``route`` ("METHOD /template")."""
    counts: dict[str, int] = httpx.get(f"{url}/__emulator/stats").json()["requests"]
    return counts.get(route, 0)


def wait_until(condition: Any, what: str) -> None:
    """Poll ``condition()`` until it is true; fail after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


@contextmanager
def hanging_server() -> Iterator[str]:
    """A loopback server that accepts connections, reads, and never answers; yields a base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.05)  # so that the accepting thread sees ``closing``
    held: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    finally:
        closing.set()
        listener.close()
        thread.join(timeout=WAIT_S)
        for connection in held:
            connection.close()


def error_document(out: str, code: int) -> dict[str, Any]:
    """The one ``--json`` error document ``out`` must be, with its stable keys."""
    document: dict[str, Any] = json.loads(out)
    assert list(document) == ["ok", "error", "error_type", "exit_code", "task_id"], document
    assert document["ok"] is False
    assert document["exit_code"] == code
    return document
