"""Upload files with a task: ``run_with_files`` and ``demo::count-bytes``.

Files are given as paths (or bytes, or binary file objects, or
``(filename, content[, content_type])``); they are streamed from a worker
thread, never read whole into memory. The demo block answers each file's
size and sha256, which we check against the local files.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import anyio
from _connect import POLLING, connect


def make_files(folder: Path) -> list[Path]:
    notes = folder / "notes.txt"
    notes.write_text("Oomol Connect runs blocks as tasks.\n" * 100, encoding="utf-8")
    blob = folder / "random.bin"
    blob.write_bytes(os.urandom(300_000))
    return [notes, blob]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp))
        async with connect() as client:
            run = await client.tasks.run_with_files("demo::count-bytes", {}, paths, POLLING)

        mismatches = 0
        for path, remote in zip(paths, run["result"]["files"], strict=True):
            data = path.read_bytes()
            size, sha256 = remote["size"], remote["sha256"]
            ok = size == len(data) and sha256 == hashlib.sha256(data).hexdigest()
            mismatches += not ok
            verdict = "matches the local file" if ok else "DIFFERS from the local file"
            print(f"{remote['name']:<12} {size:>8} bytes  sha256 {sha256[:16]}...  {verdict}")
        print(f"total {run['result']['total']} bytes uploaded in task {run['task_id']}")
        sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    anyio.run(main)
