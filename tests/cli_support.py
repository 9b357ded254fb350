"""Shared utilities of the command-line tests (not a test module): emulator subprocesses, the
CLI in a subprocess, and what the emulator has left running."""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

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


Scenario = Callable[..., Any]


class Scenarios:
    """Independent CLI scenarios of one module, started side by side in threads as the
    module begins; each test then takes its own scenario's outcome.

    A scenario's subprocesses mostly wait (interpreter start-up, a server, a wind-down
    after a signal), so together they take about as long as the slowest. A scenario makes
    its own assertions; one that fails is raised again in its test, with its traceback.
    The suite runs under xdist with ``--dist loadfile``: a module's tests, and so its
    scenarios, stay on one worker (split over workers, each would run them all).
    """

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers)
        self._futures: dict[str, Future[Any]] = {}

    def start(self, key: str, scenario: Scenario, *args: Any, **kwargs: Any) -> None:
        self._futures[key] = self._pool.submit(scenario, *args, **kwargs)

    def outcome(self, request: pytest.FixtureRequest) -> Any:
        """The outcome of the scenario of the test asking (raised again if it failed)."""
        return self._futures.pop(request.node.nodeid).result()

    def wait(self) -> None:
        """Wait until every scenario has ended (their outcomes are kept for their tests)."""
        futures.wait(self._futures.values())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def scenarios_of(
    request: pytest.FixtureRequest,
    table: dict[str, Scenario],
    tmp_path_factory: pytest.TempPathFactory,
    workers: int = 4,
    first: tuple[str, ...] = (),
    **shared: Any,
) -> Iterator[Scenarios]:
    """Start the scenario of each selected test of the asking module named in ``table``
    (test name -> scenario, slowest first) or made by ``ahead`` (those named in ``first``
    before the others), called with the test's
    parameters and what else it takes of: ``tmp_path`` (a fresh folder), ``shared``, the
    module's (or session's) fixtures."""
    items = [item for item in request.session.items if item.module is request.module]
    running = Scenarios(workers)
    try:
        ahead_of = sorted(_ahead_of(items), key=lambda named: named[0] not in first)
        for name, scenario in [*table.items(), *ahead_of]:
            for item in items:
                if getattr(item, "originalname", None) != name:
                    continue
                callspec = getattr(item, "callspec", None)
                given = dict(callspec.params) if callspec is not None else {}
                for wanted in inspect.signature(scenario).parameters:
                    if wanted == "tmp_path":
                        given[wanted] = tmp_path_factory.mktemp(name[:30], numbered=True)
                    elif wanted in shared:
                        given[wanted] = shared[wanted]
                    elif wanted not in given:
                        given[wanted] = request.getfixturevalue(wanted)
                running.start(item.nodeid, scenario, **given)
        yield running
    finally:
        running.close()


def _ahead_of(items: list[pytest.Item]) -> list[tuple[str, Scenario]]:
    found: dict[str, Scenario] = {}
    for item in items:
        scenario = getattr(getattr(item, "obj", None), "scenario", None)
        if scenario is not None:
            found[scenario.__name__] = scenario
    return list(found.items())


def ahead(test: Scenario) -> Scenario:
    """Run this test's body as a scenario (see ``Scenarios``), ahead of its turn.

    The body may take ``tmp_path``, module- or session-scoped fixtures and parameters;
    the test itself then takes the ``scenarios`` fixture of its module and its outcome.
    """
    fixtures = {"tmp_path"} | set(_MODULE_FIXTURES)
    parameters = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name in inspect.signature(test).parameters
        if name not in fixtures
    ]

    def outcome(scenarios: Scenarios, request: pytest.FixtureRequest, **_: Any) -> None:
        scenarios.outcome(request)

    outcome.__name__ = outcome.__qualname__ = test.__name__
    outcome.__doc__ = test.__doc__
    outcome.__module__ = test.__module__
    outcome.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("scenarios", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *parameters,
        ]
    )
    outcome.scenario = test  # type: ignore[attr-defined]
    return outcome


_MODULE_FIXTURES = ("url", "hung")  # what the CLI modules share: an emulator, a mute server
