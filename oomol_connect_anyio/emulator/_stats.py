"""Cheap request, status and fault counters."""

from __future__ import annotations

from collections import deque
from typing import Any

ANSWER_LOG_SIZE = 10_000


class Stats:
    """Counters since creation or the last reset."""

    def __init__(self, now: float) -> None:
        self.reset(now)

    def reset(self, now: float) -> None:
        """Zero every counter; `since` marks the reset time."""
        self.since = now
        self.requests: dict[str, int] = {}
        self.statuses: dict[str, dict[str, int]] = {}
        self.faults: dict[str, dict[str, int]] = {}
        self.tasks_created = 0
        self.stops = 0
        self.bytes_sent = 0
        self.clients: set[object] = set()
        self.answer_log: deque[tuple[str, str]] = deque(maxlen=ANSWER_LOG_SIZE)
        """The last answers in the order they were sent: (route, status or "dropped")."""

    def request(self, route: str, client: object = None) -> None:
        """Count a request to a route ("METHOD /template") from a client address."""
        self.requests[route] = self.requests.get(route, 0) + 1
        if client is not None:
            self.clients.add(client)

    def response(self, route: str, outcome: str, size: int = 0) -> None:
        """Count a response status (or "dropped") and its body size."""
        _bump(self.statuses, route, outcome)
        self.answer_log.append((route, outcome))
        self.bytes_sent += size

    def fault(self, route: str, kind: str) -> None:
        """Count an injected fault."""
        _bump(self.faults, route, kind)

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain JSON-able data."""
        return {
            "requests": dict(self.requests),
            "statuses": {route: dict(counts) for route, counts in self.statuses.items()},
            "faults": {route: dict(counts) for route, counts in self.faults.items()},
            "tasks_created": self.tasks_created,
            "stops": self.stops,
            "bytes_sent": self.bytes_sent,
            "connections": len(self.clients),
        }


def _bump(table: dict[str, dict[str, int]], route: str, key: str) -> None:
    counts = table.get(route)
    if counts is None:
        counts = table[route] = {}
    counts[key] = counts.get(key, 0) + 1
