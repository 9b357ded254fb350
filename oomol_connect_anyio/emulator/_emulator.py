"""`Emulator`: an emulated server's state with its ASGI app."""

from __future__ import annotations

from functools import cached_property

from ._app import EmulatorApp
from ._state import EmulatorState


class Emulator(EmulatorState):
    """An in-memory Oomol Connect server; serve `emu.app` with any ASGI server.

    `auth` defaults to "raw" when a token is given and "none" otherwise. Task lifecycles
    are read from the clock on each request; nothing runs in the background.
    """

    @cached_property
    def app(self) -> EmulatorApp:
        """The ASGI callable serving this emulator."""
        return EmulatorApp(self)
