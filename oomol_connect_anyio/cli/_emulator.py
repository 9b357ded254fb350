"""``emulator``: serve the Connect emulator (the ``emulator`` extra) from this command."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from ._errors import UsageError
from ._render import Output


@contextmanager
def emulator_extra() -> Iterator[None]:
    """Around an import of the emulator: a missing extra becomes one usage line."""
    try:
        yield
    except ImportError as exc:
        raise UsageError(
            f"this command needs the 'emulator' extra ({exc}): "
            "pip install 'oomol-connect-anyio[emulator]'"
        ) from None


def emulator(args: argparse.Namespace, out: Output) -> int:
    """Hand the options to the emulator's own command line, with ``--backend`` and ``--token``."""
    with emulator_extra():
        from ..emulator._cli import main as serve

    forwarded = ["--backend", args.backend]
    if args.token:
        forwarded += ["--token", args.token]
    try:
        return serve([*forwarded, *args.extra])
    except SystemExit as exc:  # its --help, or a usage error it has printed
        return exc.code if isinstance(exc.code, int) else 2
