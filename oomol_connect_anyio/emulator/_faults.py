"""Seedable fault injection per route template."""

from __future__ import annotations

import random
from dataclasses import dataclass

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
    """Faults for one route template (`"GET /v1/tasks/{id}"`) or for all routes (`"*"`)."""

    route: str = "*"
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    rate_limit_every: int | None = None
    retry_after: float = 1.0
    latency: tuple[float, float] | None = None
    drop_rate: float = 0.0
    drop_after_accept: bool = False
    hang: float | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not self.error_statuses or any(s < 400 or s > 599 for s in self.error_statuses):
            raise ValueError("error_statuses must be non-empty HTTP error statuses")
        if self.rate_limit_every is not None and self.rate_limit_every < 1:
            raise ValueError("rate_limit_every must be at least 1")
        if self.latency is not None and not 0.0 <= self.latency[0] <= self.latency[1]:
            raise ValueError("latency must be (low, high) with 0 <= low <= high")
        if self.retry_after < 0 or (self.hang is not None and self.hang < 0):
            raise ValueError("retry_after and hang must not be negative")


@dataclass(slots=True)
class Fault:
    """What the injector decided for one request."""

    delay: float = 0.0
    kind: str | None = None
    status: int = 0
    retry_after: float = 0.0

    def response(self) -> Response | None:
        """The error response replacing the real one, if any."""
        if self.kind == "rate_limited":
            body = dumps({"success": False, "message": "too many requests"})
            return Response(429, body, [(b"retry-after", f"{self.retry_after:g}".encode())])
        if self.kind == "error":
            message = f"injected fault: HTTP {self.status}"
            return Response(self.status, dumps({"success": False, "message": message}))
        return None


class FaultInjector:
    """Holds the fault rules and draws the faults of each request."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._seen: list[int] = []

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        """The active rules, in the order they are evaluated."""
        return tuple(self._rules)

    def add(self, rule: FaultRule) -> None:
        """Add a rule; every matching rule adds its delay, the first failure wins."""
        self._rules.append(rule)
        self._seen.append(0)

    def clear(self) -> None:
        """Remove every rule (and their rate-limit counters)."""
        self._rules.clear()
        self._seen.clear()

    def decide(self, route: str) -> Fault | None:
        """The faults of one request to `route` ("METHOD /template"), or None."""
        fault: Fault | None = None
        for index, rule in enumerate(self._rules):
            if rule.route != "*" and rule.route != route:
                continue
            fault = fault or Fault()
            self._seen[index] += 1
            fault.delay += self._delay(rule)
            if fault.kind is None:
                self._draw_failure(rule, self._seen[index], fault)
        return fault

    def _delay(self, rule: FaultRule) -> float:
        delay = rule.hang or 0.0
        if rule.latency is not None:
            delay += self._rng.uniform(*rule.latency)
        return delay

    def _draw_failure(self, rule: FaultRule, seen: int, fault: Fault) -> None:
        if rule.rate_limit_every and seen % rule.rate_limit_every == 0:
            fault.kind, fault.retry_after = "rate_limited", rule.retry_after
        elif rule.error_rate and self._rng.random() < rule.error_rate:
            fault.kind, fault.status = "error", self._rng.choice(rule.error_statuses)
        elif rule.drop_rate and self._rng.random() < rule.drop_rate:
            fault.kind = "dropped_after_accept" if rule.drop_after_accept else "dropped"
