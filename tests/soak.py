"""Fault soak: many ``run_many`` runs against a faulty emulator; nothing lost, nothing leaked.

``tests/test_faults.py`` runs the soak on every CI run; run a bigger one by hand::

    .venv/bin/python tests/soak.py --runs 5000 --concurrency 50 --backend trio --seed 3

The client keeps its default settings (only its transport retry delay is shortened, which
only shortens waits). The emulator answers 20% of the GETs with 503, every 7th GET with 429
and ``Retry-After``, adds 0-5 ms of latency to every request, drops 1% of the GET
connections mid-response and 1% of the creates after creating the task, and answers every
route 503 for 3 s in the middle of the runs. Every run echoes a unique input (some after a
short sleep, so that their status is polled); the soak then checks that each run got its own
result back, that the server created exactly one task per run, that each injected fault
reached the client as one, that every poll chain ended with an answer, that no task is left
running, and that the token appears in no log record (ours, httpx's or httpcore's, at
DEBUG), error or repr. Exit status 1 when a check fails.

A GET fails with probability p ~= 1/7 + 6/7 * (0.2 + 0.8 * 0.01) ~= 0.32, so about p ** 3
~= 3% of the requests exhaust the default 2 retries: each is a missed poll, and the wait
polls on (see ``poll_error_budget_ms``); so is every poll during the outage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from oomol_connect_anyio import OomolConnectClient
from oomol_connect_anyio.emulator import BlockContext, Emulator, FaultRule, serve_emulator

TOKEN = "soak-T0KEN-7d1f0c9e-never-log-me"
FAULTED_GETS = ("GET /v1/tasks/{id}", "GET /v1/tasks/{id}/logs")
BLOCK = "soak::echo-later"
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
WATCHED_LOGGERS = ("oomol_connect_anyio", "httpx", "httpcore")


@dataclass(frozen=True)
class SoakConfig:
    runs: int = 500
    concurrency: int = 50
    error_rate: float = 0.2
    rate_limit_every: int = 7
    retry_after: float = 0.01
    latency: tuple[float, float] = (0.0, 0.005)
    drop_rate: float = 0.01
    create_drop_rate: float = 0.01
    outage_start: float = 1.0
    outage: float = 3.0
    outage_route: str = "*"
    max_retries: int | None = None  # None: the client's default
    retry_delay: float = 0.001
    interval_ms: float = 20
    max_interval_ms: float = 250
    seed: int = 1


@dataclass
class Attempt:
    """One HTTP attempt as the client's transport saw it: a status, or an error's name."""

    method: str
    path: str
    status: int | None
    error: str | None

    @property
    def retryable(self) -> bool:
        return self.error is not None or self.status in RETRYABLE_STATUSES


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, recording every attempt (the body is read here, so a
    connection dropped mid-body is recorded as the error it is)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20))
        self._inner = httpx.AsyncHTTPTransport(**kwargs)
        self.attempts: list[Attempt] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.raw_path.decode()
        try:
            response = await self._inner.handle_async_request(request)
            try:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except Exception as exc:
            self.attempts.append(Attempt(method, path, None, type(exc).__name__))
            raise
        self.attempts.append(Attempt(method, path, response.status_code, None))
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

    def by_path(self, method: str = "GET") -> dict[str, list[Attempt]]:
        """Attempts per path, in order (the polls of one path never overlap)."""
        paths: dict[str, list[Attempt]] = defaultdict(list)
        for attempt in self.attempts:
            if attempt.method == method:
                paths[attempt.path].append(attempt)
        return paths


def fault_runs(attempts: list[Attempt]) -> list[tuple[int, Attempt | None]]:
    """Split one path's attempts into requests: (retryable attempts, final answer or None)."""
    requests: list[tuple[int, Attempt | None]] = []
    faults = 0
    for attempt in attempts:
        if attempt.retryable:
            faults += 1
            continue
        requests.append((faults, attempt))
        faults = 0
    if faults:
        requests.append((faults, None))
    return requests


class SecretWatch(logging.Handler):
    """Formats every record (with its traceback) and remembers those showing ``secret``."""

    def __init__(self, secret: str) -> None:
        super().__init__(logging.DEBUG)
        self.secret = secret
        self.records = 0
        self.levels: Counter[str] = Counter()
        self.leaks: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        self.levels[f"{record.name}:{record.levelname}"] += 1
        text = self.format(record) + repr(record.args) + repr(record.__dict__)
        if self.secret in text:
            self.leaks.append(text[:300])


@contextmanager
def watch_logs(secret: str) -> Iterator[SecretWatch]:
    """Capture the client's, httpx's and httpcore's loggers at DEBUG while the block runs."""
    watch = SecretWatch(secret)
    saved = []
    for name in WATCHED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(watch)
    try:
        yield watch
    finally:
        for logger, level in saved:
            logger.removeHandler(watch)
            logger.setLevel(level)


@dataclass
class SoakReport:
    config: SoakConfig
    seconds: float = 0.0
    inputs: list[dict[str, Any]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    attempts: RecordingTransport | None = None
    log_records: int = 0
    log_levels: dict[str, int] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)
    missed_polls: int = 0
    error: BaseException | None = None


def _echo_later(ctx: BlockContext) -> dict[str, Any]:
    """Echo the inputs, one run in five at once, the others after up to 80 ms."""
    ctx.sleep((int(ctx.inputs.get("run", 0)) % 5) * 0.02)
    return dict(ctx.inputs)


def add_faults(emulator: Emulator, config: SoakConfig) -> None:
    emulator.faults.add(
        FaultRule(
            route="GET *",
            error_rate=config.error_rate,
            error_statuses=(503,),
            rate_limit_every=config.rate_limit_every,
            retry_after=config.retry_after,
            latency=config.latency,
            drop_rate=config.drop_rate,
        )
    )
    # A dropped create may have created its task: the client must not create a second one.
    emulator.faults.add(
        FaultRule(
            route="POST /v1/tasks",
            latency=config.latency,
            drop_rate=config.create_drop_rate,
            drop_after_accept=True,
        )
    )
    if config.outage:
        emulator.faults.add(
            FaultRule.outage(config.outage, start=config.outage_start, route=config.outage_route)
        )


async def run_soak(config: SoakConfig) -> SoakReport:
    """Run the soak on the current event loop and return what ``verify`` checks."""
    report = SoakReport(config)
    emulator = Emulator(token=TOKEN, seed=config.seed)
    emulator.register_block(BLOCK, _echo_later)
    recorder = report.attempts = RecordingTransport()
    nonce = uuid.uuid4().hex
    report.inputs = [{"run": index, "nonce": f"{nonce}-{index}"} for index in range(config.runs)]
    requests = [{"manifest": BLOCK, "inputValues": dict(item)} for item in report.inputs]
    polling: Any = {"interval_ms": config.interval_ms, "max_interval_ms": config.max_interval_ms}
    retries: Any = {} if config.max_retries is None else {"max_retries": config.max_retries}
    with watch_logs(TOKEN) as watch:
        async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
            client = OomolConnectClient(
                base_url=url,
                api_token=TOKEN,
                retry_delay=config.retry_delay,
                transport=recorder,
                **retries,
            )
            async with client:
                add_faults(emulator, config)  # the outage window starts from here
                started = time.perf_counter()
                try:
                    outcomes = await client.tasks.run_many(
                        requests, max_concurrency=config.concurrency, polling_options=polling
                    )
                except Exception as exc:  # reported, then checked by verify()
                    report.error = exc
                    outcomes = []
                report.seconds = time.perf_counter() - started
                report.results = [outcome["result"] for outcome in outcomes]
                report.task_ids = [outcome["task_id"] for outcome in outcomes]
                report.missed_polls = sum(outcome["stats"]["missed_polls"] for outcome in outcomes)
                report.metrics = dict(client.metrics)
                for text in (repr(client), str(client), repr(report.metrics)):
                    if TOKEN in text:
                        report.leaks.append(f"client: {text[:200]}")
            report.stats = emulator.stats()
    report.log_records = watch.records
    report.log_levels = dict(watch.levels)
    report.leaks += watch.leaks
    if report.error is not None and TOKEN in _describe(report.error):
        report.leaks.append("an exception shows the token")
    return report


def _describe(error: BaseException) -> str:
    parts = [repr(error), str(error)]
    for inner in getattr(error, "exceptions", ()):
        parts.append(_describe(inner))
    if error.__cause__ is not None:
        parts.append(repr(error.__cause__))
    return "\n".join(parts)


def _label(route: str) -> str:
    """The emulator's route template for one of the client's metric labels."""
    return route.replace("{}", "{id}")


def verify(report: SoakReport) -> list[str]:
    """Every broken promise, as a sentence; an empty list means the soak passed."""
    config, stats, problems = report.config, report.stats, []
    runs = config.runs
    if report.error is not None:
        problems.append(f"run_many raised {_describe(report.error)[:2000]}")
    # Nothing lost: each run got its own input echoed back, from its own task.
    pairs = enumerate(zip(report.results, report.inputs, strict=False))
    wrong = [index for index, (got, sent) in pairs if got != sent]
    if len(report.results) != runs or wrong:
        problems.append(f"{len(report.results)} results for {runs} runs, wrong: {wrong[:10]}")
    if len(set(report.task_ids)) != len(report.task_ids):
        problems.append("two runs report the same task id")
    # Nothing duplicated: exactly one task per run (a create may be sent again only when
    # the server surely took nothing).
    if stats["tasks_created"] != runs:
        problems.append(f"the server created {stats['tasks_created']} tasks for {runs} runs")
    # Nothing left running.
    if stats["tasks_by_status"] != {"completed": runs}:
        problems.append(f"tasks by status: {stats['tasks_by_status']}")
    if report.metrics.get("in_flight_runs") != 0 or report.metrics.get("stops_sent") != 0:
        problems.append(f"client metrics after the soak: {report.metrics}")
    problems += _verify_retries(report)
    # Nothing leaked.
    problems += [f"token leaked: {leak}" for leak in report.leaks]
    if report.log_records == 0:
        problems.append("no log record was captured: the log check proves nothing")
    return problems


def _verify_retries(report: SoakReport) -> list[str]:
    stats, problems = report.stats, []
    recorder = report.attempts
    assert recorder is not None
    faults = stats["faults"]
    for route in FAULTED_GETS:
        kinds = faults.get(route, {})
        statuses = stats["statuses"].get(route, {})
        # The server saw each attempt once: its answers plus its dropped connections.
        if stats["requests"].get(route, 0) != sum(statuses.values()):
            problems.append(f"{route}: {stats['requests'].get(route)} requests, {statuses}")
        # Each injected error and 429 reached the client as one.
        client = report.metrics["requests"].get(_client_label(report, route), {})
        if client.get("5xx", 0) != kinds.get("error", 0):
            problems.append(f"{route}: client saw {client} for injected {kinds}")
        if client.get("4xx", 0) != kinds.get("rate_limited", 0):
            problems.append(f"{route}: client saw {client} for injected {kinds}")
    # Every faulted poll was retried by the transport or, its retries spent, polled again on
    # the wait's schedule (a missed poll); and every task's polls ended with an answer.
    longest = faulted = 0
    for path, attempts in recorder.by_path("GET").items():
        if not path.startswith("/api/v1/tasks/"):
            continue
        for retries, final in fault_runs(attempts):
            longest = max(longest, retries)
            faulted += retries
            if final is None:
                problems.append(f"GET {path}: {retries} faults in a row, then nothing")
            elif final.status != 200:
                problems.append(f"GET {path}: answered {final.status}")
    if report.metrics["retries"] + report.missed_polls < faulted:
        problems.append(
            f"{faulted} faulted polls, {report.metrics['retries']} retries and "
            f"{report.missed_polls} missed polls"
        )
    report.stats["longest_fault_run"] = longest
    return problems


def _client_label(report: SoakReport, route: str) -> str:
    for label in report.metrics["requests"]:
        if _label(label) == route:
            return str(label)
    return route


def summary(report: SoakReport) -> str:
    stats, config = report.stats, report.config
    faults = {route: stats["faults"].get(route, {}) for route in FAULTED_GETS}
    return (
        f"{config.runs} runs at concurrency {config.concurrency} in {report.seconds:.2f} s; "
        f"tasks created {stats.get('tasks_created')}, by status {stats.get('tasks_by_status')}; "
        f"requests {stats.get('requests')}; faults {faults}; "
        f"client retries {report.metrics.get('retries')}, missed polls {report.missed_polls} "
        f"(longest run of faults on one path: {stats.get('longest_fault_run')}); "
        f"log records checked {report.log_records}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=SoakConfig.runs)
    parser.add_argument("--concurrency", type=int, default=SoakConfig.concurrency)
    parser.add_argument("--max-retries", type=int, help="the client's default if not given")
    parser.add_argument("--error-rate", type=float, default=SoakConfig.error_rate)
    parser.add_argument("--drop-rate", type=float, default=SoakConfig.drop_rate)
    parser.add_argument("--create-drop-rate", type=float, default=SoakConfig.create_drop_rate)
    parser.add_argument("--outage", type=float, default=SoakConfig.outage, metavar="S")
    parser.add_argument("--outage-route", default=SoakConfig.outage_route, metavar="PATTERN")
    parser.add_argument("--seed", type=int, default=SoakConfig.seed)
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    args = parser.parse_args(argv)
    config = SoakConfig(
        runs=args.runs,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        create_drop_rate=args.create_drop_rate,
        outage=args.outage,
        outage_route=args.outage_route,
        seed=args.seed,
    )
    failed = False
    for backend in ("asyncio", "trio") if args.backend == "both" else (args.backend,):
        report = anyio.run(run_soak, config, backend=backend)
        problems = verify(report)
        print(f"[{backend}] {summary(report)}")
        for problem in problems:
            print(f"[{backend}] FAILED: {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
