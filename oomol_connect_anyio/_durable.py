"""The runs of a batch kept in a journal, so that a resumed batch creates no task twice.

Per request index, the journal says how far an earlier attempt of the batch got, and the
run picks up from there:

- an outcome: returned as recorded, with no request;
- a task id and no outcome: the task is waited for again, never created again;
- an intent and no task id (the process died while the create was in flight): the task
  is looked up on the server as a lost create is (``Lifecycle.find_created``) and adopted
  when exactly one matches, else created;
- a task stopped unfinished (interrupted): created anew, with no lookup;
- nothing: the intent is written, then the create is sent.

A run abandoned by a cancellation looks at its task once more before stopping it: a task
that finished meanwhile gets its outcome recorded; one that the server confirms stopped is
recorded as interrupted, so that a resume runs it again. A task left running (a stop that
failed, or ``stop_on_cancel`` off) keeps its recorded id: a resume waits for it.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import anyio

from ._concurrency import STOP_DEADLINE, logger
from ._errors import NotFoundError, OomolConnectError
from ._journal import (
    Journal,
    JournalEntry,
    JournalMismatchError,
    RecordedError,
    body_hash,
    request_hash,
)
from ._lifecycle import CreateCall, Lifecycle
from ._logs import extract_result
from ._options import Polling
from ._reconcile import never_created
from ._task_wait import TaskWait
from ._types import CreateTaskRequest, RunResult, Task


class DurableRuns:
    """Runs journaled in ``journal``; ``retry_failed`` re-runs recorded failures anew.

    ``lifecycles`` are those of every server the batch may use: the ids of recorded tasks
    are claimed on each, so that no lookup adopts one for another request.
    """

    def __init__(
        self, lifecycles: Sequence[Lifecycle], journal: Journal, *, retry_failed: bool
    ) -> None:
        self._journal = journal
        self._retry_failed = retry_failed
        self._orphans = _Orphans(journal)
        for task_id in journal.task_ids:
            for lifecycle in lifecycles:
                lifecycle.claim(task_id)

    def check(self, index: int, request: CreateTaskRequest) -> None:
        """Refuse, before anything runs, a request that differs from the recorded one."""
        if index in self._journal.entries:
            self._journal.check(index, request_hash(request))

    def check_all(self, requests: Sequence[CreateTaskRequest]) -> None:
        """``check`` every request the journal has seen, in index order; refuse fewer
        requests than it has seen (more are new ones, run as such)."""
        for index in sorted(self._journal.entries):
            if index >= len(requests):
                raise JournalMismatchError(
                    f"journal {str(self._journal.path)!r} recorded request {index}, but only "
                    f"{len(requests)} were given; resume with the same requests, or start a "
                    "new journal",
                    index=index,
                )
            self._journal.check(index, request_hash(requests[index]))

    def recorded(
        self, index: int, request: CreateTaskRequest, *, with_server: bool = False
    ) -> RunResult | None:
        """The recorded result of ``index`` (no request needed; ``with_server``: naming
        the server that ran it), or ``None`` when it must run; a recorded failure is
        raised as a ``RecordedError`` unless ``retry_failed``."""
        entry = self._journal.entries.get(index)
        if entry is None or entry.outcome is None:
            return None  # hashed once, by ``run``
        self._journal.check(index, request_hash(request))
        recorded = self._journal.recorded(index, with_server=with_server)
        if not isinstance(recorded, RecordedError):
            return recorded
        if not self._retry_failed:
            raise recorded
        return None

    def pinned(self, index: int) -> str | None:
        """The server (base URL) where an earlier attempt left ``index`` unfinished: its
        task to wait for, or its interrupted create to look up (none for a task stopped
        unfinished: that request is created anew, on any server)."""
        entry = self._journal.entries.get(index)
        if entry is None or entry.outcome is not None or entry.stopped is not None:
            return None
        return entry.server

    async def run(
        self,
        index: int,
        request: CreateTaskRequest,
        polling: Polling,
        lifecycle: Lifecycle,
        shields: set[anyio.CancelScope] | None = None,
        *,
        may_move: bool = False,
        moved: bool = False,
    ) -> RunResult:
        """Run ``index`` on ``lifecycle``'s server, picking up where the journal left it.

        ``may_move``: a create that certainly made nothing (``never_created``) is not
        recorded as the outcome, since the batch sends it to another server; ``moved``:
        this is that second attempt, whose intent is known to have made nothing.
        """
        call = dataclasses.replace(
            lifecycle.json_call(request), lookup_budget=polling.poll_error_budget, movable=may_move
        )
        assert call.body is not None  # a JSON create: its body is what the journal hashes
        digest = body_hash(call.body)
        entry = self._journal.check(index, digest)
        if entry is not None and (entry.outcome is not None or moved or entry.stopped):
            entry = None  # a failure run again (retry_failed), a create made nowhere, or a
            # task stopped unfinished: each is created anew
        server = lifecycle.api.transport.base_url
        started = time.monotonic()  # the clock TaskWait and adaptive polling count on
        with lifecycle.closable():
            if entry is not None and entry.task_id is not None:
                waiter = TaskWait(
                    lifecycle, entry.task_id, polling, started=started, last_look=True
                )
                if entry.server not in (None, server):
                    return await self._follow_moved(lifecycle, index, waiter, entry.server)
            else:
                if entry is not None and entry.server not in (None, server):
                    raise JournalMismatchError(
                        f"request {index}: its create was interrupted on {entry.server}, where "
                        f"its task must be looked up, not on {server}; resume against "
                        f"{entry.server}",
                        index=index,
                    )
                async with self._orphans.gate(digest):
                    task = None
                    if entry is not None:
                        task = await self._adopt(lifecycle, index, call, entry)
                        self._orphans.resolved(digest)  # adopted, or created just below
                    adopted = task is not None
                    if task is None:
                        self._journal.record_intent(index, digest, server)
                        try:
                            task = await lifecycle.create_owned(call, shields)
                        except Exception as exc:
                            if not (may_move and never_created(exc)):
                                self._journal.record_outcome(index, failure(exc, None))
                            raise
                    try:
                        self._journal.record_task(index, task["id"], server)
                    except Exception:  # a task the journal cannot track must not run on
                        await lifecycle.stop_abandoned(task["id"])
                        raise
                waiter = TaskWait.after_create(
                    lifecycle, task, polling, started, last_look=True, adopted=adopted
                )
            return await self._follow(lifecycle, index, waiter)
        raise AssertionError("unreachable")  # pragma: no cover - closable() raises

    async def _adopt(
        self, lifecycle: Lifecycle, index: int, call: CreateCall, entry: JournalEntry
    ) -> Task | None:
        """The task an interrupted create of ``index`` made, if it can be told apart (from
        those of other requests: identical ones of the batch may share theirs out)."""
        task, uncertain = await lifecycle.find_created(
            call, entry.intent_at * 1000, call.lookup_budget, self._orphans.left(entry.request_hash)
        )
        if uncertain:
            raise OomolConnectError(
                f"request {index}: its create was interrupted and several tasks may be its "
                f"own ({', '.join(uncertain)}); refusing to guess or to create another"
            )
        if task is not None and task.get("status") == "stopped":
            return None  # stopped by the run that was interrupted: create it anew
        if task is not None:
            logger.info("request %d: adopted task %s from an interrupted create", index, task["id"])
        return task

    async def _follow(
        self,
        lifecycle: Lifecycle,
        index: int,
        waiter: TaskWait,
        *,
        moved: bool = False,
    ) -> RunResult:
        """Wait for ``waiter``'s task and record its outcome. ``moved``: through another
        address than the one that made it, where a 404 is no outcome (the task may live on
        the recorded server), and neither is a stop of a task never seen there."""
        try:
            result = await lifecycle.follow(waiter)
        except Exception as exc:
            if not (moved and isinstance(exc, NotFoundError)):
                self._journal.record_outcome(index, failure(exc, waiter.task_id))
            raise
        except BaseException:
            if not (moved and waiter.last_task is None):
                await self._interrupted(index, waiter)
            raise
        self._journal.record_outcome(index, success(result))
        return result

    async def _follow_moved(
        self, lifecycle: Lifecycle, index: int, waiter: TaskWait, recorded_on: str
    ) -> RunResult:
        """Follow a recorded task through a server of another address than the one that
        made it: the same server under another name, or the wrong one. Not found there, the
        task is not recorded as failed, and the batch ends: a resume against the right
        server waits for it."""
        try:
            return await self._follow(lifecycle, index, waiter, moved=True)
        except NotFoundError:
            raise JournalMismatchError(
                f"request {index}: its task {waiter.task_id} was created on {recorded_on} and "
                f"is not on {lifecycle.api.transport.base_url}; resume against {recorded_on}",
                index=index,
            ) from None

    async def _interrupted(self, index: int, waiter: TaskWait) -> None:
        """Record a run abandoned by a cancellation: its outcome when its task had finished
        (the logs fetched within a stop's bound), else that it was interrupted."""
        task = waiter.last_task
        if task is None or not waiter.terminal:
            if waiter.stopped:
                self._journal.record_interrupted(index, waiter.task_id)
            # else the task may run on: its id is on record, and a resume waits for it
            return
        if task.get("status") != "completed":
            self._journal.record_outcome(
                index, {"ok": False, "error_type": "TaskFailedError", "task_id": waiter.task_id,
                        "message": f"task {waiter.task_id} ended {task.get('status')}"},
            )
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_DEADLINE):
            try:
                await waiter.drain_logs()
            except Exception as exc:
                logger.debug("logs of finished task %s not fetched: %s", waiter.task_id, exc)
        self._journal.record_outcome(
            index,
            {"ok": True, "task_id": waiter.task_id, "task": task,
             "result": extract_result(waiter.logs)},
        )


def success(result: RunResult) -> dict[str, Any]:
    """The journal's record of a run that completed (its logs are not kept)."""
    return {
        "ok": True,
        "task_id": result["task_id"],
        "task": result["task"],
        "result": result["result"],
    }


def failure(error: BaseException, task_id: str | None) -> dict[str, Any]:
    """The journal's record of a run that failed; ``task_id`` when a task was created."""
    task_id = getattr(error, "task_id", None) or task_id
    return {"ok": False, "error_type": type(error).__name__, "message": str(error),
            "task_id": task_id}


class _Orphans:
    """The requests a resumed batch finds with an intent and no task id (their creates were
    interrupted), counted by request hash.

    Identical requests share out the tasks such creates made: any of them will do for any
    of the requests. While some of them have not looked theirs up, the lookups and creates
    of that hash take turns, each holding its turn until its task is claimed: a lookup
    never sees, unclaimed, a task another request of the batch is creating.
    """

    def __init__(self, journal: Journal) -> None:
        self._left = Counter(
            entry.request_hash
            for entry in journal.entries.values()
            if entry.task_id is None and entry.outcome is None and entry.stopped is None
        )
        self._turns: dict[str, anyio.Lock] = {}

    def left(self, digest: str) -> int:
        """How many requests hashed ``digest`` have still to look their tasks up."""
        return self._left[digest]

    def resolved(self, digest: str) -> None:
        """One of them has looked up (and adopted, or will create) its task."""
        self._left[digest] -= 1
        if self._left[digest] <= 0:
            del self._left[digest]

    def gate(self, digest: str) -> AbstractAsyncContextManager[object]:
        """A turn among the requests hashed ``digest`` while orphans of it are left."""
        if digest not in self._left:
            return nullcontext()
        return self._turns.setdefault(digest, anyio.Lock())

