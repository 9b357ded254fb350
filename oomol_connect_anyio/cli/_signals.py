"""SIGINT, SIGTERM and SIGHUP: cancel the command, let it stop what it created, within a bound.

The first signal cancels the command; the client then stops the remote tasks it created (its
stops are shielded from that cancel). Further signals do not cut those stops short: they are
only acknowledged. If the command has not ended ``HARD_BOUND_S`` seconds after the first signal,
the process exits anyway, naming the tasks that may still run.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._ledger import Ledger
from ._render import Output

HARD_BOUND_S = 5.0
# SIGHUP does not exist on Windows.
SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

T = TypeVar("T")


class Interrupted(Exception):
    """The command was ended by a signal (after its stops were sent)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


async def run_until_signalled(
    command: Callable[[], Awaitable[T]], out: Output, ledger: Ledger
) -> T:
    """``command()``; the first of ``SIGNALS`` cancels it and :class:`Interrupted` is raised."""
    received: list[int] = []
    command_scope = anyio.CancelScope()
    error: Exception | None = None
    try:
        with anyio.open_signal_receiver(*SIGNALS) as signals:
            async with anyio.create_task_group() as group:

                async def on_signals() -> None:
                    async for signum in signals:
                        if received:
                            out.note(f"{signal_name(signum)}: still stopping tasks, please wait")
                            continue
                        received.append(signum)
                        command_scope.cancel()
                        group.start_soon(_hard_bound, signum, out, ledger)

                group.start_soon(on_signals)
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
        if not received:
            raise
    if received:
        _ignore(SIGNALS)
        raise Interrupted(received[0])
    if error is not None:
        raise error
    return result


def _ignore(signals: tuple[int, ...]) -> None:
    """After a signal the process is ending: a later Ctrl-C must not cut its last words short."""
    for signum in signals:
        signal.signal(signum, signal.SIG_IGN)


async def _hard_bound(signum: int, out: Output, ledger: Ledger) -> None:
    """Exit the process ``HARD_BOUND_S`` after the first signal, whatever is still pending."""
    await anyio.sleep(HARD_BOUND_S)
    leftovers = ledger.leftovers() or "no task of this command is known to be running"
    out.error(
        f"interrupted by {signal_name(signum)}; gave up waiting for the stops after "
        f"{HARD_BOUND_S:g} s: {leftovers}"
    )
    sys.stdout.flush()
    os._exit(128 + signum)

