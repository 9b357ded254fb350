"""``completion SHELL``: a completion script generated from the parser by shtab."""

from __future__ import annotations

import argparse

from ._errors import UsageError
from ._render import Output


def completion(args: argparse.Namespace, out: Output) -> int:
    try:
        import shtab
    except ImportError:
        raise UsageError("completion needs shtab: pip install 'oomol-connect-anyio[cli]'") from None
    print(shtab.complete(args.parser, shell=args.shell), flush=True)
    return 0
