"""A create refused for now (429, or an error with ``Retry-After``) is asked again within the
run's outage budget, at default settings: no run is lost, no task made twice."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import served

from oomol_connect_anyio import RateLimitError, ServerError
from oomol_connect_anyio.emulator import Emulator, FaultRule

pytestmark = pytest.mark.anyio

FAST: Any = {"interval_ms": 20, "backoff_strategy": "fixed"}


def echo(index: int) -> dict[str, Any]:
    return {"manifest": "demo::echo", "inputValues": {"text": f"job {index}"}}


async def test_a_batch_loses_no_run_to_creates_answered_429(anyio_backend: str) -> None:
    """Every 4th create is answered 429: more refusals in a row than the transport's two
    retries happen at concurrency 10, and each refused create is asked again."""
    emulator = Emulator()
    emulator.faults.add(FaultRule(route="POST /v1/tasks", rate_limit_every=4, retry_after=0.01))
    async with served(emulator) as client:
        outcomes = await client.tasks.run_many(
            [echo(i) for i in range(40)], polling_options=FAST, return_exceptions=True,
            max_concurrency=10,
        )
    assert [o for o in outcomes if isinstance(o, Exception)] == []
    assert [o["result"] for o in outcomes] == [  # type: ignore[index]
        {"text": f"job {i}"} for i in range(40)
    ]
    stats = emulator.stats()
    assert stats["tasks_created"] == 40
    assert stats["statuses"]["POST /v1/tasks"]["429"] >= 10


@pytest.mark.parametrize("status", [429, 503])
async def test_refusals_past_the_outage_budget_fail_the_run(
    anyio_backend: str, status: int
) -> None:
    emulator = Emulator()
    emulator.faults.add(FaultRule(
        route="POST /v1/tasks", error_rate=1.0, error_statuses=(status,), error_retry_after=0.02,
    ))
    async with served(emulator) as client:
        with pytest.raises(RateLimitError if status == 429 else ServerError):
            await client.tasks.run(echo(0), {**FAST, "poll_error_budget_ms": 300})
    refused = emulator.stats()["requests"]["POST /v1/tasks"]
    assert refused > 3 * 2  # asked again beyond the transport's own retries
    assert emulator.stats()["tasks_created"] == 0


async def test_a_bare_create_keeps_the_transport_retries_only(anyio_backend: str) -> None:
    emulator = Emulator()
    emulator.faults.add(FaultRule(
        route="POST /v1/tasks", error_rate=1.0, error_statuses=(429,), error_retry_after=0.01,
    ))
    async with served(emulator) as client:
        with pytest.raises(RateLimitError):
            await client.tasks.create(echo(0))
    assert emulator.stats()["requests"]["POST /v1/tasks"] == 3
