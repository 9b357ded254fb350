"""The README's quick starts run as written against a server that follows the API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from oomol_connect_anyio.emulator import BlockContext, Emulator, serve_emulator

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
DEFAULT_URL = "http://localhost:3000/api"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of one README section."""
    start = README.index(f"## {section}\n")
    end = README.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", README[start:end], re.DOTALL)


def text_to_audio(ctx: BlockContext) -> dict[str, Any]:
    return {"audio": f"<{len(ctx.inputs['text'])} characters of speech>"}


def run_with_server(
    code: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """Serve an emulator, point the code (and the environment) at it, run the code."""
    emulator = Emulator(token="your-api-token")
    emulator.register_block("audio-lab::text-to-audio", text_to_audio)

    async def main() -> None:
        async with serve_emulator(emulator, port=0) as url:
            monkeypatch.setenv("OOMOL_CONNECT_BASE_URL", url)
            monkeypatch.setenv("OOMOL_CONNECT_TOKEN", "your-api-token")
            namespace = {"__name__": "quickstart"}
            await anyio.to_thread.run_sync(exec, code.replace(DEFAULT_URL, url), namespace)

    anyio.run(main)
    return capsys.readouterr().out


def test_quick_start_runs_as_written(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio_example = python_blocks("Quick start")[0]
    assert DEFAULT_URL in asyncio_example
    out = run_with_server(asyncio_example, capsys, monkeypatch)
    assert "audio-lab::text-to-audio" in out
    assert "characters of speech" in out


def test_trio_quick_start_runs_as_written(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trio_example = python_blocks("Quick start")[1]
    code = trio_example + "\nprint('trio quick start done')\n"
    assert "trio quick start done" in run_with_server(code, capsys, monkeypatch)
