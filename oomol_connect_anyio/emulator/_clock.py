"""Monotonic clock with a fixed mapping to epoch milliseconds."""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    """Reads a monotonic clock and converts its readings to epoch milliseconds."""

    __slots__ = ("_offset", "now")

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self._offset = time.time() - now()

    def ms(self, instant: float) -> int:
        """Epoch milliseconds of a (finite) reading of this clock."""
        return int((instant + self._offset) * 1000)
