"""Adaptive polling: the learned schedule's maths (deterministic) and waits that use it."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import anyio
import pytest

from oomol_connect_anyio import (
    BackoffStrategy,
    OomolConnectClient,
    PollingModel,
    TimeoutError,
)
from oomol_connect_anyio._adaptive import (
    MAX_MANIFESTS,
    MIN_SAMPLES,
    WINDOW,
    WaitSchedule,
    completed_duration,
)
from oomol_connect_anyio._adaptive_shape import LearnedShape
from oomol_connect_anyio._options import Polling, parse_polling
from oomol_connect_anyio.emulator import Emulator

pytestmark = pytest.mark.anyio
ADAPTIVE = {"interval_ms": 100, "backoff_strategy": "adaptive"}


def adaptive(**options: object) -> Polling:
    return parse_polling({**ADAPTIVE, **options}, stop_on_cancel=False)


def lognormal(seed: int, count: int, sigma: float, median: float = 1.5) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(rng.gauss(0.0, sigma)) for _ in range(count)]


def poll_times(shape: LearnedShape, polling: Polling, until: float) -> list[float]:
    """The instants (since creation) of a wait's polls, up to the first at or after ``until``."""
    times = [0.0]
    while times[-1] < until:
        times.append(times[-1] + shape.delay_after(times[-1], polling))
    return times[1:]


def cost(delay: object, durations: list[float]) -> tuple[float, float]:
    """Mean status polls and mean detection latency of a schedule ``delay(elapsed)``."""
    polls = latency = 0.0
    for duration in durations:
        t, count = 0.0, 0
        while t < duration:
            t += delay(t)  # type: ignore[operator]
            count += 1
        polls += count
        latency += t - duration
    return polls / len(durations), latency / len(durations)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- options


def test_adaptive_is_a_backoff_strategy() -> None:
    assert adaptive().strategy is BackoffStrategy.ADAPTIVE
    assert BackoffStrategy("adaptive") is BackoffStrategy.ADAPTIVE
    with pytest.raises(ValueError, match="'fixed', 'exponential' or 'adaptive'"):
        parse_polling({"backoff_strategy": "learned"}, stop_on_cancel=False)


def test_an_unbound_adaptive_schedule_is_the_exponential_one() -> None:
    delays = list(itertools.islice(adaptive(max_interval_ms=300).intervals(), 4))
    assert delays == pytest.approx([0.1, 0.15, 0.225, 0.3])


# --------------------------------------------------------------------------- the shape


def test_the_shape_is_deterministic_given_its_samples() -> None:
    samples = lognormal(1, 40, 0.3)
    shuffled = random.Random(2).sample(samples, len(samples))
    assert LearnedShape.from_samples(samples) == LearnedShape.from_samples(shuffled)
    polling = adaptive()
    first = poll_times(LearnedShape.from_samples(samples), polling, 5.0)
    again = poll_times(LearnedShape.from_samples(shuffled), polling, 5.0)
    assert first == again


def test_polls_skip_the_start_and_crowd_where_runs_end() -> None:
    samples = lognormal(3, 80, 0.1)
    times = poll_times(LearnedShape.from_samples(samples), adaptive(), max(samples))
    assert times[0] > 0.7 * min(samples)  # nothing ends early: no poll there
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 4
    assert max(gaps) < times[0] / 5  # then every ~0.1 s where the runs end


def test_delays_stay_within_a_quarter_interval_and_max_interval() -> None:
    shape = LearnedShape.from_samples([1.0] * 20)  # no spread at all: the floor bandwidth
    polling = adaptive(max_interval_ms=2000)
    delays = [shape.delay_after(t / 100, polling) for t in range(0, 10_000, 7)]
    assert min(delays) >= polling.interval / 4
    assert max(delays) <= polling.max_interval
    assert shape.delay_after(0.0, polling) > 0.5  # the first poll waits for the runs to end


def test_past_the_learned_range_the_interval_grows_to_the_cap() -> None:
    shape = LearnedShape.from_samples(lognormal(4, 30, 0.3))
    polling = adaptive(max_interval_ms=3000, backoff_factor=2)
    end = shape.times[-1]
    tail = [shape.delay_after(end + k * 0.5, polling) for k in range(40)]
    assert tail == sorted(tail)
    assert tail[1] > tail[0]
    assert tail[-1] == polling.max_interval


@pytest.mark.parametrize(("sigma", "limit"), [(0.3, 0.6), (0.1, 0.3)])
def test_polls_times_latency_beats_fixed_polling_at_the_same_latency(
    sigma: float, limit: float
) -> None:
    """Exact arithmetic on seeded durations, no clock: the issue's goals with margin."""
    shape = LearnedShape.from_samples(lognormal(5, 80, sigma))
    polling = adaptive()
    durations = lognormal(6, 2000, sigma)
    fixed_polls, fixed_latency = cost(lambda t: 0.1, durations)
    polls, latency = cost(lambda t: shape.delay_after(t, polling), durations)
    assert latency < 1.1 * fixed_latency  # the scale: fixed polling's latency
    assert polls * latency < limit * fixed_polls * fixed_latency


# --------------------------------------------------------------------------- the model


def test_the_model_needs_eight_samples_and_stays_bounded() -> None:
    model = PollingModel()
    for n in range(MIN_SAMPLES - 1):
        model.record("m", 1.0 + n / 100)
    assert model.shape("m") is None
    assert model.stats()["m"]["learned"] is False
    model.record("m", 1.1)
    assert model.shape("m") is not None
    for n in range(5 * WINDOW):
        model.record("m", 2.0 + n % 7 / 10)
    stats = model.stats()["m"]
    assert stats["samples"] == WINDOW
    assert stats["seen"] == 5 * WINDOW + MIN_SAMPLES
    assert len(model.export()["durations_ms"]["m"]) == WINDOW
    for n in range(MAX_MANIFESTS + 5):
        model.record(f"other{n}", 1.0)
    kept = model.stats()
    assert len(kept) == MAX_MANIFESTS
    assert "m" not in kept  # the least recently completed goes first
    assert f"other{MAX_MANIFESTS + 4}" in kept


def test_the_shape_is_rebuilt_only_when_the_window_has_changed_enough() -> None:
    model = PollingModel()
    for duration in lognormal(7, 64, 0.3):
        model.record("m", duration)
    built = model.shape("m")
    assert model.shape("m") is built
    for duration in lognormal(8, 8, 0.3):  # 8 < 72 // 8
        model.record("m", duration)
        assert model.shape("m") is built
    model.record("m", 1.5)  # 9 >= 73 // 8
    assert model.shape("m") is not built


def test_stats_export_and_seed() -> None:
    model = PollingModel("http://127.0.0.1:1/api")
    for duration in (1.0, 2.0, 3.0, 4.0, 5.0):
        model.record("m", duration)
    stats = model.stats()["m"]
    assert (stats["p10_ms"], stats["p50_ms"], stats["max_ms"]) == (1400, 3000, 5000)
    exported = model.export()
    assert exported == {
        "version": 1,
        "server": "http://127.0.0.1:1/api",
        "durations_ms": {"m": [1000.0, 2000.0, 3000.0, 4000.0, 5000.0]},
    }
    other = PollingModel()
    other.seed(exported)
    other.seed(exported)
    assert other.stats()["m"]["samples"] == 10
    assert other.shape("m") is not None
    other.clear()
    assert other.stats() == {}


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ([1, 2], TypeError, "export"),
        ({"version": 2, "durations_ms": {}}, ValueError, "version"),
        ({"durations_ms": [1]}, TypeError, "durations_ms"),
        ({"durations_ms": {"m": "123"}}, TypeError, r"durations_ms\['m'\]"),
        ({"durations_ms": {"m": [1, -1]}}, ValueError, r"durations_ms\['m'\]\[1\]"),
        ({"durations_ms": {"m": [1, float("nan")]}}, ValueError, "finite"),
        ({"durations_ms": {"m": [True]}}, ValueError, "milliseconds"),
    ],
)
def test_seed_names_what_is_wrong_and_adds_nothing(
    bad: object, error: type[Exception], match: str
) -> None:
    model = PollingModel()
    with pytest.raises(error, match=match):
        model.seed(bad)  # type: ignore[arg-type]
    assert model.stats() == {}


def test_record_and_durations_reject_bad_values() -> None:
    model = PollingModel()
    with pytest.raises(ValueError, match="duration"):
        model.record("m", -1.0)
    with pytest.raises(TypeError, match="manifest"):
        model.record(1, 1.0)  # type: ignore[arg-type]
    assert completed_duration(1000, 2500) == 1.5
    assert completed_duration(None, 2500) is None
    assert completed_duration(True, 2500) is None
    assert completed_duration(3000, 2500) is None


# --------------------------------------------------------------------------- one wait


def test_a_wait_polls_exponentially_then_switches_when_the_model_learns() -> None:
    model, clock = PollingModel(), FakeClock()
    schedule = WaitSchedule(model, adaptive(), clock.now, clock)
    schedule.observe("m", None)
    assert [schedule.next_delay() for _ in range(3)] == pytest.approx([0.1, 0.15, 0.225])
    for duration in lognormal(9, MIN_SAMPLES, 0.1):
        model.record("m", duration)
    clock.now += 0.475  # the three sleeps
    learned = schedule.next_delay()
    shape = model.shape("m")
    assert shape is not None
    assert learned == pytest.approx(shape.delay_after(0.475, adaptive()))
    assert learned > 0.5  # straight to where the runs end, not 0.3375


def test_a_wait_on_a_task_it_did_not_create_counts_from_created_at() -> None:
    import time

    model, clock = PollingModel(), FakeClock()
    model.seed({"durations_ms": {"m": [1500.0] * MIN_SAMPLES}})
    schedule = WaitSchedule(model, adaptive(), None, clock)
    schedule.observe("m", time.time() * 1000 - 1400)  # created 1.4 s ago
    shape = model.shape("m")
    assert shape is not None
    delay = schedule.next_delay()
    assert delay == pytest.approx(shape.delay_after(1.4, adaptive()), abs=0.05)
    assert delay < shape.delay_after(0.0, adaptive())


@pytest.mark.parametrize(
    ("server_age", "elapsed"),
    [(0.1, 0.1), (10.0, 0.2), (-10.0, 0.0)],  # in step, server clock behind, ahead
)
def test_a_created_task_is_placed_between_the_create_request_and_its_answer(
    server_age: float, elapsed: float
) -> None:
    """The create request went out 0.2 s before its answer: the creation lies in between,
    whatever the server's clock says."""
    import time

    model, clock = PollingModel(), FakeClock()
    model.seed({"durations_ms": {"m": [1500.0] * MIN_SAMPLES}})
    shape = model.shape("m")
    assert shape is not None
    schedule = WaitSchedule(model, adaptive(), clock.now - 0.2, clock)
    schedule.observe("m", (time.time() - server_age) * 1000)
    assert schedule.next_delay() == pytest.approx(shape.delay_after(elapsed, adaptive()), abs=0.01)


async def test_a_sleeping_wait_wakes_when_the_model_learns() -> None:
    """An exponential sleep of a minute is cut short by the learned schedule (the outer
    bound only guards against hanging)."""
    model, clock = PollingModel(), FakeClock()
    schedule = WaitSchedule(model, adaptive(), clock.now, clock)
    schedule.observe("m", None)
    clock.now += 0.99  # learned runs take about 1 s: the next poll is due at once
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(schedule.sleep, 60.0)
            await anyio.wait_all_tasks_blocked()  # the sleeper waits for learning
            for _ in range(MIN_SAMPLES):
                model.record("m", 1.0)


async def test_a_woken_wait_never_sleeps_longer_than_its_delay() -> None:
    model, clock = PollingModel(), FakeClock()
    schedule = WaitSchedule(model, adaptive(), clock.now, clock)
    schedule.observe("m", None)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(schedule.sleep, 0.05)
            await anyio.wait_all_tasks_blocked()  # the sleeper waits for learning
            for _ in range(MIN_SAMPLES):
                model.record("m", 50.0)  # the learned schedule would wait max_interval
    shape = model.shape("m")
    assert shape is not None
    assert shape.delay_after(0.0, adaptive()) == adaptive().max_interval == 10


def test_waiting_for_learning_is_bounded() -> None:
    async def main() -> None:
        model = PollingModel()
        events = [model.learned(f"m{n}") for n in range(MAX_MANIFESTS + 3)]
        assert [event.is_set() for event in events[:3]] == [True] * 3  # woken, sleeps on
        assert not any(event.is_set() for event in events[3:])
        for _ in range(MIN_SAMPLES):
            model.record("m5", 1.0)
        assert events[5].is_set()
        assert model.learned("m5").is_set()

    anyio.run(main)


# --------------------------------------------------------------------------- end to end


async def test_a_batch_switches_to_the_learned_schedule_after_eight_completions(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    """Runs of 0.5 s, 8 at a time. Before anything is learned a wait polls exponentially from
    20 ms: 0.02, 0.05, 0.095, 0.16, 0.26, 0.41, 0.64 s, about 7 polls; a wait that starts
    once 8 runs have completed knows when runs end and polls about twice."""
    done: list[int] = []
    known_at_start: dict[int, int] = {}

    def on_progress(index: int, task: object) -> None:
        known_at_start.setdefault(index, len(done))

    request = {"manifest": "demo::sleep", "inputValues": {"seconds": 0.5}}
    results = await client.tasks.run_many(
        [request] * 3 * MIN_SAMPLES,  # type: ignore[list-item]
        max_concurrency=MIN_SAMPLES,
        polling_options={"interval_ms": 20, "backoff_strategy": "adaptive",
                         "on_progress": on_progress},  # type: ignore[typeddict-item]
        on_result=lambda index, outcome: done.append(index),
    )
    polls = [result["stats"]["status_polls"] for result in results]
    unlearned = [polls[i] for i, known in known_at_start.items() if known == 0]
    learned = [polls[i] for i, known in known_at_start.items() if known >= MIN_SAMPLES]
    assert len(unlearned) == MIN_SAMPLES
    assert len(learned) >= MIN_SAMPLES
    # How many polls fit before 0.5 s depends on each poll's latency on a loaded machine
    # (about 7 when idle): what learning must do at any pace is poll less than that.
    assert max(learned) <= 3
    assert min(unlearned) > max(learned)
    assert emulator.stats()["requests"]["GET /v1/tasks/{id}"] == sum(polls)
    assert emulator.stats()["tasks_by_status"] == {"completed": 3 * MIN_SAMPLES}
    model = client.polling_model.stats()
    assert [entry["samples"] for entry in model.values()] == [3 * MIN_SAMPLES]


async def test_a_seeded_model_never_polls_past_the_deadline(
    client: OomolConnectClient, emulator: Emulator
) -> None:
    """Runs take about 1 s, so the first learned poll comes after the 0.3 s deadline: the
    one status request is the look at the deadline."""
    block = emulator.catalogue.find("demo::sleep")
    assert block is not None
    key = block.path  # what the server names it: the task's manifest_path
    client.polling_model.seed({"durations_ms": {key: [1000.0] * MIN_SAMPLES}})
    with pytest.raises(TimeoutError):
        await client.tasks.run(
            {"manifest": "demo::sleep", "inputValues": {"seconds": 1.0}},
            polling_options={"interval_ms": 20, "backoff_strategy": "adaptive",
                             "timeout_ms": 300},
        )
    assert emulator.stats()["requests"].get("GET /v1/tasks/{id}", 0) == 1
    assert emulator.stats()["tasks_by_status"] == {"stopped": 1}


async def test_watch_waits_and_install_waits_teach_the_same_model(
    client: OomolConnectClient,
) -> None:
    task = await client.tasks.create({"manifest": "demo::sleep", "inputValues": {"seconds": 0.1}})
    async with client.tasks.watch(task["id"], {"interval_ms": 20}) as events:
        async for _ in events:
            pass
    await client.tasks.run({"manifest": "demo::echo", "inputValues": {"text": "hi"}})
    await client.packages.install_and_wait(
        "text-tools", polling_options={"interval_ms": 10, "backoff_strategy": "adaptive"}
    )
    learned = client.polling_model.stats()
    assert len(learned) == 3
    assert learned["install:text-tools"]["samples"] == 1
    assert sorted(entry["samples"] for entry in learned.values()) == [1, 1, 1]
    sleep = [entry for key, entry in learned.items() if "sleep" in key]
    assert sleep
    assert sleep[0]["p50_ms"] >= 100


async def test_a_warm_start_from_another_client_skips_the_exponential_waits(
    client: OomolConnectClient, emulator_url: str, emulator: Emulator
) -> None:
    request = {"manifest": "demo::sleep", "inputValues": {"seconds": 0.5}}
    options = {"interval_ms": 20, "backoff_strategy": "adaptive"}
    await client.tasks.run_many(
        [request] * MIN_SAMPLES, max_concurrency=MIN_SAMPLES,  # type: ignore[list-item]
        polling_options=options,  # type: ignore[arg-type]
    )
    async with OomolConnectClient(base_url=emulator_url) as fresh:
        fresh.polling_model.seed(client.polling_model.export())
        result = await fresh.tasks.run(request, polling_options=options)  # type: ignore[arg-type]
    assert result["stats"]["status_polls"] <= 3


def test_an_adopted_task_is_polled_by_its_age_not_from_the_wait_start() -> None:
    # A batch that adopts the task of an interrupted create (made by an earlier process)
    # must not take the task for one created just now, as it rightly does its own.
    import time
    from types import SimpleNamespace

    from oomol_connect_anyio._task_wait import TaskWait

    model = PollingModel()
    model.seed({"durations_ms": {"m": [1500.0] * MIN_SAMPLES}})
    shape = model.shape("m")
    assert shape is not None
    source: Any = SimpleNamespace(polling_model=model)
    created = {"id": "t", "status": "running", "manifest_path": "m",
               "created_at": time.time() * 1000 - 1400}  # created 1.4 s ago
    delays = {}
    for adopted in (True, False):
        waiter = TaskWait.after_create(
            source, created, adaptive(), time.monotonic(), adopted=adopted
        )
        waiter._observe(created)  # what wait() does first with the create answer
        assert waiter._polling.next_delay is not None
        delays[adopted] = waiter._polling.next_delay()
    assert delays[True] == pytest.approx(shape.delay_after(1.4, adaptive()), abs=0.05)
    assert delays[False] == pytest.approx(shape.delay_after(0.0, adaptive()), abs=0.05)
    assert delays[True] < delays[False]
