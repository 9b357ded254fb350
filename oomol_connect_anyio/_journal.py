"""The journal of a durable batch: an append-only JSON-lines file, one line per event.

Each request index goes through up to three events: its *intent* (written before the create is
sent), its *task* id (as soon as the create answers) and its *outcome*. Replaying the lines gives,
per index, how far it got, which is all a resumed batch needs to create nothing twice.

Why a write per line: a line handed to the kernel with ``write(2)`` survives the death of this
process at any moment (``kill -9``, the OOM killer), so the intent really is on record before
the create leaves. No fsync is needed for that.

Why fsyncs in groups, by time, from a thread of the journal's own: only a crash of the whole
machine can lose lines the kernel has not written out, and ``fsync`` guards against that. A
thread syncs whatever accumulated every ``sync_interval`` seconds (half a second by default), so
such a crash loses at most that long's lines (a resume then waits again for a task whose outcome
was lost, looks up one whose id was lost, and creates again a request whose intent was lost).
Each time that thread wakes it must take the GIL from an event loop that releases it around
every socket call, and the two trade it back and forth (dozens of context switches) until the
thread gets it: waking 20 times a second cost a CPU-bound batch about 5% of its throughput;
twice a second costs a few context switches. For the same reason it is not a worker thread per
fsync (``to_thread``), which adds a hand-off each way, nor woken by a count of lines, which
syncs the more often the faster a batch goes.

Why a lock: two processes appending to one journal would interleave their batches; the second
one is refused instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ._encoding import canonical_json
from ._errors import OomolConnectError
from ._inputs import build_create_payload
from ._types import RunResult

FORMAT = "oomol-connect-journal"
_IN_FILE = "_in_file"  # an outcome summary's mark: the record itself is in the file only
VERSION = 1
_HEADER_START = b'{"format":"oomol-connect-journal"'  # how _append writes the header
# Built once (json.dumps given options builds an encoder on every call); ASCII, so that any
# string a server sent (a lone surrogate too) makes a line that encodes and reads back.
_LINE = json.JSONEncoder(separators=(",", ":")).encode
# A record holds JSON decoded from answers, which cannot contain a cycle to look for.
_RECORD = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_QUOTE = json.encoder.encode_basestring_ascii  # one string as JSON, straight to the C encoder


class JournalError(OomolConnectError):
    """The journal cannot be used: unreadable, of another format, or in use elsewhere."""


class JournalMismatchError(JournalError):
    """A resumed batch's request differs from the one its journal recorded at ``index``."""

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index


class RecordedError(OomolConnectError):
    """A run that failed in an earlier attempt of a journaled batch, as the journal has it.

    ``error_type`` names the original exception's class; ``task_id`` is the task it ran as,
    when one was created. Resume with ``retry_failed=True`` to run such requests again.
    """

    def __init__(
        self, message: str, *, index: int, error_type: str, task_id: str | None
    ) -> None:
        super().__init__(message)
        self.index = index
        self.error_type = error_type
        self.task_id = task_id

    @classmethod
    def from_outcome(cls, index: int, outcome: Mapping[str, Any]) -> RecordedError:
        error_type = str(outcome.get("error_type") or "Exception")
        return cls(
            f"request {index} failed in an earlier attempt of this batch: "
            f"{error_type}: {outcome.get('message', '')}",
            index=index,
            error_type=error_type,
            task_id=outcome.get("task_id"),
        )


@dataclass(slots=True)
class JournalEntry:
    """How far one request index got, as replayed from the journal."""

    index: int
    request_hash: str
    intent_at: float
    """Wall-clock seconds since the epoch when the create was about to be sent."""
    task_id: str | None = None
    server: str | None = None
    """The base URL the create went to (batches over several servers record it)."""
    outcome: dict[str, Any] | None = None
    """``{"ok": True, "result": ...}`` or ``{"ok": False, "error_type", "message", "task_id"}``."""
    stopped: str | None = None
    """The task of this attempt, stopped unfinished: a resume creates the request anew."""


def request_hash(request: object) -> str:
    """A stable digest of a create request as it would be sent (inputs normalised)."""
    return body_hash(canonical_json(build_create_payload(request)))


def body_hash(body: bytes) -> str:
    """``request_hash`` of a create's canonical JSON body (``canonical_json``), as sent."""
    return hashlib.sha256(body).hexdigest()[:32]


class Journal:
    """One batch's journal file; open it with ``async with Journal.open(path) as journal``."""

    def __init__(
        self,
        path: Path,
        fd: int,
        entries: dict[int, JournalEntry],
        task_ids: set[str],
        syncer: _Syncer,
    ) -> None:
        self.path = path
        self._fd = fd
        self.entries = entries
        self.task_ids = task_ids
        """Every task id the journal has recorded, for every attempt: a resume claims them
        all, so that no lookup of an interrupted create adopts one of them."""
        self._syncer = syncer
        self._server_fields: dict[str | None, str] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        sync_interval: float = 0.5,
        sync_every: int | None = None,
    ) -> AsyncIterator[Journal]:
        """Open (or create) the journal, replay it, and sync it in the background until closed:
        every ``sync_interval`` seconds, and also once ``sync_every`` lines wait when given."""
        if not sync_interval > 0 or (sync_every is not None and sync_every < 1):
            raise ValueError("sync_interval must be > 0 and sync_every >= 1 (or None)")
        journal = await anyio.to_thread.run_sync(
            cls._open_sync, Path(path), sync_interval, sync_every
        )
        try:
            yield journal
        finally:
            with anyio.CancelScope(shield=True):
                failed = await anyio.to_thread.run_sync(journal._close_sync)
        if failed is not None:  # only when the block itself went well: never mask its error
            raise JournalError(failed)

    @classmethod
    def _open_sync(cls, path: Path, sync_interval: float, sync_every: int | None) -> Journal:
        if path.exists() and not path.is_file():
            raise JournalError(f"journal {str(path)!r} is not a regular file")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open journal {str(path)!r}: {exc.strerror}") from None
        try:
            _lock(fd, path)
            entries, task_ids = _replay(fd, path)
            if os.fstat(fd).st_size == 0:
                header = {"format": FORMAT, "version": VERSION, "created_at": time.time()}
                _append(fd, _LINE(header) + "\n", path)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, entries, task_ids, _Syncer(fd, path, sync_interval, sync_every))

    def entry(self, index: int) -> JournalEntry | None:
        return self.entries.get(index)

    def check(self, index: int, digest: str) -> JournalEntry | None:
        """The entry for ``index``; refuse a request that differs from the recorded one."""
        entry = self.entries.get(index)
        if entry is not None and entry.request_hash != digest:
            raise JournalMismatchError(
                f"request {index} differs from the one journal {str(self.path)!r} recorded; "
                "resume with the same requests, or start a new journal",
                index=index,
            )
        return entry

    def record_intent(self, index: int, digest: str, server: str | None = None) -> JournalEntry:
        """Record that the create for ``index`` is about to be sent (a fresh attempt), to
        ``server`` (a base URL) when a batch spreads over several: a resume looks for the
        task of an interrupted create there."""
        entry = JournalEntry(index, digest, time.time(), server=server)
        # Lines of a fixed shape are formatted by hand, with as few calls as can be: on a
        # CPU-bound batch, each of a run's lines is a measurable share of its cost.
        self._write(
            f'{{"i":{index:d},"e":"intent","h":{_QUOTE(digest)},"t":{entry.intent_at!r}'
            f"{self._server_field(server)}}}\n"
        )
        self.entries[index] = entry  # only now: memory never runs ahead of the file
        return entry

    def record_task(self, index: int, task_id: str, server: str | None = None) -> None:
        entry = self._known(index)
        self._write(
            f'{{"i":{index:d},"e":"task","id":{_QUOTE(task_id)}{self._server_field(server)}}}\n'
        )
        entry.task_id, entry.server = task_id, server
        self.task_ids.add(task_id)

    def record_outcome(self, index: int, outcome: Mapping[str, Any]) -> None:
        """Record how ``index`` ended. A success's record (its task and result) is kept in
        the file only: a batch of many holds no copy of every result in memory."""
        entry = self._known(index)
        self._write(f'{{"i":{index:d},"e":"outcome","o":{_RECORD(outcome)}}}\n')
        entry.outcome = dict(outcome) if not outcome.get("ok") else {"ok": True, _IN_FILE: True}

    def outcome(self, index: int) -> dict[str, Any] | None:
        """The recorded outcome of ``index`` (read back from the file when only its
        summary is in memory: a journal used again by a later batch of the same process)."""
        entry = self.entries.get(index)
        if entry is None or entry.outcome is None or not entry.outcome.get(_IN_FILE):
            return None if entry is None else entry.outcome
        with open(os.dup(self._fd), "rb") as file:  # O_APPEND: reads start where asked
            file.seek(0)
            for raw in file:
                if raw.startswith(b'{"i":%d,"e":"outcome"' % index):
                    entry.outcome = dict(json.loads(raw)["o"])
        return entry.outcome

    def recorded(
        self, index: int, *, with_server: bool = False
    ) -> RunResult | RecordedError | None:
        """The outcome on record for ``index`` as a batch gives it back (``with_server``:
        naming the server that ran it): a result with no logs (they are not kept), or the
        failure as a ``RecordedError``; ``None`` when none is on record."""
        outcome = self.outcome(index)
        if outcome is None:
            return None
        if not outcome.get("ok"):
            return RecordedError.from_outcome(index, outcome)
        result: RunResult = {"task_id": outcome["task_id"], "task": outcome["task"], "logs": [],
                             "result": outcome.get("result")}
        server = self.entries[index].server
        if with_server and server is not None:
            result["server"] = server
        return result

    def record_interrupted(self, index: int, task_id: str) -> None:
        """The task of ``index`` (``task_id``) was stopped unfinished: a resume creates the
        request again, with no lookup (the stopped task is known, and no other is its own)."""
        entry = self._known(index)
        self._write(f'{{"i":{index:d},"e":"interrupted","id":{_QUOTE(task_id)}}}\n')
        entry.task_id, entry.stopped = None, task_id
        self.task_ids.add(task_id)

    async def sync(self) -> None:
        """Make every line written so far durable now."""
        failed = await anyio.to_thread.run_sync(self._syncer.sync_now)
        if failed is not None:
            raise JournalError(failed)

    def _known(self, index: int) -> JournalEntry:
        entry = self.entries.get(index)
        if entry is None:
            raise JournalError(f"journal has no intent for request {index}")
        return entry

    def _server_field(self, server: str | None) -> str:
        """``,"server":"..."`` (nothing for ``None``), encoded once per server."""
        field = self._server_fields.get(server)
        if field is None:
            field = self._server_fields[server] = _server_field(server)
        return field

    def _write(self, line: str) -> None:
        """Write one whole line (ending in a newline) with one ``write(2)``."""
        syncer = self._syncer
        if syncer.failed is not None:  # lines that cannot be made durable: stop here
            raise JournalError(syncer.failed)
        _append(self._fd, line, self.path)
        syncer.wrote()

    def _close_sync(self) -> str | None:
        """Stop the syncer (which syncs what is left), close the file; say why a sync failed."""
        try:
            return self._syncer.stop()
        finally:
            os.close(self._fd)


class _Syncer:
    """The thread that makes a journal's lines durable, in groups.

    The event loop only counts the lines it writes (``wrote``); the thread wakes every
    ``interval`` seconds (or once ``every`` lines wait, when given) and fsyncs when any
    line is new. A failed fsync is kept in ``failed``: the journal refuses further lines,
    since it could no longer promise them.
    """

    def __init__(self, fd: int, path: Path, interval: float, every: int | None) -> None:
        self.failed: str | None = None
        self._fd = fd
        self._path = path
        self._interval = interval
        self._every = every or 0  # 0: by time only
        self._written = 0  # counted by the event loop's thread only
        self._synced = 0  # advanced under _lock only
        self._lock = threading.Lock()  # one fsync at a time: the thread's, or sync_now's
        self._wake = threading.Event()
        self._stopping = False
        # A daemon: a journal its owner never closed must not keep the process alive.
        self._thread = threading.Thread(target=self._run, name="oomol-journal-sync", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        self._written += 1
        if self._every and self._written - self._synced >= self._every and not self._wake.is_set():
            self._wake.set()

    def sync_now(self) -> str | None:
        """Sync every line written so far (from any thread); why it failed, if it did."""
        with self._lock:
            written = self._written
            if written != self._synced and self.failed is None:
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    self.failed = f"cannot sync journal {str(self._path)!r}: {exc.strerror}"
                else:
                    self._synced = written
        return self.failed

    def stop(self) -> str | None:
        """End the thread, then sync what is left; why a sync failed, if one did."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        return self.sync_now()

    def _run(self) -> None:
        while not self._stopping and self.failed is None:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.sync_now()


def _append(fd: int, line: str, path: Path) -> None:
    data = line.encode()
    # One write(2) of a whole line on an O_APPEND descriptor: a reader never sees half of a
    # line unless the process died inside this very call, which _replay repairs.
    try:
        written = os.write(fd, data)
    except OSError as exc:
        raise JournalError(f"cannot write to journal {str(path)!r}: {exc.strerror}") from None
    if written != len(data):
        raise JournalError(f"short write to journal {str(path)!r} ({written} of {len(data)} bytes)")


def _server_field(server: str | None) -> str:
    return "" if server is None else ',"server":' + _LINE(server)


def _lock(fd: int, path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - no advisory locks there
        return
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalError(
            f"journal {str(path)!r} is in use (by another process, or already open in this one)"
        ) from None


def _replay(fd: int, path: Path) -> tuple[dict[int, JournalEntry], set[str]]:
    """Read every line into entries and the task ids seen; cut a torn last line (the
    process died mid-write)."""
    entries: dict[int, JournalEntry] = {}
    task_ids: set[str] = set()
    complete = 0
    with open(os.dup(fd), "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.endswith(b"\n"):
                # Torn: written by a process that died inside the write. Before a whole
                # header, only the start of our own header can be that: anything else is
                # another file, never to be cut.
                if number == 1 and not _HEADER_START.startswith(raw[: len(_HEADER_START)]):
                    raise JournalError(f"{str(path)!r} is not an oomol-connect journal")
                break
            complete += len(raw)
            try:
                record = json.loads(raw)
            except ValueError:
                where = f"journal {str(path)!r} line {number}"
                raise JournalError(f"{where} is not valid JSON") from None
            if number == 1:
                _check_header(record, path)
            else:
                _apply(entries, task_ids, record, path, number)
    if complete < os.fstat(fd).st_size:
        os.ftruncate(fd, complete)
    return entries, task_ids


def _check_header(header: Any, path: Path) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise JournalError(f"{str(path)!r} is not an oomol-connect journal")
    if header.get("version") != VERSION:
        raise JournalError(
            f"journal {str(path)!r} has version {header.get('version')!r}; "
            f"this client reads version {VERSION}"
        )


def _apply(
    entries: dict[int, JournalEntry], task_ids: set[str], record: Any, path: Path, number: int
) -> None:
    try:
        _apply_record(entries, task_ids, record)
    except (KeyError, TypeError, ValueError):
        raise JournalError(f"journal {str(path)!r} line {number} is not a journal record") from None


def _apply_record(entries: dict[int, JournalEntry], task_ids: set[str], record: Any) -> None:
    index, event = int(record["i"]), record["e"]
    if event == "intent":
        server = record.get("server")
        entries[index] = JournalEntry(
            index, str(record["h"]), float(record["t"]), server=server and str(server)
        )
        return
    entry = entries[index]
    if event == "task":
        entry.task_id, entry.server = str(record["id"]), record.get("server")
        task_ids.add(entry.task_id)
    elif event == "outcome":
        entry.outcome = dict(record["o"])
    elif event == "interrupted":
        # Lines from before the stopped task's id was recorded name none: such an entry is
        # looked up again as an interrupted create is (its task may not have been stopped).
        stopped = record.get("id")
        entry.task_id, entry.stopped = None, stopped and str(stopped)
        if entry.stopped is not None:
            task_ids.add(entry.stopped)
    else:
        raise ValueError(f"unknown event {event!r}")
