"""Shared fixtures: every async test runs on asyncio and trio.

``emulator`` is a fresh in-memory Connect emulator; ``emulator_url`` serves it
over real loopback sockets; ``client`` is a client bound to it.
"""

from __future__ import annotations

import compileall
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from oomol_connect_anyio import OomolConnectClient

if TYPE_CHECKING:
    from oomol_connect_anyio.emulator import Emulator

_STARTED_EARLY: list[ModuleType] = []
_ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the package and the benchmarks' modules once, before any test starts.

    Many tests start Python subprocesses (the CLI, emulators, benchmark scripts, examples).
    Where writing bytecode is off (``PYTHONDONTWRITEBYTECODE``, as on some CI machines),
    each of them would compile every module it imports from source again: a tenth of the
    suite's CPU time. They read bytecode written here whatever that setting says.
    """
    if hasattr(session.config, "workerinput"):
        return
    for folder in ("oomol_connect_anyio", "benchmarks"):
        compileall.compile_dir(_ROOT / folder, quiet=1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Let each selected module that has one call its ``start_early()``: slow, independent
    subprocesses (the benchmark scripts, the examples) then run while the tests before
    them do, and the module's fixture takes their results. Not in an xdist worker: which
    worker runs a module is only known when its tests arrive."""
    if hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return
    for item in session.items:
        module = getattr(item, "module", None)
        if module is None or module in _STARTED_EARLY or not hasattr(module, "start_early"):
            continue
        _STARTED_EARLY.append(module)
        module.start_early()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what ``start_early()`` started and no test waited for (a run cut short)."""
    for module in _STARTED_EARLY:
        module.stop_early()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def emulator() -> Emulator:
    from oomol_connect_anyio.emulator import Emulator

    return Emulator()


@pytest.fixture
async def emulator_url(emulator: Emulator, anyio_backend: str) -> AsyncIterator[str]:
    from oomol_connect_anyio.emulator import serve_emulator

    async with serve_emulator(emulator, host="127.0.0.1", port=0) as url:
        yield url


@pytest.fixture
async def client(emulator_url: str) -> AsyncIterator[OomolConnectClient]:
    async with OomolConnectClient(base_url=emulator_url, retry_delay=0.001) as client:
        yield client
