"""A kill -9 campaign: a journaled batch killed at seeded moments, then resumed to the end,
creates each task exactly once and leaves nothing running."""

from __future__ import annotations

import json
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from oomol_connect_anyio.emulator import Emulator, serve_emulator

pytestmark = pytest.mark.anyio

JOBS = 24
KILLS = 10  # per backend: 20 seeded kill moments in all
TERMINAL = frozenset({"completed", "failed", "stopped"})

# One batch attempt: the jobs are tagged, so no two requests are alike.
BATCH = """
import sys, anyio
from oomol_connect_anyio import OomolConnectClient

async def main(url, journal, backend):
    jobs = [{"manifest": "demo::sleep", "inputValues": {"seconds": 0.3, "tag": i}}
            for i in range(int(sys.argv[4]))]
    async with OomolConnectClient(base_url=url, retry_delay=0.001) as client:
        results = await client.tasks.run_many(
            jobs, max_concurrency=4, journal=journal,
            polling_options={"interval_ms": 20, "backoff_strategy": "fixed"})
    for index, result in enumerate(results):
        assert result["result"] == {"slept": 0.3}, (index, result)
    print("finished", len(results))

anyio.run(main, *sys.argv[1:3], sys.argv[3], backend=sys.argv[3])
"""


async def attempt(url: str, journal: Path, backend: str, kill_after: float | None) -> str:
    command = [sys.executable, "-c", BATCH, url, str(journal), backend, str(JOBS)]
    async with await anyio.open_process(command) as process:
        if kill_after is None:
            with anyio.fail_after(60):
                await process.wait()
        else:
            with anyio.move_on_after(kill_after):
                await process.wait()
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            await process.wait()
        assert process.stdout is not None
        output = (await process.stdout.receive()).decode() if process.returncode == 0 else ""
    return output if process.returncode == 0 else f"killed ({process.returncode})"


async def test_kill_9_at_seeded_moments_then_resume_creates_each_task_once(
    anyio_backend: str, tmp_path: Path
) -> None:
    emulator = Emulator()
    journal = tmp_path / "batch.journal"
    rng = random.Random(f"kill-9-{anyio_backend}")
    outcomes = Counter()
    async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
        for _ in range(KILLS):
            # From before the first create (interpreter start-up) to well into the polls.
            result = await attempt(url, journal, anyio_backend, rng.uniform(0.2, 1.0))
            outcomes["finished" if result.startswith("finished") else "killed"] += 1
        final = await attempt(url, journal, anyio_backend, None)
    assert final.startswith(f"finished {JOBS}"), final
    assert outcomes["killed"] >= KILLS // 2, outcomes  # most attempts really were cut short
    assert emulator.stats()["tasks_created"] == JOBS
    left = [t.status for t in emulator.tasks.values() if t.status not in TERMINAL]
    assert left == []
    lines = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    per_index = Counter(line["i"] for line in lines if line["e"] == "outcome")
    assert per_index == dict.fromkeys(range(JOBS), 1)
