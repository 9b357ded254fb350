"""What ends a command early: SIGINT, SIGTERM, SIGHUP and ``--timeout``, each within a bound.

The first signal, or the ``--timeout`` deadline, cancels the command; the client then stops the
remote tasks it created (its stops are shielded from that cancel). Further signals do not cut
those stops short: they are only acknowledged. If the command has not ended ``HARD_BOUND_S``
seconds later (a server that does not answer the stops, or a create still in flight), the
process exits anyway, naming the tasks that may still run.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._errors import Exit
from ._ledger import Ledger

HARD_BOUND_S = 5.0
# SIGHUP does not exist on Windows.
SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

T = TypeVar("T")


class EndedEarly(Exception):
    """The command was cancelled from outside; ``exit_code`` says by what."""

    exit_code: int

    def __init__(self, message: str, ledger: Ledger) -> None:
        outcome = ledger.outcome()
        super().__init__(message if outcome is None else f"{message}; {outcome}")


class Interrupted(EndedEarly):
    """Ended by a signal: exit code 128 + the signal's number."""

    def __init__(self, signum: int, ledger: Ledger, *, gave_up: bool = False) -> None:
        self.exit_code = 128 + signum
        message = f"interrupted by {signal.Signals(signum).name}"
        if gave_up:
            message += f"; gave up waiting for the stops after {HARD_BOUND_S:g} s"
        super().__init__(message, ledger)


class CommandTimedOut(EndedEarly):
    """Ended by ``--timeout``."""

    exit_code = Exit.TIMED_OUT

    def __init__(self, seconds: float, ledger: Ledger, *, gave_up: bool = False) -> None:
        message = f"timed out after {seconds:g} s (--timeout)"
        if gave_up:
            message += f"; gave up waiting for the stops after {HARD_BOUND_S:g} s more"
        super().__init__(message, ledger)


Report = Callable[[BaseException], object]


async def run_bounded(
    command: Callable[[], Awaitable[T]],
    ledger: Ledger,
    report: Report,
    *,
    deadline_s: float | None = None,
) -> T:
    """``command()``, ended early by the first of ``SIGNALS`` or by ``deadline_s`` seconds.

    Raises :class:`Interrupted` or :class:`CommandTimedOut` once the command has wound down.
    When it does not wind down within ``HARD_BOUND_S``, ``report`` is given the reason and the
    process exits at once.
    """
    ended: list[Callable[..., EndedEarly]] = []
    command_scope = anyio.CancelScope()
    error: Exception | None = None

    async def hard_bound() -> None:
        await anyio.sleep(HARD_BOUND_S)
        reason = ended[0](gave_up=True)
        report(reason)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(reason.exit_code)

    def end(reason: Callable[..., EndedEarly]) -> None:
        ended.append(reason)
        command_scope.cancel()
        group.start_soon(hard_bound)

    try:
        with anyio.open_signal_receiver(*SIGNALS) as signals:
            async with anyio.create_task_group() as group:

                async def on_signals() -> None:
                    async for signum in signals:
                        if not ended:
                            end(lambda signum=signum, **kw: Interrupted(signum, ledger, **kw))

                async def deadline(seconds: float) -> None:
                    await anyio.sleep(seconds)
                    if not ended:
                        end(lambda **kw: CommandTimedOut(seconds, ledger, **kw))

                group.start_soon(on_signals)
                if deadline_s is not None:
                    group.start_soon(deadline, deadline_s)
                try:
                    with command_scope:
                        result = await command()
                except Exception as exc:  # re-raised bare, not wrapped by the task group
                    error = exc
                finally:
                    group.cancel_scope.cancel()
    except KeyboardInterrupt:
        # A Ctrl-C in the instant between the receiver's exit and ``_ignore``: the default
        # handler raised it. It repeats the signal already received, so it changes nothing.
        if not ended:
            raise
    if ended:
        reason = ended[0]()
        if isinstance(reason, Interrupted):
            _ignore(SIGNALS)
        raise reason
    if error is not None:
        raise error
    return result


def _ignore(signals: tuple[int, ...]) -> None:
    """After a signal the process is ending: a later Ctrl-C must not cut its last words short."""
    for signum in signals:
        signal.signal(signum, signal.SIG_IGN)
