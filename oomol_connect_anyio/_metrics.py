"""Cheap counters: client-wide running totals and per-wait statistics."""

from __future__ import annotations

import contextvars
from collections import Counter
from dataclasses import dataclass, field
from typing import TypedDict


class MetricsSnapshot(TypedDict):
    """A copy of a client's running totals (see ``OomolConnectClient.metrics``)."""

    requests: dict[str, dict[str, int]]
    retries: int
    bytes_received: int
    in_flight_runs: int
    stops_sent: int


@dataclass
class ClientMetrics:
    """Running totals of one client; ``snapshot()`` copies them."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: int = 0
    bytes_received: int = 0
    in_flight_runs: int = 0
    stops_sent: int = 0

    def snapshot(self) -> MetricsSnapshot:
        by_route: dict[str, dict[str, int]] = {}
        for (route, status_class), count in self.requests.items():
            by_route.setdefault(route, {})[status_class] = count
        return {
            "requests": by_route,
            "retries": self.retries,
            "bytes_received": self.bytes_received,
            "in_flight_runs": self.in_flight_runs,
            "stops_sent": self.stops_sent,
        }


@dataclass
class RequestTally:
    """What the requests made inside one wait cost (filled in by the transport)."""

    requests: int = 0
    retries: int = 0
    bytes_received: int = 0


@dataclass(frozen=True)
class RequestEvent:
    """What ``on_request`` sees before each attempt (never a header, so never the token)."""

    method: str
    route: str
    url: str
    attempt: int


@dataclass(frozen=True)
class ResponseEvent:
    """What ``on_response`` sees after each attempt: a status, or the error's type name."""

    method: str
    route: str
    url: str
    attempt: int
    status: int | None
    error: str | None
    elapsed: float
    bytes: int


current_tally: contextvars.ContextVar[RequestTally | None] = contextvars.ContextVar(
    "oomol_connect_anyio_tally", default=None
)
