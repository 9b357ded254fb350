"""A batch's view of the server's load, fed by every answer its requests get.

``run_many`` makes one ``BatchPressure`` per batch and puts it in ``current_pressure``
in its feeder task; the runs it starts, and the creates they hand to the client's service
group, are started from there and inherit it (both anyio backends copy the spawning task's
context). The transport reports each answer with ``report_answer``; the feeder calls
``admit`` before each new run and ``release`` when it ends.

Two rules:

- **A batch backs off together.** A 429, or an error answer carrying ``Retry-After``, seen
  by any request of the batch (a create, a status poll, a log fetch) pauses the batch's new
  creates for as long as the transport would wait before retrying it.
- **Adaptive window (opt-in).** The batch admits at most ``window`` runs at once, starting
  at the ceiling: an overload answer (429 or 503) to any request halves it, +1 after
  ``window`` clean (2xx) answers to creates, always within ``[1, ceiling]``. Only creates
  count as clean: a poll answered says nothing about room for one more task, and polls
  outnumber creates so much that they would grow the window back at once. Only answers
  to requests sent after the last halving count, so a burst of simultaneous 429s (all
  sent before the first of them came back) halves the window once, as TCP halves its
  window at most once per round trip.
"""

from __future__ import annotations

import contextvars
import math
import time
from typing import TYPE_CHECKING

import anyio

from ._log import logger
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._replies import Reply

OVERLOAD_STATUSES = frozenset({429, 503})
"""Answers that say the server is overloaded (for the adaptive window)."""
CREATE = "POST /v1/tasks"
"""The transport's label of a create, whose clean answers grow the window."""


class BatchPressure:
    """The pause and (when ``adaptive``) the window of one batch; see the module docstring.

    ``window`` is the current window (the ceiling when not adaptive), ``overloads`` the
    overload answers seen and ``halvings`` how often the window was halved: cheap to read
    from a callback of the batch (``current_pressure.get()``).
    """

    def __init__(self, retry: RetryPolicy, ceiling: float, *, adaptive: bool) -> None:
        if adaptive and not math.isfinite(ceiling):
            raise ValueError("adaptive_concurrency needs a finite limit (max_concurrency or "
                             "a limiter with finite total_tokens)")
        self._retry = retry
        self.adaptive = adaptive
        self.ceiling = ceiling
        self.window = ceiling
        self.active = 0
        self.overloads = 0
        self.halvings = 0
        self._resume_at = -math.inf  # anyio clock: new creates wait until then
        self._cut_at = -math.inf  # time.monotonic() of the last halving
        self._clean = 0
        self._changed = anyio.Event()

    def report(
        self, label: str, status: int, retry_after: float | None, sent_at: float
    ) -> None:
        """Take one answer to a request (``label``: "METHOD /route") into account;
        ``sent_at`` is ``time.monotonic()`` when it was sent."""
        if status == 429 or (status >= 400 and retry_after is not None):
            pause = self._retry.delay(0, retry_after)
            self._resume_at = max(self._resume_at, anyio.current_time() + pause)
        if not self.adaptive or sent_at < self._cut_at:
            return  # not adaptive, or an answer to a request sent before the last halving
        if status in OVERLOAD_STATUSES:
            self.overloads += 1
            self._clean = 0
            self._cut_at = time.monotonic()
            narrower = max(1, int(self.window) // 2)
            if narrower < self.window:
                self.halvings += 1
                logger.debug("batch window %d -> %d after HTTP %d", self.window, narrower, status)
                self.window = narrower
        elif 200 <= status < 300 and label == CREATE and self.window < self.ceiling:
            self._clean += 1
            if self._clean >= self.window:
                self._clean = 0
                self.window += 1
                self._notify()

    async def admit(self) -> None:
        """Wait for a place in the window and for the end of any pause; take the place."""
        while self.adaptive and self.active >= self.window:
            await self._changed.wait()
        self.active += 1
        try:
            await self.resumed()
        except BaseException:
            self.release()
            raise

    async def resumed(self) -> None:
        """Wait until no pause is on (a pause reported meanwhile extends the wait)."""
        waited_for = -math.inf
        while waited_for < self._resume_at:
            waited_for = self._resume_at
            await anyio.sleep_until(waited_for)

    def release(self) -> None:
        """A run admitted by ``admit`` has ended."""
        self.active -= 1
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


current_pressure: contextvars.ContextVar[BatchPressure | None] = contextvars.ContextVar(
    "oomol_connect_anyio_batch_pressure", default=None
)


def report_answer(label: str, reply: Reply, sent_at: float) -> None:
    """Tell the batch the current request belongs to (if any) about an answer (its
    ``Retry-After`` is read only then)."""
    pressure = current_pressure.get()
    if pressure is not None:
        pressure.report(label, reply.status, reply.retry_after, sent_at)
