"""The polling schedule and option parsing, without any server."""

from __future__ import annotations

import itertools

import pytest

from oomol_connect_anyio import BackoffStrategy
from oomol_connect_anyio._options import parse_polling


def take(n: int, options: dict[str, object]) -> list[float]:
    return list(itertools.islice(parse_polling(options, stop_on_cancel=False).intervals(), n))


def test_default_schedule_matches_the_official_client() -> None:
    assert take(6, {}) == [2.0, 3.0, 4.5, 6.75, 10.0, 10.0]


def test_fixed_schedule() -> None:
    assert take(3, {"interval_ms": 50, "backoff_strategy": BackoffStrategy.FIXED}) == [0.05] * 3


def test_custom_factor_and_cap() -> None:
    assert take(4, {"interval_ms": 100, "backoff_factor": 2, "max_interval_ms": 300}) == [
        0.1, 0.2, 0.3, 0.3,
    ]


def test_stop_on_cancel_default_and_override() -> None:
    assert parse_polling(None, stop_on_cancel=True).stop_on_cancel is True
    assert parse_polling({"stop_on_cancel": False}, stop_on_cancel=True).stop_on_cancel is False


def test_timeout_is_converted_to_seconds() -> None:
    assert parse_polling({"timeout_ms": 1500}, stop_on_cancel=False).timeout == 1.5
    assert parse_polling({"timeout_ms": None}, stop_on_cancel=False).timeout is None


def test_options_must_be_a_mapping() -> None:
    with pytest.raises(TypeError):
        parse_polling([("interval_ms", 1)], stop_on_cancel=False)  # type: ignore[arg-type]


def test_poll_error_budget_defaults_to_a_minute_and_is_converted_to_seconds() -> None:
    assert parse_polling(None, stop_on_cancel=False).poll_error_budget == 60.0
    budget = parse_polling({"poll_error_budget_ms": 250}, stop_on_cancel=False).poll_error_budget
    assert budget == 0.25
    bad_values = [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), (True, TypeError)]
    for bad, error in bad_values:
        with pytest.raises(error, match="poll_error_budget_ms"):
            parse_polling({"poll_error_budget_ms": bad}, stop_on_cancel=False)
