"""Validating ``PollingOptions`` into a schedule, before any request."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from ._types import BackoffStrategy

_KNOWN = frozenset(
    {
        "interval_ms",
        "timeout_ms",
        "max_interval_ms",
        "backoff_strategy",
        "backoff_factor",
        "on_progress",
        "on_log",
        "stop_on_cancel",
        "log_grace_ms",
        "poll_error_budget_ms",
    }
)


@dataclass(frozen=True)
class Polling:
    """Parsed polling options (seconds, not milliseconds)."""

    interval: float = 2.0
    max_interval: float = 10.0
    strategy: BackoffStrategy = BackoffStrategy.EXPONENTIAL
    factor: float = 1.5
    timeout: float | None = None
    on_progress: Callable[[Any], Any] | None = None
    on_log: Callable[[Any], Any] | None = None
    stop_on_cancel: bool = False
    log_grace: float = 1.0
    poll_error_budget: float = 60.0
    # An adaptive wait's learned delays and its sleep, which learning may cut short
    # (``_adaptive.WaitSchedule``), bound per wait.
    next_delay: Callable[[], float] | None = None
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    def intervals(self) -> Iterator[float]:
        """The sleeps between polls: ``interval * factor**n`` capped, fixed, or learned."""
        if self.next_delay is not None:
            while True:
                yield self.next_delay()
        current = self.interval
        while True:
            yield current
            if self.strategy is not BackoffStrategy.FIXED:  # adaptive, unbound: exponential
                current = min(self.max_interval, current * self.factor)


def _positive_ms(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default * 1000)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"polling option {key} must be a number of milliseconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"polling option {key} must be > 0 milliseconds, not {value!r}")
    return float(value) / 1000


def _callback(options: Mapping[str, Any], key: str) -> Callable[[Any], Any] | None:
    value = options.get(key)
    if value is not None and not callable(value):
        raise TypeError(f"polling option {key} must be callable, not {type(value).__name__}")
    return value


def parse_polling(options: Mapping[str, Any] | None, *, stop_on_cancel: bool) -> Polling:
    """Check every option and return a ``Polling``; ``stop_on_cancel`` is the default."""
    options = options or {}
    if not isinstance(options, Mapping):
        raise TypeError(f"polling_options must be a dict, not {type(options).__name__}")
    unknown = set(options) - _KNOWN
    if unknown:
        raise ValueError(f"unknown polling option(s): {sorted(map(str, unknown))}")
    interval = _positive_ms(options, "interval_ms", 2.0)
    max_interval = _positive_ms(options, "max_interval_ms", max(10.0, interval))
    factor = options.get("backoff_factor", 1.5)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
        raise ValueError(f"polling option backoff_factor must be >= 1, not {factor!r}")
    try:
        strategy = BackoffStrategy(options.get("backoff_strategy", BackoffStrategy.EXPONENTIAL))
    except ValueError:
        raise ValueError(
            f"polling option backoff_strategy must be 'fixed', 'exponential' or 'adaptive', "
            f"not {options['backoff_strategy']!r}"
        ) from None
    timeout = None if options.get("timeout_ms") is None else _positive_ms(options, "timeout_ms", 0)
    stop = options.get("stop_on_cancel", stop_on_cancel)
    if not isinstance(stop, bool):
        raise TypeError(f"polling option stop_on_cancel must be a bool, not {stop!r}")
    return Polling(
        interval=interval,
        max_interval=max(max_interval, interval),
        strategy=strategy,
        factor=float(factor),
        timeout=timeout,
        on_progress=_callback(options, "on_progress"),
        on_log=_callback(options, "on_log"),
        stop_on_cancel=stop,
        log_grace=_positive_ms(options, "log_grace_ms", 1.0),
        poll_error_budget=_positive_ms(options, "poll_error_budget_ms", 60.0),
    )
