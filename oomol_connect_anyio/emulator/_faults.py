"""Seedable fault injection per route pattern, optionally within a time window."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import httpx

from ._http import Response, dumps


class DroppedConnection(httpx.RemoteProtocolError):
    """Raised by the ASGI app to drop a connection after starting the response.

    Served by `serve_emulator`, the connection is closed and the client sees
    `httpx.RemoteProtocolError`; over `httpx.ASGITransport` this exception (a subclass
    of it) reaches the client directly.
    """


@dataclass(frozen=True)
class FaultRule:
    """Faults for the routes matching `route`, a shell-style pattern of "METHOD /template".

    `"*"` matches every route, `"GET *"` every GET, `"POST /v1/tasks"` the create route and
    `"POST /v1/tasks/{id}/stop"` the stop route. `start` and `duration` (seconds on the
    emulator's clock, from when the rule is added) bound when the rule applies; the
    default is from now on. `error_after_accept` answers the error after the request was
    handled (a proxy failing after the server acted), `error_retry_after` adds a
    `Retry-After` header to the error answers. `max_active` answers 429 (with
    `retry_after`) while that many tasks or more are active (created or running): a
    server that takes at most `max_active` tasks at once (counting them is linear in the
    retained tasks, for matching requests only).
    """

    route: str = "*"
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    rate_limit_every: int | None = None
    max_active: int | None = None
    retry_after: float = 1.0
    latency: tuple[float, float] | None = None
    drop_rate: float = 0.0
    drop_after_accept: bool = False
    hang: float | None = None
    error_after_accept: bool = False
    error_retry_after: float | None = None
    start: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("error_rate", "drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not self.error_statuses or any(s < 400 or s > 599 for s in self.error_statuses):
            raise ValueError("error_statuses must be non-empty HTTP error statuses")
        if self.rate_limit_every is not None and self.rate_limit_every < 1:
            raise ValueError("rate_limit_every must be at least 1")
        if self.max_active is not None and self.max_active < 0:
            raise ValueError("max_active must not be negative")
        if self.latency is not None and not 0.0 <= self.latency[0] <= self.latency[1]:
            raise ValueError("latency must be (low, high) with 0 <= low <= high")
        durations = (self.retry_after, self.hang, self.error_retry_after, self.start, self.duration)
        if any(value is not None and value < 0 for value in durations):
            raise ValueError("retry_after, hang, error_retry_after, start and duration must not "
                             "be negative")

    def _check_types(self) -> None:
        """Refuse a value of the wrong kind by name (rules also come from JSON files, where
        ``"latency": 0.1`` or ``"hang": true`` are easy to write)."""
        if not isinstance(self.route, str):
            raise TypeError(f"route must be a string, not {self.route!r}")
        for name in ("error_rate", "drop_rate", "retry_after", "start", "hang",
                     "error_retry_after", "duration", "rate_limit_every", "max_active"):
            value = getattr(self, name)
            if value is not None and not _is_number(value):
                raise TypeError(f"{name} must be a number, not {value!r}")
        for name in ("rate_limit_every", "max_active"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, int):
                raise TypeError(f"{name} must be a whole number, not {value!r}")
        for name in ("drop_after_accept", "error_after_accept"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, not {getattr(self, name)!r}")
        latency = self.latency
        if latency is not None and not (
            isinstance(latency, (tuple, list)) and len(latency) == 2
            and all(_is_number(bound) for bound in latency)
        ):
            raise TypeError(f"latency must be (low, high) in seconds, not {latency!r}")
        statuses = self.error_statuses
        if not isinstance(statuses, (tuple, list)) or not all(
            isinstance(status, int) and not isinstance(status, bool) for status in statuses
        ):
            raise TypeError(f"error_statuses must be HTTP statuses, not {statuses!r}")

    @classmethod
    def outage(
        cls, duration: float, *, start: float = 0.0, route: str = "*", status: int = 503
    ) -> FaultRule:
        """Every request to `route` answered `status` for `duration` seconds from `start`."""
        return cls(
            route=route, error_rate=1.0, error_statuses=(status,), start=start, duration=duration
        )

    @classmethod
    def from_json(cls, data: Any) -> FaultRule:
        """A rule from a JSON object (lists stand for tuples), as the CLI and HTTP take it."""
        if not isinstance(data, dict):
            raise TypeError("a fault rule must be a JSON object")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {unknown}")
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        """The rule as a JSON object (`from_json` reads it back)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


def rules_from_json(data: Any) -> list[FaultRule]:
    """A JSON list of rule objects (or one object) as fault rules."""
    items = data if isinstance(data, list) else [data]
    return [FaultRule.from_json(item) for item in items]


@dataclass(slots=True)
class Fault:
    """What the injector decided for one request."""

    delay: float = 0.0
    kind: str | None = None
    status: int = 0
    retry_after: float | None = None

    @property
    def after_accept(self) -> bool:
        """Whether the request is handled before the fault strikes."""
        return self.kind is not None and self.kind.endswith("_after_accept")

    def response(self) -> Response | None:
        """The error response replacing the real one, if any."""
        if self.kind == "rate_limited":
            body = dumps({"success": False, "message": "too many requests"})
            return Response(429, body, _retry_after(self.retry_after))
        if self.kind in ("error", "error_after_accept"):
            message = f"injected fault: HTTP {self.status}"
            body = dumps({"success": False, "message": message})
            return Response(self.status, body, _retry_after(self.retry_after))
        return None


def _retry_after(seconds: float | None) -> list[tuple[bytes, bytes]]:
    return [] if seconds is None else [(b"retry-after", f"{seconds:g}".encode())]


class FaultInjector:
    """Holds the fault rules and draws the faults of each request."""

    def __init__(self, seed: int | None = None, clock: Callable[[], float] = time.monotonic):
        self._rng = random.Random(seed)
        self._clock = clock
        self._rules: list[FaultRule] = []
        self._windows: list[tuple[float, float]] = []
        self._seen: list[int] = []

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        """The active rules, in the order they are evaluated."""
        return tuple(self._rules)

    def add(self, rule: FaultRule) -> None:
        """Add a rule; every matching rule adds its delay, the first failure wins."""
        begins = self._clock() + rule.start
        ends = float("inf") if rule.duration is None else begins + rule.duration
        self._rules.append(rule)
        self._windows.append((begins, ends))
        self._seen.append(0)

    def clear(self) -> None:
        """Remove every rule (and their rate-limit counters)."""
        self._rules.clear()
        self._windows.clear()
        self._seen.clear()

    def decide(self, route: str, active: Callable[[], int] | None = None) -> Fault | None:
        """The faults of one request to `route` ("METHOD /template"), or None;
        `active()` counts the active tasks (for `max_active`)."""
        fault: Fault | None = None
        now = self._clock()
        for index, rule in enumerate(self._rules):
            begins, ends = self._windows[index]
            if not begins <= now < ends:
                continue
            if not fnmatchcase(route, rule.route):
                continue
            fault = fault or Fault()
            self._seen[index] += 1
            fault.delay += self._delay(rule)
            if fault.kind is None:
                self._draw_failure(rule, self._seen[index], fault, active)
        return fault

    def _delay(self, rule: FaultRule) -> float:
        delay = rule.hang or 0.0
        if rule.latency is not None:
            delay += self._rng.uniform(*rule.latency)
        return delay

    def _draw_failure(
        self, rule: FaultRule, seen: int, fault: Fault, active: Callable[[], int] | None
    ) -> None:
        limit = rule.max_active
        busy = limit is not None and active is not None and active() >= limit
        if busy or (rule.rate_limit_every and seen % rule.rate_limit_every == 0):
            fault.kind, fault.retry_after = "rate_limited", rule.retry_after
        elif rule.error_rate and self._rng.random() < rule.error_rate:
            fault.kind = "error_after_accept" if rule.error_after_accept else "error"
            fault.status = self._rng.choice(rule.error_statuses)
            fault.retry_after = rule.error_retry_after
        elif rule.drop_rate and self._rng.random() < rule.drop_rate:
            fault.kind = "dropped_after_accept" if rule.drop_after_accept else "dropped"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
