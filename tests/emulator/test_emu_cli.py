"""The command line entry point, in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx
import pytest

from oomol_connect_anyio.emulator.__main__ import main


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "oomol_connect_anyio.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("Oomol Connect emulator listening on http://127.0.0.1:"), line
    return process, line.split()[-1]


@pytest.mark.parametrize(
    ("backend", "stop_signal"), [("asyncio", signal.SIGTERM), ("trio", signal.SIGINT)]
)
def test_cli_serves_and_exits_cleanly(backend, stop_signal, tmp_path):
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps(
            [
                {"route": "GET /v1/flows", "error_rate": 1.0, "error_statuses": [503]},
                {"route": "POST *", "rate_limit_every": 2, "retry_after": 0, "duration": 600},
            ]
        )
    )
    process, url = _start(
        "--backend",
        backend,
        "--token",
        "tok",
        "--envelope",
        "bare",
        "--fault-config",
        str(faults),
        "--seed",
        "1",
    )
    try:
        with httpx.Client(base_url=url, headers={"Authorization": "tok"}) as client:
            created = client.post("/v1/tasks", json={"manifest": "demo::echo"}).json()
            assert set(created) == {"task"}
            stop = client.post(f"/v1/tasks/{created['task']['id']}/stop")
            assert stop.status_code == 429  # the second POST within the rule's window
            assert stop.headers["retry-after"] == "0"
            assert client.get("/v1/flows").status_code == 503
            assert client.get("/v1/blocks", headers={"Authorization": "no"}).status_code == 401
            assert client.get("/v1/tasks").json()["tasks"][0]["id"] == created["task"]["id"]
    finally:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{}", "JSON list"),
        ('[{"bogus": 1}]', "bogus"),
        ('[{"error_rate": 5}]', "error_rate"),
        ('[{"latency": 0.1}]', "latency must be (low, high) in seconds, not 0.1"),
        ('[{"hang": true}]', "hang must be a number, not True"),
        ('[{"max_active": 1.5}]', "max_active must be a whole number"),
        ('[{"route": 7}]', "route must be a string"),
        ('[{"error_statuses": ["503"]}]', "error_statuses must be HTTP statuses"),
    ],
)
def test_cli_rejects_bad_fault_config(tmp_path, capsys, content, message):
    path = tmp_path / "faults.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as exited:
        main(["--port", "0", "--fault-config", str(path)])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
