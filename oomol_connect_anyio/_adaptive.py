"""Adaptive polling: learn how long runs take, and poll when they are likely to end.

**The model.** For each manifest (and each package, for install waits) a client keeps the
durations of the last ``WINDOW`` runs it saw complete: the server's completion time minus its
creation time (``updated_at - created_at``), so neither the network nor the client's clock
enters them. A window of recent runs rather than a reservoir of all of them: it is
deterministic (no random replacement), costs ``WINDOW`` floats per manifest, and follows a
workload whose durations drift. At most ``MAX_MANIFESTS`` manifests are kept (the least
recently completed one is forgotten first), so the whole model is bounded. Only completed runs
count: a failure often ends early and says little about when a success ends.

The schedule itself (``_adaptive_shape``): polls placed by the square root of the hazard
rate of the smoothed distribution, scaled by ``interval_ms``. With fewer than ``MIN_SAMPLES``
samples a wait polls on the exponential schedule; a wait in flight switches to the learned
schedule as soon as there is one, cutting short the exponential sleep it is in.

Every delay is a function of the time elapsed since the task's creation, so an engine can
combine it with other constraints (a server's ``Retry-After``, a deadline) by taking a maximum
or a minimum. The schedule is rebuilt when the window has changed by an eighth, so its cost
stays small however many runs complete, and is deterministic given the samples it was built on.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio

from ._adaptive_shape import LearnedShape, quantile
from ._options import Polling
from ._types import BackoffStrategy, ManifestDurations, PollingModelExport

MIN_SAMPLES = 8
WINDOW = 128
MAX_MANIFESTS = 256
EXPORT_VERSION = 1


class _Durations:
    """One manifest's window of durations and the shape last built from it."""

    __slots__ = ("added", "built", "built_at", "window")

    def __init__(self) -> None:
        self.window: deque[float] = deque(maxlen=WINDOW)
        self.added = 0
        self.built: LearnedShape | None = None
        self.built_at = 0

    def shape(self) -> LearnedShape | None:
        if len(self.window) < MIN_SAMPLES:
            return None
        if self.built is None or self.added - self.built_at >= max(1, len(self.window) // 8):
            self.built = LearnedShape.from_samples(self.window)
            self.built_at = self.added
        return self.built


class PollingModel:
    """What one client has learned of run durations, per manifest (``client.polling_model``).

    Fed by every wait of the client (``run``, ``run_many``, ``watch``, the other waits, and
    install waits under ``"install:<package>"``), used by waits whose ``backoff_strategy`` is
    ``"adaptive"``. ``stats()`` shows it, ``export()``/``seed()`` carry it across processes.
    """

    def __init__(self, server: str = "") -> None:
        self._server = server
        self._manifests: OrderedDict[str, _Durations] = OrderedDict()
        # Set when a manifest reaches MIN_SAMPLES, for the waits sleeping unlearned meanwhile.
        self._learning: OrderedDict[str, anyio.Event] = OrderedDict()

    def record(self, manifest: str, duration: float) -> None:
        """Add one completed run's duration (seconds) under ``manifest``."""
        if not isinstance(manifest, str):
            raise TypeError(f"manifest must be a string, not {type(manifest).__name__}")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise TypeError(f"duration must be a number of seconds, not {duration!r}")
        if not math.isfinite(duration) or duration < 0:
            raise ValueError(f"duration must be a finite number >= 0, not {duration!r}")
        entry = self._manifests.pop(manifest, None) or _Durations()
        self._manifests[manifest] = entry  # most recently completed last
        entry.window.append(float(duration))
        entry.added += 1
        while len(self._manifests) > MAX_MANIFESTS:
            self._manifests.popitem(last=False)
        if len(entry.window) >= MIN_SAMPLES and manifest in self._learning:
            self._learning.pop(manifest).set()

    def learned(self, manifest: str) -> anyio.Event:
        """An event set once ``manifest`` has ``MIN_SAMPLES`` samples (call in the event loop)."""
        event = self._learning.pop(manifest, None) or anyio.Event()
        self._learning[manifest] = event
        if self.shape(manifest) is not None:
            self._learning.pop(manifest).set()
        while len(self._learning) > MAX_MANIFESTS:  # bounded; a woken wait sleeps on
            self._learning.popitem(last=False)[1].set()
        return event

    def shape(self, manifest: str) -> LearnedShape | None:
        """The learned shape for ``manifest``, or ``None`` before ``MIN_SAMPLES`` samples."""
        entry = self._manifests.get(manifest)
        return None if entry is None else entry.shape()

    def stats(self) -> dict[str, ManifestDurations]:
        """Sample count and quantiles (milliseconds) of every manifest known."""
        out: dict[str, ManifestDurations] = {}
        for manifest, entry in self._manifests.items():
            ordered = sorted(entry.window)
            out[manifest] = {
                "samples": len(ordered),
                "seen": entry.added,
                "learned": len(ordered) >= MIN_SAMPLES,
                "p10_ms": quantile(ordered, 0.1) * 1000,
                "p50_ms": quantile(ordered, 0.5) * 1000,
                "p90_ms": quantile(ordered, 0.9) * 1000,
                "max_ms": ordered[-1] * 1000,
            }
        return out

    def export(self) -> PollingModelExport:
        """The samples (milliseconds, oldest first), JSON-ready, for ``seed`` elsewhere."""
        return {
            "version": EXPORT_VERSION,
            "server": self._server,
            "durations_ms": {
                manifest: [d * 1000 for d in entry.window]
                for manifest, entry in self._manifests.items()
            },
        }

    def seed(self, exported: PollingModelExport | Mapping[str, Any]) -> None:
        """Add the samples of an ``export()`` (from any client or process) to this model.

        The whole argument is checked before anything is added. ``server`` is informational:
        seeding from another server's model is the caller's choice.
        """
        if not isinstance(exported, Mapping):
            raise TypeError(f"seed takes the dict of export(), not {type(exported).__name__}")
        version = exported.get("version", EXPORT_VERSION)
        if version != EXPORT_VERSION:
            raise ValueError(f"polling model export version {version!r} is not {EXPORT_VERSION}")
        durations = exported.get("durations_ms")
        if not isinstance(durations, Mapping):
            raise TypeError("a polling model export needs a 'durations_ms' dict")
        checked: list[tuple[str, list[float]]] = []
        for manifest, samples in durations.items():
            if not isinstance(manifest, str):
                raise TypeError(f"durations_ms keys must be strings, not {manifest!r}")
            if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
                raise TypeError(f"durations_ms[{manifest!r}] must be a list of milliseconds")
            for index, sample in enumerate(samples):
                if isinstance(sample, bool) or not isinstance(sample, (int, float)) or not (
                    math.isfinite(sample) and sample >= 0
                ):
                    raise ValueError(
                        f"durations_ms[{manifest!r}][{index}] must be a finite number of "
                        f"milliseconds >= 0, not {sample!r}"
                    )
            checked.append((manifest, [float(sample) / 1000 for sample in samples]))
        for manifest, seconds in checked:
            for duration in seconds:
                self.record(manifest, duration)

    def clear(self) -> None:
        """Forget everything learned."""
        self._manifests.clear()

    def __repr__(self) -> str:
        return f"<PollingModel manifests={len(self._manifests)}>"


class WaitSchedule:
    """The adaptive delays of one wait: learned when the model can, exponential until then.

    Delays count from the task's creation on ``clock``, placed at the first observation
    from the task's ``created_at`` (server epoch ms). ``earliest`` is the ``clock`` reading
    before the create request, when this client created the task: the creation lies between
    it and the create answer, so a server clock out of step with ours moves the estimate
    by a round trip at most.
    """

    def __init__(
        self,
        model: PollingModel,
        polling: Polling,
        earliest: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._model = model
        self._polling = polling
        self._earliest = earliest
        self._created: float | None = None
        self._clock = clock
        self._key: str | None = None
        self._unlearned = polling.interval

    def observe(self, key: str, created_ms: object) -> None:
        """Name what is run and, at the first observation, place its creation."""
        if self._key is None:
            self._key = key
        if self._created is None:
            now = self._clock()
            if isinstance(created_ms, (int, float)) and not isinstance(created_ms, bool):
                created = now - max(0.0, time.time() - created_ms / 1000)
            else:
                created = now if self._earliest is None else self._earliest
            self._created = created if self._earliest is None else max(created, self._earliest)

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay``, or less if the model learns this manifest meanwhile.

        A wait sleeping an exponential interval then sleeps what the learned schedule says
        from now instead, within the same bound: it never sleeps longer than ``delay``.
        """
        if self._key is None or self._model.shape(self._key) is not None:
            await anyio.sleep(delay)
            return
        with anyio.move_on_after(delay):
            await self._model.learned(self._key).wait()
            if self._model.shape(self._key) is None:  # woken without learning: sleep on
                await anyio.sleep_forever()
            await anyio.sleep(self.next_delay())

    def next_delay(self) -> float:
        """The sleep before the next poll."""
        shape = None if self._key is None else self._model.shape(self._key)
        if shape is None:
            delay = self._unlearned
            self._unlearned = min(self._polling.max_interval, delay * self._polling.factor)
            return delay
        now = self._clock()
        return shape.delay_after(now - (now if self._created is None else self._created),
                                 self._polling)


def adapt(
    model: PollingModel, polling: Polling, created: float | None
) -> tuple[Polling, WaitSchedule | None]:
    """``polling`` bound to a new ``WaitSchedule`` when it asks for ``"adaptive"``."""
    if polling.strategy is not BackoffStrategy.ADAPTIVE:
        return polling, None
    schedule = WaitSchedule(model, polling, created)
    return replace(polling, next_delay=schedule.next_delay, sleep=schedule.sleep), schedule


def completed_duration(created_ms: object, ended_ms: object) -> float | None:
    """Seconds from creation to completion, from two epoch-millisecond stamps, if both valid."""
    stamps = (created_ms, ended_ms)
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in stamps):
        return None
    duration = (float(ended_ms) - float(created_ms)) / 1000  # type: ignore[arg-type]
    return duration if math.isfinite(duration) and duration >= 0 else None


def record_completion(model: PollingModel, key: str, created_ms: object, ended_ms: object) -> None:
    """Teach ``model`` one completed run from its server stamps (ignored when they are unusable)."""
    duration = completed_duration(created_ms, ended_ms)
    if duration is not None:
        model.record(key, duration)


def task_key(task: Mapping[str, Any]) -> str:
    """What a task's duration is learned under: its ``manifest_path``."""
    manifest = task.get("manifest_path")
    return manifest if isinstance(manifest, str) and manifest else "?"


def install_key(task: Mapping[str, Any]) -> str:
    """What an install task's duration is learned under: ``install:<package>``."""
    return f"install:{task.get('name') or '?'}"
