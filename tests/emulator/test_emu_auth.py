"""Auth modes: none, raw token, raw token or Bearer."""

from __future__ import annotations

import pytest

from oomol_connect_anyio.emulator import Emulator

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("auth", "header", "status"),
    [
        ("raw", "secret", 200),
        ("raw", "Bearer secret", 401),
        ("raw", "wrong", 401),
        ("raw", None, 401),
        ("raw-or-bearer", "secret", 200),
        ("raw-or-bearer", "Bearer secret", 200),
        ("raw-or-bearer", "Bearer wrong", 401),
        ("raw-or-bearer", "bearer secret", 401),
        ("none", None, 200),
        ("none", "anything", 200),
    ],
)
async def test_auth_modes(client_for, auth, header, status):
    emu = Emulator(token="secret", auth=auth)
    async with client_for(emu, token=header) as client:
        for method, path in [
            ("GET", "/v1/tasks"),
            ("GET", "/packages"),
            ("POST", "/v1/tasks/x/stop"),
        ]:
            response = await client.request(method, path)
            if status == 401:
                assert response.status_code == 401
                assert response.json() == {"success": False, "message": "unauthorized"}
            else:
                assert response.status_code != 401


async def test_default_mode_follows_token(client_for):
    assert Emulator().auth == "none"
    assert Emulator(token="t").auth == "raw"
    async with client_for(Emulator(token="t")) as client:
        assert (await client.get("/v1/blocks")).status_code == 401
        assert (await client.get("/__emulator/stats")).status_code == 200


def test_invalid_configuration():
    with pytest.raises(ValueError, match="needs a token"):
        Emulator(auth="raw")
    with pytest.raises(ValueError, match="unknown auth mode"):
        Emulator(token="t", auth="basic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown envelope"):
        Emulator(envelope="old")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        Emulator(queue_delay=-1)
