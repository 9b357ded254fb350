"""The README's quick starts and CLI examples run as written against the emulator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from cli_support import WAIT_S, cli_env, emulator_process

from oomol_connect_anyio.emulator import Emulator, serve_emulator

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
DEFAULT_URL = "http://localhost:3000/api"


def code_blocks(section: str, language: str = "python") -> list[str]:
    """The ```python (or other) blocks of one README section."""
    start = README.index(f"## {section}\n")
    end = README.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", README[start:end], re.DOTALL)


def run_with_server(
    code: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """Serve an emulator, point the code (and the environment) at it, run the code."""
    emulator = Emulator(token="your-api-token")

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
    asyncio_example = code_blocks("Quick start")[0]
    assert DEFAULT_URL in asyncio_example
    out = run_with_server(asyncio_example, capsys, monkeypatch)
    assert "demo::upper" in out
    assert "{'text': 'HELLO'}" in out


def test_trio_quick_start_runs_as_written(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trio_example = code_blocks("Quick start")[1]
    code = trio_example + "\nprint('trio quick start done')\n"
    assert "trio quick start done" in run_with_server(code, capsys, monkeypatch)


@pytest.mark.skipif(shutil.which("jq") is None, reason="the README's CLI examples pipe into jq")
def test_cli_scripting_examples_run_as_written() -> None:
    """The last ```bash block of the CLI section, under ``bash -e -o pipefail``."""
    script = code_blocks("CLI", "bash")[-1]
    with emulator_process() as url:
        env = {
            **cli_env(),
            "OOMOL_CONNECT_BASE_URL": url,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script], capture_output=True, text=True,
            env=env, timeout=WAIT_S, stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "HI"
    assert '"zip": "01234"' in done.stdout  # a string: no schema declares it otherwise
    assert "completed" in done.stdout
    assert lines[-2:] == ["false", "exit code 1"]
