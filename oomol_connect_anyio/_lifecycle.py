"""The life of a task this client creates: created so that it is never lost, waited for,
stopped when abandoned, and found again when the answer to its create was lost.

While the client is open (``async with client``), creates and the stops of abandoned tasks
run in the client's own task group (the service group), not in the caller's task: a caller
cancelled by any means (anyio or trio scopes, asyncio ``Task.cancel()``, ``wait_for``,
``asyncio.timeout``) returns at once with its cancellation, and the service group finishes
the create and stops the task as soon as its id is known. A client that was not entered
creates and stops inline, shielded from anyio cancellation only.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeGuard

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from . import _concurrency, _errors
from ._adaptive import PollingModel
from ._concurrency import add_note, logger
from ._encoding import canonical_json
from ._errors import ApiError, ConnectionError, OomolConnectError, is_transient
from ._inputs import build_create_payload, normalize_input_values, validate_manifest
from ._logs import extract_result
from ._multipart import Files, MultipartBody, prepare_files
from ._options import Polling
from ._reconcile import may_have_been_taken, may_send_again, never_created, reconcile_create
from ._task_api import TaskEndpoints
from ._task_wait import TERMINAL, TaskWait
from ._types import CreateTaskRequest, NodeInputs, RunResult, Task, TaskInputValues, TaskLog

CLAIM_WINDOW = 600.0
"""Seconds this client remembers the ids of the tasks it created (longer than any skew)."""
CLOSE_DEADLINE = 2 * 3.0
"""Seconds ``aclose()`` gives runs in flight and the service group to send their stops."""
_BACKOFF = (0.05, 0.5)  # first and largest delay between attempts of a cleanup stop or lookup


@dataclass(frozen=True)
class CreateCall:
    """One create request: what it asks for, and how to send it (again, if need be)."""

    manifest: str
    input_values: list[NodeInputs]
    send: Callable[[bool], Awaitable[Task]]
    """Send the create once; ``True``: with the transport's retries of what was not taken."""
    body: bytes | None = None
    """The JSON body as sent (``None`` for multipart): what a journal hashes."""
    lookup_budget: float = 0.0
    """Seconds the lookup of a lost answer rides out transient failures beyond the
    transport's own retries, and a create refused for now (429, ``Retry-After``) keeps
    being asked again: a run gives its outage budget (``poll_error_budget_ms``), as it
    would ride out the outage while waiting anyway; a bare ``create()`` none."""
    movable: bool = False
    """A batch over several servers may send this create to another one: what it certainly
    did not take (refused for now, or never sent) is raised at once, not asked again here."""


@dataclass
class _Handoff:
    """A create running in the service group for a caller awaiting its answer."""

    done: anyio.Event = field(default_factory=anyio.Event)
    task: Task | None = None
    error: BaseException | None = None
    abandoned: bool = False


class _Tracker:
    """A set of cancel scopes of work in flight, and a way to wait until there is none."""

    def __init__(self) -> None:
        self.scopes: set[anyio.CancelScope] = set()
        self._changed: anyio.Event | None = None

    def hold(self) -> anyio.CancelScope:
        """A shielded scope counted from now on (before the work using it has started)."""
        scope = anyio.CancelScope(shield=True)
        self.scopes.add(scope)
        return scope

    @contextmanager
    def running(self, scope: anyio.CancelScope) -> Iterator[anyio.CancelScope]:
        """Run inside ``scope``; it stops counting when the block ends."""
        self.scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self.scopes.discard(scope)
            if self._changed is not None:
                self._changed.set()

    async def wait_empty(self) -> None:
        while self.scopes:
            if self._changed is None or self._changed.is_set():  # one event for all waiters
                self._changed = anyio.Event()
            await self._changed.wait()

    def cut(self, deadline: float) -> None:
        for scope in self.scopes:
            scope.deadline = min(scope.deadline, deadline)


class ClientClosedError(OomolConnectError):
    """The client was closed while this call was in flight; its task was stopped."""


class Lifecycle:
    """Creates, runs and stops the tasks of one client; what waits and batches build on.

    ``get``/``get_logs``/``stop_abandoned`` are what a ``TaskWait`` needs; ``create_owned``
    and ``run`` what a batch needs.
    """

    def __init__(self, api: TaskEndpoints, polling_model: PollingModel | None = None) -> None:
        self.api = api
        self.polling_model = PollingModel() if polling_model is None else polling_model
        self._metrics = api.transport.metrics
        self._group: TaskGroup | None = None
        self._owner: int | None = None
        self._accepting = False
        self._service_work = _Tracker()
        self._runs = _Tracker()
        self._claimed: OrderedDict[str, float] = OrderedDict()

    # -- the service group ------------------------------------------------------------------

    async def open(self) -> None:
        """Start the service group; the task calling this must be the one calling ``close``."""
        if self._group is not None:
            return
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group, self._owner, self._accepting = group, anyio.get_current_task().id, True

    async def close(self) -> None:
        """Cancel the runs in flight, let them and the service group send their stops
        (within ``CLOSE_DEADLINE``), then end the service group."""
        with anyio.CancelScope(shield=True):
            deadline = anyio.current_time() + CLOSE_DEADLINE
            for scope in self._runs.scopes:
                scope.cancel()
            with anyio.CancelScope(deadline=deadline):
                await self._runs.wait_empty()
            self._accepting = False
            self._service_work.cut(deadline)
            with anyio.CancelScope(deadline=deadline):
                await self._service_work.wait_empty()
        group = self._group
        if group is None or anyio.get_current_task().id != self._owner:
            return  # a task group is left by the task that entered it: its __aexit__
        self._group = None
        group.cancel_scope.cancel()
        await group.__aexit__(None, None, None)

    def _service(self) -> TaskGroup | None:
        return self._group if self._accepting else None

    # -- what a wait needs ------------------------------------------------------------------

    async def get(self, task_id: str) -> Task:
        return await self.api.get(task_id)

    async def get_logs(self, task_id: str) -> list[TaskLog]:
        return await self.api.get_logs(task_id)

    async def stop_abandoned(self, task_id: str) -> bool:
        """Stop a task this client gave up on; wait for the stop unless cancelled natively.

        In the service group when the client is open, so that a second cancellation of
        the caller cannot cut it; inline and shielded otherwise. Never raises.
        """
        service = self._service()
        if service is None:
            return await self._stop_until_deadline(task_id)
        done = anyio.Event()
        outcome: list[bool] = []

        async def stop(scope: anyio.CancelScope) -> None:
            with self._service_work.running(scope):
                outcome.append(await self._stop_until_deadline(task_id))
            done.set()

        service.start_soon(stop, self._service_work.hold())
        with anyio.CancelScope(shield=True):
            await done.wait()
        return bool(outcome and outcome[0])

    async def settled(self) -> None:
        """Wait until the service group has no create or stop in flight."""
        await self._service_work.wait_empty()

    async def _stop_until_deadline(self, task_id: str) -> bool:
        """Send the stop; retry transient failures with jittered backoff until
        ``STOP_DEADLINE`` has passed since the first failure, then log once and give up."""
        with anyio.CancelScope(shield=True):
            return await self._stop_attempts(task_id, _concurrency.STOP_DEADLINE)
        return False  # pragma: no cover - only a shielded scope's own deadline ends it

    async def _stop_attempts(self, task_id: str, limit: float) -> bool:
        give_up_at: float | None = None
        attempt = 0
        while True:
            remaining = limit if give_up_at is None else give_up_at - anyio.current_time()
            try:
                await self.api.stop(task_id, retry=False, request_timeout=max(remaining, 0.01))
                return True
            except (ApiError, ConnectionError) as exc:
                if isinstance(exc, ApiError) and exc.status == 404:
                    logger.debug("task %s to stop is gone: %s", task_id, exc)
                    return True
                if give_up_at is None:
                    give_up_at = anyio.current_time() + limit
                delay = _jittered(attempt)
                attempt += 1
                if not is_transient(exc) or anyio.current_time() + delay >= give_up_at:
                    logger.warning(
                        "stopping task %s failed after %d attempt%s; it may still run: %s",
                        task_id, attempt, "s" if attempt > 1 else "", exc,
                    )
                    return False
                await anyio.sleep(delay)
            except Exception as exc:  # e.g. a hook's error: never mask the caller's
                logger.warning("stopping task %s failed; it may still run: %s", task_id, exc)
                return False

    # -- creates ----------------------------------------------------------------------------

    def json_call(self, request: CreateTaskRequest) -> CreateCall:
        """The create of ``request`` (validated now, before anything is sent)."""
        payload = build_create_payload(request)
        body = canonical_json(payload)
        return CreateCall(
            payload["manifest"], payload["inputValues"],
            lambda retry: self.api.create(body, retry=retry), body,
        )

    def multipart_call(
        self, manifest: str, input_values: TaskInputValues | None, files: Files | None
    ) -> CreateCall:
        """The multipart create of a manifest, inputs and files (checked now)."""
        target = validate_manifest(manifest)
        values = normalize_input_values(input_values)
        fields = {"manifest": target, "inputValues": json.dumps(values)}
        body = MultipartBody(fields, prepare_files(files))
        return CreateCall(
            target, values, lambda retry: self.api.create_multipart(body, retry=retry)
        )

    async def create(self, call: CreateCall) -> Task:
        """Send a create and return its task, recovering a task whose answer was lost.

        A create that may have reached the server (a connection lost after sending, 502,
        504, 503 without ``Retry-After``) is reconciled: the task is looked up and adopted
        when exactly one matches, and the create is sent again only when none does.
        """
        resends = refusals = 0
        refused_since: float | None = None
        while True:
            sent_at_ms = time.time() * 1000
            try:
                task = await self._send(call)
            except (ApiError, ConnectionError) as exc:
                if call.movable and never_created(exc):
                    raise  # another server of the batch gets it
                if _come_back_later(exc):
                    # Not taken, and the server said when to ask again: a run keeps asking
                    # within its outage budget, as it rides out missed polls.
                    now = anyio.current_time()
                    refused_since = now if refused_since is None else refused_since
                    delay = self.api.transport.retry.delay(refusals, exc.retry_after)
                    if now + delay - refused_since < call.lookup_budget:
                        refusals += 1
                        logger.debug("create refused for now (%s): asking again", exc)
                        await anyio.sleep(delay)
                        continue
                    raise
                if not may_have_been_taken(exc):
                    raise
                found = await self._reconcile_after(exc, call, sent_at_ms)
                if found is not None:
                    return found
                if resends >= self.api.max_retries or not may_send_again(exc):
                    raise
                resends += 1
                logger.debug("no task matches a create that failed (%s): sending it again", exc)
                continue
            self._claim(task["id"])
            return task

    async def _send(self, call: CreateCall) -> Task:
        try:
            return await call.send(not call.movable)
        except Exception as exc:
            hook_error = getattr(_errors, "HookError", None)
            if hook_error is not None and isinstance(exc, hook_error):
                task_id = _task_id_in(getattr(exc, "body", None))
                if task_id is not None:
                    self._claim(task_id)
                    await self._stop_until_deadline(task_id)
            raise

    async def _reconcile_after(
        self, error: Exception, call: CreateCall, sent_at_ms: float
    ) -> Task | None:
        try:
            adopted, uncertain = await self.find_created(call, sent_at_ms, call.lookup_budget)
        except Exception as exc:  # the create's own error is the one to raise
            add_note(error, f"(looking the task up failed too: {exc})")
            # Its cause stays the create's own failure (a lost answer, which says the task
            # may exist): the lookup's error is its context only.
            raise error  # noqa: B904
        if adopted is not None:
            logger.info("adopted task %s, created by a create whose answer was lost", adopted["id"])
            return adopted
        if uncertain:
            ids = ", ".join(uncertain)
            add_note(error, f"(tasks that may be the one it created, left as they are: {ids})")
            logger.warning("a create failed and several tasks may be its own: %s", ids)
            raise error
        return None

    async def find_created(
        self, call: CreateCall, sent_at_ms: float, budget: float = 0.0, alike: int = 1
    ) -> tuple[Task | None, list[str]]:
        """Look up the task that ``call``, sent at ``sent_at_ms`` (epoch ms), may have made.

        The listing rides out transient failures for ``budget`` seconds beyond the
        transport's retries, since a create lost in an outage is looked up during it. An
        adopted task is claimed: no later lookup adopts it again. Returns what
        ``reconcile_create`` does.
        """
        give_up_at = anyio.current_time() + budget
        attempt = 0
        while True:
            try:
                listing = await self.api.list()
                break
            except Exception as exc:
                delay = _jittered(attempt)
                attempt += 1
                if not is_transient(exc) or anyio.current_time() + delay >= give_up_at:
                    raise
                await anyio.sleep(delay)
        adopted, uncertain = reconcile_create(
            listing["tasks"], call.manifest, call.input_values, sent_at_ms, self._claimed, alike
        )
        if adopted is not None:
            self._claim(adopted["id"])
        return adopted, uncertain

    def claim(self, task_id: str) -> None:
        """Mark ``task_id`` as this client's: no lookup of a lost create adopts it."""
        self._claim(task_id)

    def _claim(self, task_id: str) -> None:
        now = time.monotonic()
        self._claimed[task_id] = now
        while self._claimed:
            oldest, at = next(iter(self._claimed.items()))
            if now - at <= CLAIM_WINDOW:
                break
            del self._claimed[oldest]

    async def create_owned(
        self, call: CreateCall, shields: set[anyio.CancelScope] | None = None
    ) -> Task:
        """Create a task this client owns, so that no cancellation can lose it.

        Open client: the create runs in the service group; a cancelled caller returns at
        once and the service group stops the task when its id arrives. Otherwise the
        create runs inline and shielded (a batch passes ``shields`` to cut it short when
        it aborts), and a cancellation that arrived meanwhile stops the new task.
        """
        service = self._service()
        if service is None:
            return await self._create_inline(call, shields)
        await anyio.lowlevel.checkpoint_if_cancelled()  # nothing to create for a caller gone
        handoff = _Handoff()
        service.start_soon(self._create_for, call, handoff, self._service_work.hold())
        try:
            await handoff.done.wait()
        except BaseException:
            handoff.abandoned = True
            if handoff.task is not None:  # the answer came as the caller was cancelled
                service.start_soon(self._stop_created, handoff.task, self._service_work.hold())
            raise
        if handoff.error is not None:
            raise handoff.error
        assert handoff.task is not None
        return handoff.task

    async def _create_for(
        self, call: CreateCall, handoff: _Handoff, scope: anyio.CancelScope
    ) -> None:
        """The service side of ``create_owned``: never raises, stops what was abandoned.

        ``scope`` is shielded: only ``close()`` cuts it (after ``CLOSE_DEADLINE``).
        """
        with self._service_work.running(scope):
            try:
                handoff.task = await self.create(call)
            except Exception as exc:
                handoff.error = exc
            finally:
                if handoff.task is None and handoff.error is None:
                    logger.warning("gave up creating a task as the client closed; it may exist")
                    handoff.error = ClientClosedError("the client closed before the task existed")
                handoff.done.set()
            if handoff.abandoned and handoff.task is not None:
                await self._stop_created(handoff.task)

    async def _stop_created(self, task: Task, scope: anyio.CancelScope | None = None) -> None:
        with self._service_work.running(scope or anyio.CancelScope(shield=True)):
            if task.get("status") not in TERMINAL:
                await self._stop_until_deadline(task["id"])

    async def _create_inline(
        self, call: CreateCall, shields: set[anyio.CancelScope] | None
    ) -> Task:
        # Nothing to create for a caller cancelled already (a batch's run started just
        # before the batch aborted, say): the shield below would carry the create through.
        await anyio.lowlevel.checkpoint_if_cancelled()
        shield = anyio.CancelScope(shield=True)
        if shields is not None:
            shields.add(shield)
        try:
            with shield:
                task = await self.create(call)
        finally:
            if shields is not None:
                shields.discard(shield)
        if shield.cancelled_caught:
            logger.warning("gave up creating a task after a cancellation; it may exist")
            await anyio.lowlevel.checkpoint()  # re-raises the cancellation
            raise OomolConnectError("gave up creating a task; it may exist")
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            if task.get("status") not in TERMINAL:
                await self._stop_until_deadline(task["id"])
            raise
        return task

    # -- runs -------------------------------------------------------------------------------

    @contextmanager
    def closable(self) -> Iterator[None]:
        """A call ``close()`` may cancel: it then raises ``ClientClosedError``."""
        with self._runs.running(anyio.CancelScope()) as scope:
            yield
        if scope.cancelled_caught:
            raise ClientClosedError("the client was closed during this call; its task was stopped")

    async def run(
        self,
        call: CreateCall,
        polling: Polling,
        shields: set[anyio.CancelScope] | None = None,
        *,
        collect_logs: bool = True,
    ) -> RunResult:
        """Create, wait, and return the task, its logs and its result."""
        started = time.monotonic()
        call = dataclasses.replace(call, lookup_budget=polling.poll_error_budget)
        with self.closable():
            task = await self.create_owned(call, shields)
            waiter = TaskWait.after_create(self, task, polling, started)
            return await self.follow(waiter, collect_logs=collect_logs)
        raise AssertionError("unreachable")  # pragma: no cover - closable() raises

    async def follow(self, waiter: TaskWait, *, collect_logs: bool = True) -> RunResult:
        """Wait for ``waiter``'s task and return it as a ``RunResult``.

        ``in_flight_runs`` counts the run from the moment its task exists.
        """
        self._metrics.in_flight_runs += 1
        try:
            final = await waiter.wait(collect_logs=collect_logs)
        except OomolConnectError as exc:
            if exc.task_id is None:  # the task exists: say which, whatever went wrong
                exc.task_id = waiter.task_id
            raise
        finally:
            self._metrics.in_flight_runs -= 1
        return {
            "task_id": waiter.task_id,
            "task": final,
            "logs": waiter.logs,
            "result": extract_result(waiter.logs),
            "stats": waiter.stats(),
        }


def _come_back_later(error: Exception) -> TypeGuard[ApiError]:
    """A 429, or an error answer with ``Retry-After``: the server did not take the create
    and said it may later (the transport's own retries of it were spent already)."""
    return isinstance(error, ApiError) and error.status >= 400 and (
        error.status == 429 or error.retry_after is not None
    )


def _jittered(attempt: int) -> float:
    """Full-jitter backoff between attempts of a cleanup stop or a lookup."""
    return random.uniform(0, min(_BACKOFF[1], _BACKOFF[0] * 2**attempt))


def _task_id_in(body: object) -> str | None:
    if isinstance(body, dict):
        inner = body.get("task", body)
        task_id = inner.get("id") if isinstance(inner, dict) else None
        if isinstance(task_id, str) and task_id:
            return task_id
    return None
