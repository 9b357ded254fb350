"""``run-many --journal/--resume``: no silent overwrite, one outcome line per job over any
number of interruptions, and a kill -9 campaign through the CLI (subprocesses)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cli_support import (
    CLI,
    FAST,
    WAIT_S,
    Scenarios,
    ahead,
    cli_env,
    emulator_process,
    fault_config,
    one_error_line,
    scenarios_of,
    spawn,
    still_running,
    tasks_marked,
    wait_until,
    write_jobs,
)

from oomol_connect_anyio import Journal
from oomol_connect_anyio._journal import request_hash


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with emulator_process() as base_url:
        yield base_url


@pytest.fixture(scope="module")
def scenarios(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenarios]:
    """Every test of the module, side by side (the kill -9 campaign, the slowest, first):
    each is a few CLI processes on batches of its own, marked apart on the shared emulator."""
    campaign = "test_kill_9_campaign_then_resume_gives_one_outcome_per_job_and_n_creates"
    with scenarios_of(request, {}, tmp_path_factory, first=(campaign,)) as running:
        yield running


def sleeps(marker: str, *seconds: float) -> list[dict[str, Any]]:
    return [
        {"manifest": "demo::sleep", "inputValues": {"seconds": s, "marker": marker, "job": i}}
        for i, s in enumerate(seconds)
    ]


def batch(url: str, jobs: str, *args: str, backend: str = "asyncio") -> list[str]:
    return ["--base-url", url, *FAST, "--backend", backend, "run-many", jobs, *args]


def outcome_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@ahead
def test_nothing_is_overwritten_without_resume(url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", sleeps(uuid.uuid4().hex, 0))
    journal, out = tmp_path / "b.journal", tmp_path / "out.jsonl"
    journal.write_text("keep me\n")
    out.write_text("keep me too\n")
    cases = {
        "journal exists": batch(url, jobs, "--journal", str(journal)),
        "-o exists": batch(url, jobs, "-o", str(out)),
        "-o is the jobs": batch(url, jobs, "-o", jobs),
        "journal is the jobs": batch(url, jobs, "--journal", jobs, "--resume"),
        "retry without resume": batch(url, jobs, "--retry-failed"),
        "resume without journal": batch(url, jobs, "--resume", "-o", str(tmp_path / "x")),
        "resume, -o but no journal": batch(
            url, jobs, "--resume", "-o", str(out), "--journal", str(tmp_path / "typo.journal")),
        "-o in no directory": batch(
            url, jobs, "-o", str(tmp_path / "none" / "o"), "--journal", str(tmp_path / "n.j")),
    }
    messages = {}
    for case, command in cases.items():
        done = spawn(*command)
        assert done.returncode == 2, (case, done.stderr)
        messages[case] = one_error_line(done.stderr)
    assert "add --resume" in messages["journal exists"]
    assert "add --resume" in messages["-o exists"]
    assert "is the jobs file itself" in messages["-o is the jobs"]
    assert "is the jobs file itself" in messages["journal is the jobs"]
    assert "is that the journal of its batch?" in messages["resume, -o but no journal"]
    assert "no such directory" in messages["-o in no directory"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.journal", "jobs.jsonl", "out.jsonl"]
    assert journal.read_text() == "keep me\n"
    assert out.read_text() == "keep me too\n"
    assert tasks_marked(url, json.loads(Path(jobs).read_text().splitlines()[0])[
        "inputValues"]["marker"]) == []


@ahead
def test_a_resumed_batch_writes_each_line_once_and_creates_nothing_again(
    url: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    jobs = write_jobs(tmp_path / "jobs.jsonl", sleeps(marker, 0, 0, 0, 0))
    journal, out = str(tmp_path / "b.journal"), tmp_path / "out.jsonl"
    done = spawn(*batch(url, jobs, "--journal", journal, "-o", str(out)))
    assert done.returncode == 0, done.stderr
    with out.open("a") as file:
        file.write('{"index": 3, "ok": tr')  # a writer that died mid-line
    done = spawn(*batch(url, jobs, "--journal", journal, "-o", str(out), "--resume"))
    assert done.returncode == 0, done.stderr
    lines = outcome_lines(out)
    assert sorted(line["index"] for line in lines) == [0, 1, 2, 3]
    assert all(line["ok"] for line in lines)
    assert len(tasks_marked(url, marker)) == 4
    again = spawn("--json", *batch(url, jobs, "--journal", journal, "-o", str(out), "--resume"))
    summary = json.loads(again.stdout)
    assert (summary["done"], summary["replayed"]) == (4, 4)
    assert summary["per_second"] == 0  # outcomes read back are no throughput
    assert len(outcome_lines(out)) == 4


@ahead
def test_changed_jobs_are_refused_on_resume(url: str, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    jobs = tmp_path / "jobs.jsonl"

    def write(*seconds: float) -> None:  # a blank first line: line numbers are not indexes
        jobs.write_text("\n" + "".join(json.dumps(job) + "\n" for job in sleeps(marker, *seconds)))

    write(0, 0, 0, 0)
    journal = str(tmp_path / "b.journal")
    shard = ("--shard", "1/2")  # jobs 1 and 3: the batch's own 0 and 1
    assert spawn(*batch(url, str(jobs), *shard, "--journal", journal)).returncode == 0
    write(0, 0, 0, 5)
    done = spawn(*batch(url, str(jobs), *shard, "--journal", journal, "--resume"))
    assert done.returncode == 2
    said = one_error_line(done.stderr)
    assert "jobs.jsonl line 5 (job 3) differs from the job journal" in said, said
    assert "with the same jobs and --shard" in said
    write(0, 0)  # the shard's job 1 is there, its job 3 is not
    done = spawn(*batch(url, str(jobs), *shard, "--journal", journal, "--resume"))
    assert done.returncode == 2
    assert "has fewer jobs than journal" in one_error_line(done.stderr)
    assert len(tasks_marked(url, marker)) == 2


@ahead
def test_recorded_failures_rerun_only_with_retry_failed(url: str, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    failing = {"manifest": "demo::fail", "inputValues": {"message": marker}}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [*sleeps(marker, 0), failing])
    journal, out = str(tmp_path / "b.journal"), tmp_path / "out.jsonl"
    done = spawn(*batch(url, jobs, "--journal", journal, "-o", str(out)))
    assert done.returncode == 3, done.stderr
    failure = outcome_lines(out)[-1] if outcome_lines(out)[-1]["index"] == 1 else outcome_lines(
        out)[0]
    assert failure["error_type"] == "TaskFailedError"
    assert failure["task_id"]  # a failure line names its task
    done = spawn(*batch(url, jobs, "--journal", journal, "-o", str(out), "--resume"))
    assert done.returncode == 3
    assert len(tasks_marked(url, marker)) == 2
    done = spawn(*batch(
        url, jobs, "--journal", journal, "-o", str(out), "--resume", "--retry-failed"))
    assert done.returncode == 3
    assert len(tasks_marked(url, marker)) == 3  # only the failure ran again
    lines = outcome_lines(out)
    assert sorted(line["index"] for line in lines) == [0, 1]  # one line per job
    retried = next(line for line in lines if line["index"] == 1)
    assert retried["task_id"] != failure["task_id"]  # the new outcome, not the stale one


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@ahead
def test_ctrl_c_records_finished_tasks_and_resume_runs_the_rest(
    url: str, tmp_path: Path, backend: str
) -> None:
    marker = uuid.uuid4().hex
    # The long jobs outlast the interrupt by seconds, so the stop reaches them unfinished.
    jobs = write_jobs(tmp_path / "jobs.jsonl", sleeps(marker, 0.05, 0.05, 4.0, 4.0))
    journal, out = str(tmp_path / "b.journal"), tmp_path / "out.jsonl"
    slow = ["--base-url", url, "--poll-interval", "60", "--backend", backend, "run-many", jobs,
            "-c", "4", "--journal", journal, "-o", str(out)]
    with subprocess.Popen([*CLI, *slow], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=cli_env()) as child:
        wait_until(lambda: {line["i"] for line in _journal_lines(journal) if line["e"] == "task"}
                   == {0, 1, 2, 3}, "every job's task id in the journal")
        wait_until(lambda: sum(t["status"] == "completed" for t in tasks_marked(url, marker))
                   == 2, "the short jobs finished, unseen by polls a minute apart")
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=WAIT_S)
    assert child.returncode == 130, err
    assert still_running(url, marker) == []
    finished = {t["id"] for t in tasks_marked(url, marker) if t["status"] == "completed"}
    # Progress notes come before the error when the batch has run a second or more.
    *notes, last = err.splitlines()
    assert all(note.startswith("run-many: ") for note in notes), err
    said = one_error_line(last)
    assert "may still run" not in said, said  # the finished ones were seen at the last look
    assert not any(task_id in said for task_id in finished), said
    assert said.count("stopped on the server") == 1, said
    assert outcome_lines(out) == []  # nothing was seen before the interrupt...
    recorded = [json.loads(line) for line in Path(journal).read_text().splitlines()[1:]]
    last = {line["i"]: line["e"] for line in recorded}
    assert last == {0: "outcome", 1: "outcome", 2: "interrupted", 3: "interrupted"}  # ...all kept
    done = spawn(*batch(url, jobs, "--journal", journal, "-o", str(out), "--resume",
                        backend=backend))
    assert done.returncode == 0, done.stderr
    assert sorted(line["index"] for line in outcome_lines(out)) == [0, 1, 2, 3]
    assert len(tasks_marked(url, marker)) == 6  # the two finished ones were not run again


KILLS = 12  # per backend: 24 seeded kill moments in all


@ahead
def test_kill_9_campaign_then_resume_gives_one_outcome_per_job_and_n_creates(
    tmp_path: Path,
) -> None:
    # The two backends' campaigns run side by side, each with its own batch and emulator.
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda backend: _campaign(tmp_path / backend, backend),
                              ["asyncio", "trio"]))
    for cut in found:
        assert cut["killed"] >= KILLS - 2  # (nearly) every attempt was cut short by its kill
        # The kills landed inside the batch's work: with a create in flight (an intent and no
        # task id yet) and with tasks being polled (a task id and no outcome).
        assert cut["creating"] > 0, cut
        assert cut["polling"] > 0, cut


def _journal_lines(path: str) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines()[1:] if line.endswith("}")]


def _campaign(folder: Path, backend: str) -> dict[str, int]:
    """Kill a journaled batch at seeded moments, resume it to the end, check it; what the
    kills cut."""
    folder.mkdir()
    # An emulator of its own whose creates take 20-120 ms, so that kills land during creates
    # too (an intent recorded, its task id not yet).
    slow_creates = fault_config(
        folder / "faults.json", {"route": "POST /v1/tasks", "latency": [0.02, 0.12]}
    )
    with emulator_process("--fault-config", slow_creates) as own:
        return _kill_and_resume(own, folder, backend)


def _kill_and_resume(url: str, folder: Path, backend: str) -> dict[str, int]:
    marker = uuid.uuid4().hex
    # About 11 s of work at -c 2, which goes on on the server between attempts too: more
    # than the attempts get done before their kills.
    count = 64
    jobs = write_jobs(folder / "jobs.jsonl", sleeps(marker, *[0.3] * count))
    journal, out = str(folder / "b.journal"), folder / "out.jsonl"
    rng = random.Random(f"cli-kill-9-{backend}")
    cut = {"killed": 0, "creating": 0, "polling": 0}
    for attempt in range(KILLS):
        resume = ["--resume"] if attempt else []
        command = batch(url, jobs, "-c", "2", "--journal", journal, "-o", str(out), *resume,
                        backend=backend)
        # The kill comes a seeded number of journal lines into this attempt's work, and a
        # seeded moment after that line: during a create, a poll, or an outcome's writing.
        target = len(_journal_lines(journal)) + rng.randint(1, 5)
        pause = rng.uniform(0, 0.1)
        with subprocess.Popen([*CLI, *command], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=cli_env()) as child:
            wait_until(lambda child=child, target=target: child.poll() is not None
                       or len(_journal_lines(journal)) >= target, "the batch's journal to grow")
            try:
                child.wait(timeout=pause)
            except subprocess.TimeoutExpired:
                child.kill()
                cut["killed"] += 1
            _, err = child.communicate(timeout=WAIT_S)
        assert child.returncode in (0, -signal.SIGKILL), err
        last: dict[int, str] = {}
        for record in _journal_lines(journal):
            last[record["i"]] = record["e"]
        cut["creating"] += sum(event == "intent" for event in last.values())
        cut["polling"] += sum(event == "task" for event in last.values())
    done = spawn(*batch(url, jobs, "-c", "2", "--journal", journal, "-o", str(out), "--resume",
                        backend=backend))
    assert done.returncode == 0, done.stderr
    lines = outcome_lines(out)
    assert Counter(line["index"] for line in lines) == dict.fromkeys(range(count), 1)
    assert all(line["ok"] for line in lines)
    assert len(tasks_marked(url, marker)) == count  # exactly N creates
    assert still_running(url, marker) == []
    return cut


@ahead
def test_fail_fast_on_resume_reports_the_recorded_failure_in_one_line(
    url: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        *sleeps(marker, 0),
        {"manifest": "demo::fail", "inputValues": {"message": "broken on purpose"}},
    ])
    journal, out = str(tmp_path / "b.journal"), str(tmp_path / "out.jsonl")
    first = spawn(*batch(url, jobs, "-c", "1", "--journal", journal, "-o", out, "--fail-fast"))
    assert first.returncode == 3, first.stderr
    again = spawn(*batch(
        url, jobs, "-c", "1", "--journal", journal, "-o", out, "--resume", "--fail-fast"
    ))
    assert again.returncode == 3, again.stderr  # the recorded failure, not a traceback
    assert "Traceback" not in again.stderr
    *_, summary, error = again.stderr.splitlines()  # the batch's summary, then the error
    assert summary.startswith("run-many: 2/2 done, 1 failed")
    assert "broken on purpose" in one_error_line(error)
    assert sorted(line["index"] for line in outcome_lines(Path(out))) == [0, 1]


def test_fail_fast_writes_the_outcomes_its_last_look_found(tmp_path: Path) -> None:
    """The server takes one task at a time. When the sleep's create goes first, the failing
    job's create is refused (429) until the sleep has finished, unseen by polls a minute
    apart; its create answer says failed, and the batch's last look finds the sleep finished
    as it stops the batch: the journal records it, and -o gets its line too. (When the
    failing create goes first, the sleep is still running at the failure: that attempt
    proves nothing, and another is made.)"""
    one_at_a_time = fault_config(tmp_path / "faults.json", {
        "route": "POST /v1/tasks", "max_active": 1, "retry_after": 0.3})
    with emulator_process("--fault-config", one_at_a_time) as own:
        for attempt in range(5):
            marker = uuid.uuid4().hex
            jobs = write_jobs(tmp_path / f"jobs{attempt}.jsonl", [
                {"manifest": "demo::sleep", "inputValues": {"seconds": 0.1, "marker": marker}},
                {"manifest": "demo::fail", "inputValues": {"message": "broken on purpose",
                                                           "marker": marker}},
            ])
            journal, out = str(tmp_path / f"b{attempt}.journal"), tmp_path / f"out{attempt}"
            done = spawn("--base-url", own, "--poll-interval", "60", "run-many", jobs,
                         "--journal", journal, "-o", str(out), "--fail-fast")
            assert done.returncode == 3, done.stderr
            made = sorted(tasks_marked(own, marker), key=lambda task: task["created_at"])
            if made[0]["manifest_path"].endswith("/sleep"):
                break
        else:
            pytest.fail("the failing job's create went first in every attempt")
    lines = {line["index"]: line for line in outcome_lines(out)}
    assert sorted(lines) == [0, 1]
    assert lines[0]["ok"] is True
    assert lines[0]["result"] == {"slept": 0.1}
    assert lines[1]["error_type"] == "TaskFailedError"


@ahead
def test_a_resume_against_a_server_without_the_batchs_task_names_the_right_one(
    url: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n" + json.dumps(sleeps(marker, 0)[0]) + "\n")  # job 0 is on line 2
    journal = tmp_path / "b.journal"
    elsewhere = "http://127.0.0.1:9/api"  # where the batch ran: never asked

    async def record() -> None:
        async with Journal.open(journal) as opened:
            opened.record_intent(0, request_hash(sleeps(marker, 0)[0]), elsewhere)
            opened.record_task(0, "task-made-elsewhere", elsewhere)

    anyio.run(record)
    done = spawn(*batch(url, str(jobs), "--journal", str(journal), "--resume"))
    assert done.returncode == 2, done.stderr
    said = one_error_line(done.stderr.splitlines()[-1])
    assert said.startswith(f"{jobs} line 2 (job 0): its task task-made-elsewhere"), said
    assert said.endswith(f"resume against {elsewhere}"), said
    assert [line["e"] for line in _journal_lines(str(journal))] == ["intent", "task"]
    assert tasks_marked(url, marker) == []


def test_a_failure_the_journal_does_not_hold_is_replaced_on_resume(tmp_path: Path) -> None:
    # A create interrupted in an earlier attempt, then a resume whose lookup of it fails
    # before any task exists: that failure is not on record, so the next resume runs the
    # job again, and its line must replace the failure line, not be dropped for it.
    job = {"manifest": "demo::echo", "inputValues": {"text": uuid.uuid4().hex}}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job])
    journal, out = tmp_path / "b.journal", tmp_path / "out.jsonl"
    with emulator_process() as url:
        admin = url.removesuffix("/api") + "/__emulator/faults"

        async def interrupted_create() -> None:
            async with Journal.open(journal) as opened:
                opened.record_intent(0, request_hash(job), url)

        anyio.run(interrupted_create)
        listing_refused = {"route": "GET /v1/tasks", "error_rate": 1.0, "error_statuses": [400]}
        httpx.post(admin, json=listing_refused).raise_for_status()
        failed = spawn(*batch(url, jobs, "--journal", str(journal), "-o", str(out), "--resume"))
        assert failed.returncode == 3, failed.stderr
        assert [line["ok"] for line in outcome_lines(out)] == [False]
        httpx.delete(admin).raise_for_status()
        done = spawn(*batch(url, jobs, "--journal", str(journal), "-o", str(out), "--resume"))
        assert done.returncode == 0, done.stderr
    [line] = outcome_lines(out)
    assert line["ok"] is True
    assert line["result"] == job["inputValues"]
