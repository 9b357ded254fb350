"""The benchmark scripts run (``--quick``) and report what they must; no timing is asserted.

Every script starts its own emulator process; they run side by side, and beside the tests
before this module (they start as soon as the session has collected it), which makes their
timings meaningless here: only counts and outcomes are checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = (
    "polling", "fanout", "timeout", "cancel", "logs", "adaptive", "journal", "backoff", "pool"
)


_RUNNING: dict[str, subprocess.Popen[str]] = {}
_OUT: list[Path] = []


def start_early() -> None:
    """Start every script (conftest calls this once the session has collected the module)."""
    if _OUT:
        return
    out = Path(tempfile.mkdtemp(prefix="oomol-bench-"))
    _OUT.append(out)
    for name in SCRIPTS:
        _RUNNING[name] = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / f"bench_{name}.py"), "--quick",
             "--json", str(out / f"{name}.json")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )


def stop_early() -> None:
    """End the scripts still running (no test waited for them) and remove their reports."""
    for process in _RUNNING.values():
        if process.poll() is None:
            process.terminate()
        process.communicate()
    for out in _OUT:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def reports() -> dict[str, dict[str, Any]]:
    start_early()  # already done, unless the module was not collected by a session
    found = {}
    for name, process in _RUNNING.items():
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, f"bench_{name}.py failed:\n{output[-3000:]}"
        found[name] = json.loads((_OUT[0] / f"{name}.json").read_text())
    return found


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The first table's rows by their first cell, each as {column: value}."""
    table = report["tables"][0]
    return {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["rows"]}


def test_polling_measures_every_variant_and_run_skips_the_needless_poll(
    reports: dict[str, dict[str, Any]],
) -> None:
    found = rows(reports["polling"])
    assert {"ours/asyncio", "ours/trio", "official/asyncio", "httpx floor/asyncio"} <= set(found)
    for label in ("ours/asyncio", "ours/trio", "official/asyncio"):
        assert found[label]["poll req/op"] == 1
        assert found[label]["poll CPU ms"] > 0
    # An instant task's create answer is terminal: create + logs, no status poll.
    assert found["ours/asyncio"]["run req/op"] == 2
    assert found["official/asyncio"]["run req/op"] == 3
    assert reports["polling"]["goals"]


def test_fanout_runs_every_task_of_every_variant(reports: dict[str, dict[str, Any]]) -> None:
    report = reports["fanout"]
    found = rows(report)
    assert {"ours/asyncio", "ours/trio", "official/asyncio"} <= set(found)
    for label in ("ours/asyncio", "ours/trio"):
        assert found[label]["TCP conns"] <= report["params"]["concurrency"]
        assert found[label]["req/task"] >= 3  # create, at least one poll, logs


def test_timeout_stops_our_tasks_and_not_the_official_ones(
    reports: dict[str, dict[str, Any]],
) -> None:
    found = rows(reports["timeout"])
    ours = [row for label, row in found.items() if label.startswith("ours")]
    official = [row for label, row in found.items() if label.startswith("official")]
    assert ours
    assert official
    assert {row["remote task afterwards"] for row in ours} == {"stopped"}
    assert {row["remote task afterwards"] for row in official} == {"running"}


def test_cancel_stops_every_remote_task_of_ours(reports: dict[str, dict[str, Any]]) -> None:
    found = rows(reports["cancel"])
    ours = {label: row for label, row in found.items() if label.startswith("ours")}
    assert ours
    for label, row in ours.items():
        stopped, runs = row["remote tasks stopped"].split("/")
        assert stopped == runs, label
    assert found["official, asyncio task.cancel()/asyncio"]["remote tasks stopped"].startswith(
        "0/"
    )


def test_logs_are_delivered_whole_and_once(reports: dict[str, dict[str, Any]]) -> None:
    found = rows(reports["logs"])
    delivered = {row["logs delivered"] for row in found.values()}
    assert len(delivered) == 1
    assert delivered.pop() > 1000
    assert found["ours, logs at the end/asyncio"]["log fetches"] == 1
    assert found["ours, on_log/asyncio"]["log fetches"] > 1


def test_adaptive_compares_every_schedule_on_the_same_runs(
    reports: dict[str, dict[str, Any]],
) -> None:
    table = reports["adaptive"]["tables"][0]
    found = {(row[0], row[1]): dict(zip(table["columns"], row, strict=True))
             for row in table["rows"]}
    schedules = {"fixed 100 ms", "default (2 s, x1.5, cap 10 s)", "adaptive, cold",
                 "adaptive, warm"}
    assert set(found) == {(name, sigma) for name in schedules for sigma in (0.3, 0.1)}
    for row in found.values():
        assert row["server polls/task"] == row["polls/task"]  # WaitStats agree with the server
        assert row["left running"] == 0
    # How many polls each schedule makes depends on the machine's pace (the scripts run
    # beside the tests): that comparison is the report's goals, not this test's.
    assert len(reports["adaptive"]["goals"]) == 4


def test_journal_batches_run_both_ways_on_both_backends(
    reports: dict[str, dict[str, Any]],
) -> None:
    found = rows(reports["journal"])  # the script itself checks every outcome and line count
    assert set(found) == {"asyncio", "trio"}
    for row in found.values():
        assert row["without journal"] > 0
        assert row["with journal"] > 0


def test_backoff_runs_every_variant_and_counts_what_the_server_refused(
    reports: dict[str, dict[str, Any]],
) -> None:
    report = reports["backoff"]
    found = rows(report)
    k, tasks = report["params"]["k"], report["params"]["tasks"]
    assert set(found) == {f"{mode} {4 * k}/{backend}" for mode in ("fixed", "adaptive")
                          for backend in ("asyncio", "trio")}
    for label, row in found.items():
        assert row["created"] + row["lost"] == tasks, label  # each run created once or lost
        assert row["peak active"] <= k, label  # the server's bound
        assert row["429s"] >= row["create 429s"] > 0, label
        assert 1 <= row["mean window"] <= 4 * k, label


def test_pool_runs_every_variant_and_spreads_the_batch(
    reports: dict[str, dict[str, Any]],
) -> None:
    report = reports["pool"]
    found = rows(report)
    tasks, servers = report["params"]["tasks"], report["params"]["servers"]
    for backend in ("asyncio", "trio"):
        shares = found[f"{servers} servers, pool/{backend}"]["per server"].split(" / ")
        assert len(shares) == servers
        assert sum(map(int, shares)) == tasks  # the script checks every outcome too
        assert min(map(int, shares)) >= 0.75 * tasks / servers  # near-even: equal places
        assert int(found[f"1 server, client/{backend}"]["per server"]) == tasks
