"""When a failed request is sent again, and after how long."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses worth another attempt: a proxy or the server is busy or restarting."""

_MAX_EXPONENT = 64  # beyond it, 2**attempt only overflows a float: the cap applies anyway


def _check_delay(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """How requests are retried: exponential backoff with full jitter, capped at
    ``max_delay``; a ``Retry-After`` up to ``max_retry_after`` replaces the backoff (a longer
    one is taken for a misconfigured proxy, and the backoff applies)."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries}")
        _check_delay("retry_delay", self.initial_delay)
        _check_delay("max_retry_delay", self.max_delay)
        _check_delay("max_retry_after", self.max_retry_after)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None and retry_after <= self.max_retry_after:
            return retry_after
        backoff = self.initial_delay * 2.0 ** min(attempt, _MAX_EXPONENT)
        return random.uniform(0, min(self.max_delay, backoff))

    def retries_answer(self, status: int, retry_after: float | None, idempotent: bool) -> bool:
        """Whether an answer with ``status`` is worth sending the request again.

        A 429, or any retryable status carrying ``Retry-After``, says the server did not take
        the request: even a create is safe to resend. Other retryable statuses (a 502 or 504
        from a proxy, a bare 503) may follow a request the server did process, so only
        idempotent requests are resent after them.
        """
        if status not in RETRY_STATUSES:
            return False
        return idempotent or status == 429 or retry_after is not None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); ``None`` when
    absent or unusable ("nan", "inf", negative, garbage)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when.timestamp() - time.time())
