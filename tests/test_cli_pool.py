"""``run-many`` over several servers (``--base-url`` repeated, or a comma-separated
``$OOMOL_CONNECT_BASE_URL``) and ``--shard I/N``: the CLI in subprocesses, against two
emulator processes."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    CLI,
    FAST,
    WAIT_S,
    cli_env,
    emulator_process,
    one_error_line,
    spawn,
    spawn_all,
    still_running,
    tasks_marked,
    write_jobs,
)


@pytest.fixture(scope="module")
def urls() -> Iterator[list[str]]:
    with emulator_process() as first, emulator_process() as second:
        yield [first, second]


def echoes(marker: str, count: int) -> list[dict[str, Any]]:
    return [
        {"manifest": "demo::echo", "inputValues": {"text": f"{marker} {i}"}} for i in range(count)
    ]


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_many_spreads_over_the_servers_given(
    urls: list[str], tmp_path: Path, backend: str
) -> None:
    marker = uuid.uuid4().hex
    jobs = write_jobs(tmp_path / "jobs.jsonl", echoes(marker, 12))
    out = tmp_path / "out.jsonl"
    done = spawn(
        "--base-url", urls[0], "--base-url", urls[1], *FAST, "--backend", backend, "--json",
        "run-many", jobs, "-c", "2", "-o", str(out),
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    lines = lines_of(out.read_text())
    assert sorted(line["index"] for line in lines) == list(range(12))
    for line in lines:
        assert line["result"] == {"text": f"{marker} {line['index']}"}
        own = {task["id"] for task in tasks_marked(line["server"], marker)}
        assert line["task_id"] in own  # the server named is the one that ran it
    per_server = {url: len(tasks_marked(url, marker)) for url in urls}
    assert sum(per_server.values()) == 12
    assert min(per_server.values()) >= 3  # both servers took a share
    assert summary["servers"] == {
        url: {"succeeded": per_server[url], "failed": 0} for url in urls
    }


def test_the_environment_names_several_servers_for_run_many_only(
    urls: list[str], tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    jobs = write_jobs(tmp_path / "jobs.jsonl", echoes(marker, 4))
    env = {**cli_env(), "OOMOL_CONNECT_BASE_URL": ",".join(urls)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *FAST, *args], capture_output=True, text=True, timeout=WAIT_S, env=env,
            stdin=subprocess.DEVNULL,
        )

    done = run("run-many", jobs, "-c", "1")
    assert done.returncode == 0, done.stderr
    assert {line["server"] for line in lines_of(done.stdout)} == set(urls)
    refused = run("tasks", "list")
    assert refused.returncode == 2
    assert "talks to one server, but 2 are named" in one_error_line(refused.stderr)


def test_shards_are_disjoint_and_complete(urls: list[str], tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    jobs = write_jobs(tmp_path / "jobs.jsonl", echoes(marker, 10))
    runs = spawn_all(*(
        ["--base-url", urls[shard % 2], *FAST, "run-many", jobs, "--shard", f"{shard}/3",
         "-o", str(tmp_path / f"out-{shard}.jsonl"),
         "--journal", str(tmp_path / f"shard-{shard}.journal")]
        for shard in range(3)
    ))
    assert [run.returncode for run in runs] == [0, 0, 0], [run.stderr for run in runs]
    seen: list[int] = []
    for shard in range(3):
        lines = lines_of((tmp_path / f"out-{shard}.jsonl").read_text())
        indexes = [line["index"] for line in lines]
        assert all(index % 3 == shard for index in indexes)  # the file's own indexes
        assert all(line["result"] == {"text": f"{marker} {line['index']}"} for line in lines)
        assert all("server" not in line for line in lines)  # one server: lines as before
        seen.extend(indexes)
    assert sorted(seen) == list(range(10))
    assert sum(len(tasks_marked(url, marker)) for url in urls) == 10


def test_a_resumed_shard_runs_nothing_twice(urls: list[str], tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    jobs = write_jobs(tmp_path / "jobs.jsonl", echoes(marker, 7))
    args = ["--base-url", urls[0], "--base-url", urls[1], *FAST, "run-many", jobs,
            "--shard", "1/2", "--journal", str(tmp_path / "b.journal"),
            "-o", str(tmp_path / "out.jsonl"), "--resume"]  # as a job array's retried pod
    assert spawn(*args).returncode == 0  # no journal yet: --resume starts it
    again = spawn(*args)
    assert again.returncode == 0, again.stderr
    lines = lines_of((tmp_path / "out.jsonl").read_text())
    assert sorted(line["index"] for line in lines) == [1, 3, 5]
    assert sum(len(tasks_marked(url, marker)) for url in urls) == 3
    assert [still_running(url, marker) for url in urls] == [[], []]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3/3"], "expected I/N with 0 <= I < N"),
        (["--shard", "one/two"], "expected I/N with 0 <= I < N"),
        (["--base-url", "http://127.0.0.1:9/api", "--base-url", " "], "--base-url is empty"),
        (["--base-url", "http://127.0.0.1:9/api"] * 2, "names the same server twice"),
    ],
)
def test_bad_server_and_shard_options_are_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", echoes("x", 1))
    done = spawn("run-many", jobs, *args)
    assert done.returncode == 2
    assert message in one_error_line(done.stderr)
    assert not os.path.exists(tmp_path / "out.jsonl")
