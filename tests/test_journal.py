"""The batch journal: replay, torn lines, refused changes, grouped syncs, kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from oomol_connect_anyio._journal import (
    Journal,
    JournalError,
    JournalMismatchError,
    request_hash,
)

pytestmark = pytest.mark.anyio

HEADER = b'{"format": "oomol-connect-journal", "version": 1}\n'
ECHO = {"manifest": "demo::echo", "inputValues": {"text": "hi"}}


def test_request_hash_is_stable_across_equivalent_spellings() -> None:
    as_list = {"manifest": "demo::echo", "inputValues": [{"handle": "text", "value": "hi"}]}
    assert request_hash(ECHO) == request_hash(as_list)
    assert request_hash(ECHO) != request_hash({**ECHO, "inputValues": {"text": "ho"}})


def test_request_hash_is_the_one_earlier_journals_recorded() -> None:
    """Journals written before the create body became canonical still resume."""
    request = {"manifest": "p::b", "inputValues": {"text": "h\u00e9 \u2603", "n": 1.5}}
    wire = {"manifest": "p::b", "inputValues": [{"nodeId": "_", "inputs": [
        {"handle": "text", "value": "h\u00e9 \u2603"}, {"handle": "n", "value": 1.5}]}]}
    text = json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert request_hash(request) == hashlib.sha256(text.encode()).hexdigest()[:32]


async def test_any_string_a_server_sent_is_recorded_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "j"
    outcome = {"ok": True, "task_id": "t\u00e9", "task": {"id": "t\u00e9"},
               "result": {"text": "\ud800 \u2603"}}
    async with Journal.open(path) as journal:
        journal.record_intent(0, "h", "http://h\u00e9:1")
        journal.record_task(0, "t\u00e9", "http://h\u00e9:1")
        journal.record_outcome(0, outcome)
    path.read_bytes().decode("ascii")  # every line is ASCII: nothing to mis-encode
    async with Journal.open(path) as journal:
        entry = journal.entry(0)
        assert entry is not None
        assert (entry.task_id, entry.server) == ("t\u00e9", "http://h\u00e9:1")
        assert journal.outcome(0) == outcome


async def test_replay_gives_each_index_its_progress(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    digest = request_hash(ECHO)
    async with Journal.open(path) as journal:
        journal.record_intent(0, digest)
        journal.record_task(0, "t-0", server="http://a")
        journal.record_outcome(0, {"ok": True, "result": {"out": 1}})
        journal.record_intent(1, digest)
        journal.record_task(1, "t-1")
        journal.record_intent(2, digest)
        journal.record_intent(3, digest)
        journal.record_task(3, "t-3")
        journal.record_interrupted(3, "t-3")
        journal.record_intent(3, digest)  # the interrupted request's next attempt
    async with Journal.open(path) as journal:
        done, attached, intent, interrupted = (journal.entry(i) for i in range(4))
        assert journal.entry(4) is None
        assert journal.task_ids == {"t-0", "t-1", "t-3"}  # every attempt's, for the claims
    assert done is not None
    assert (done.task_id, done.server) == ("t-0", "http://a")
    assert done.outcome == {"ok": True, "result": {"out": 1}}
    assert attached is not None
    assert (attached.task_id, attached.outcome) == ("t-1", None)
    assert intent is not None
    assert (intent.task_id, intent.outcome) == (None, None)
    assert intent.intent_at > 0
    assert interrupted is not None
    assert (interrupted.task_id, interrupted.stopped) == (None, None)  # a new attempt began


async def test_an_interrupted_line_names_the_stopped_task(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    async with Journal.open(path) as journal:
        journal.record_intent(0, "h")
        journal.record_task(0, "t-0")
        journal.record_interrupted(0, "t-0")
    async with Journal.open(path) as journal:
        entry = journal.entry(0)
        assert entry is not None
        assert (entry.task_id, entry.stopped) == (None, "t-0")
    # A line written before the stopped task was named: that entry is looked up again.
    path.write_text(path.read_text().replace('"interrupted","id":"t-0"}', '"interrupted"}'))
    async with Journal.open(path) as journal:
        entry = journal.entry(0)
        assert entry is not None
        assert (entry.task_id, entry.stopped) == (None, None)
        assert journal.task_ids == {"t-0"}


async def test_a_torn_last_line_is_cut_and_appending_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    async with Journal.open(path) as journal:
        journal.record_intent(0, "h")
        journal.record_task(0, "t-0")
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"i":0,"e":"outc')
    async with Journal.open(path) as journal:
        assert path.read_bytes() == whole
        journal.record_outcome(0, {"ok": False, "error_type": "X", "message": "m"})
    async with Journal.open(path) as journal:
        entry = journal.entry(0)
        assert entry is not None
        assert entry.outcome == {"ok": False, "error_type": "X", "message": "m"}


async def test_a_changed_request_is_refused_naming_its_index(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    async with Journal.open(path) as journal:
        journal.record_intent(7, request_hash(ECHO))
    async with Journal.open(path) as journal:
        assert journal.check(7, request_hash(ECHO)) is not None
        assert journal.check(8, "anything") is None
        with pytest.raises(JournalMismatchError, match="request 7 differs") as caught:
            journal.check(7, request_hash({**ECHO, "inputValues": {"text": "x"}}))
    assert caught.value.index == 7


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json\n", "line 1 is not valid JSON"),
        (b'{"hello": 1}\n', "is not an oomol-connect journal"),
        (b'{"format": "oomol-connect-journal", "version": 99}\n', "has version 99"),
        (HEADER + b'{"i": 3, "e": "task", "id": "x"}\n', "line 2 is not a journal record"),
        (HEADER + b'{"i": 3, "e": "intent"}\n', "line 2 is not a journal record"),
        (HEADER + b'{"i": 3, "e": "intent", "h": "x", "t": 1}\n{"i": 3, "e": "?"}\n', "line 3"),
    ],
)
async def test_unusable_files_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "batch.journal"
    path.write_bytes(content)
    with pytest.raises(JournalError, match=message):
        async with Journal.open(path):
            pass
    assert path.read_bytes() == content


async def test_a_file_with_no_newline_is_refused_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b'{"important": "data"}')  # one line, as json.dump writes it
    with pytest.raises(JournalError, match="is not an oomol-connect journal"):
        async with Journal.open(path):
            pass
    assert path.read_bytes() == b'{"important": "data"}'


async def test_a_torn_header_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    path.write_bytes(b'{"format":"oomol-connect-jou')  # died inside the very first write
    async with Journal.open(path) as journal:
        journal.record_intent(0, "h")
    assert [json.loads(line)["format"] for line in path.read_bytes().splitlines()[:1]] == [
        "oomol-connect-journal"
    ]


async def test_a_directory_or_a_journal_in_use_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="not a regular file"):
        async with Journal.open(tmp_path):
            pass
    path = tmp_path / "batch.journal"
    async with Journal.open(path):
        with pytest.raises(JournalError, match=r"in use \(by another process, or already open"):
            async with Journal.open(path):
                pass


async def test_recording_for_an_unknown_index_is_an_error(tmp_path: Path) -> None:
    async with Journal.open(tmp_path / "j") as journal:
        with pytest.raises(JournalError, match="no intent for request 5"):
            journal.record_task(5, "t")


class _CountingFsync:
    """Counts fsync calls, which come from the journal's sync thread."""

    def __init__(self) -> None:
        self.calls = 0
        self._changed = threading.Condition()
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        self._real(fd)
        with self._changed:
            self.calls += 1
            self._changed.notify_all()

    async def reach(self, calls: int) -> None:
        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self.calls >= calls, timeout=5)

        assert await anyio.to_thread.run_sync(wait)


async def test_syncs_are_grouped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsync = _CountingFsync()
    monkeypatch.setattr(os, "fsync", fsync)
    async with Journal.open(tmp_path / "j", sync_interval=3600, sync_every=10) as journal:
        for index in range(10):
            journal.record_intent(index, "h")
        await fsync.reach(1)
        for index in range(10, 15):
            journal.record_intent(index, "h")
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert fsync.calls == 1  # five lines wait for their group (or the interval)
    assert fsync.calls == 2  # and are synced on close


async def test_a_quiet_journal_is_synced_after_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = _CountingFsync()
    monkeypatch.setattr(os, "fsync", fsync)
    async with Journal.open(tmp_path / "j", sync_interval=0.01, sync_every=1000) as journal:
        journal.record_intent(0, "h")
        await fsync.reach(1)


async def test_by_default_syncs_go_by_time_not_by_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = _CountingFsync()
    monkeypatch.setattr(os, "fsync", fsync)
    async with Journal.open(tmp_path / "j", sync_interval=3600) as journal:
        for index in range(1000):
            journal.record_intent(index, "h")
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert fsync.calls == 0  # a thousand lines wait for the interval (or the close)
    assert fsync.calls == 1


async def test_the_sync_thread_ends_with_the_journal(tmp_path: Path) -> None:
    def syncers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "oomol-journal-sync"]

    before = len(syncers())
    async with Journal.open(tmp_path / "j") as journal:
        journal.record_intent(0, "h")
        assert len(syncers()) == before + 1
    assert len(syncers()) == before


def _failing_fsync(fd: int) -> None:
    raise OSError(5, "Input/output error")


async def test_a_failed_sync_refuses_further_lines_and_fails_the_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j"

    async def batch() -> None:
        async with Journal.open(path, sync_interval=3600) as journal:
            journal.record_intent(0, "h")
            monkeypatch.setattr(os, "fsync", _failing_fsync)
            with pytest.raises(JournalError, match="cannot sync journal"):
                await journal.sync()
            with pytest.raises(JournalError, match="cannot sync journal"):
                journal.record_task(0, "t")  # the line is not written: it could not be kept

    with pytest.raises(JournalError, match=r"cannot sync journal .*Input/output error"):
        await batch()
    assert b'"e":"task"' not in path.read_bytes()


async def test_a_failed_sync_at_close_never_masks_the_blocks_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def batch() -> None:
        async with Journal.open(tmp_path / "j", sync_interval=3600) as journal:
            journal.record_intent(0, "h")
            monkeypatch.setattr(os, "fsync", _failing_fsync)
            raise KeyError("the block's own")

    with pytest.raises(KeyError, match="the block's own"):
        await batch()


async def test_a_failed_write_is_a_journal_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    async with Journal.open(tmp_path / "batch.journal") as journal:
        monkeypatch.setattr(os, "write", full)
        with pytest.raises(JournalError, match=r"batch\.journal.*No space left on device"):
            journal.record_intent(0, "h")
        monkeypatch.undo()
        assert journal.entry(0) is None  # nothing in memory that the file does not hold


def test_bad_sync_settings_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with Journal.open(tmp_path / "j", sync_every=0):
            pass

    with pytest.raises(ValueError, match="sync_every"):
        anyio.run(main)


_WRITER = """
import anyio, os, signal, sys
from oomol_connect_anyio._journal import Journal

async def main():
    async with Journal.open(sys.argv[1], sync_interval=3600, sync_every=10**6) as journal:
        for index in range(int(sys.argv[2])):
            journal.record_intent(index, "h")
            journal.record_task(index, f"t-{index}")
        os.kill(os.getpid(), signal.SIGKILL)

anyio.run(main)
"""


def test_every_line_written_before_kill_9_is_there(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path), "300"], capture_output=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL
    lines = path.read_bytes().splitlines()
    assert len(lines) == 1 + 600
    assert json.loads(lines[-1]) == {"i": 299, "e": "task", "id": "t-299"}
