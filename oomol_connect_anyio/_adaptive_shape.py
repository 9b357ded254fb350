"""The learned schedule's maths: a smoothed duration distribution and where to poll in it.

**The distribution.** A window of run durations is smoothed into a density by a Gaussian kernel on
log-durations (run times are positive and skewed, and a log-normal kernel respects both), with
Silverman's rule-of-thumb bandwidth and a floor of ``_MIN_BANDWIDTH`` so that identical samples
still give a spread. Several populations under one manifest (small and large inputs) give
several modes; nothing assumes one shape.

**The schedule.** Polling at density ``n(t)`` costs about ``E[polls] = ∫ n(t) S(t) dt`` (a
poll at ``t`` is made only if the run is still going, ``S`` being the survival function) and
detects a completion at ``t`` about ``1 / (2 n(t))`` late, so ``E[latency] = ∫ f / (2 n) dt``.
Their product is independent of the scale of ``n`` and, by Cauchy-Schwarz, smallest when
``n`` is proportional to ``sqrt(f / S)``, the square root of the hazard rate: polls crowd where
runs are likely to end *given that they have not ended yet*, and skip the start, where none
ends. The scale is set by ``interval_ms``: the schedule aims at the mean latency that fixed
polling every ``interval_ms`` gives (half an interval), with the polls placed where they catch
completions. Concretely, with ``C(t) = ∫ sqrt(f / S)`` and ``I = ∫ sqrt(f S)``, the next poll
after elapsed time ``t`` is where ``C`` has grown by ``interval / I``. Delays never go below a
quarter of ``interval_ms`` nor above ``max_interval_ms``. Past the learned range (survival
under ``_TAIL``) the delay grows by ``backoff_factor`` per poll from the last learned one,
capped by ``max_interval_ms``.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._options import Polling

_MIN_BANDWIDTH = 0.02  # in log-duration: a 2 % spread at least
_SHORTEST = 0.001  # server times are in milliseconds
_TAIL = 0.005  # survival below which the learned range ends
_KERNEL_REACH = 5.0  # bandwidths beyond which a kernel is taken as zero
_GRID_MIN, _GRID_MAX = 64, 512
_MIN_DELAY_SHARE = 0.25  # of interval_ms


@dataclass(frozen=True)
class LearnedShape:
    """The learned part of a schedule, independent of its scale.

    ``times`` (seconds since creation, increasing) carry ``mass``, the running integral of
    the square root of the hazard rate; ``spread`` is ``∫ sqrt(f S) dt`` over the range.
    """

    times: tuple[float, ...]
    mass: tuple[float, ...]
    end_rate: float
    spread: float

    @classmethod
    def from_samples(cls, durations: Iterable[float]) -> LearnedShape:
        """The shape of the smoothed distribution of ``durations`` (seconds, at least two)."""
        logs = sorted(math.log(max(float(d), _SHORTEST)) for d in durations)
        if len(logs) < 2:
            raise ValueError("a learned shape needs at least two durations")
        width = _bandwidth(logs)
        low, high = logs[0] - 4 * width, logs[-1] + 4 * width
        count = min(_GRID_MAX, max(_GRID_MIN, math.ceil((high - low) / (width / 4))))
        step = (high - low) / count
        grid = [low + step * j for j in range(count + 1)]
        density = _kernel_density(logs, width, low, step, len(grid))
        times: list[float] = []
        mass: list[float] = []
        cdf = spread = total = 0.0
        # (g, and the integrands of mass and spread in log-time) at the previous grid point
        previous: tuple[float, float, float] | None = None
        for x, g in zip(grid, density, strict=True):
            if previous is not None:
                cdf += (g + previous[0]) / 2 * step
            survival = 1.0 - cdf
            if survival < _TAIL:
                break
            t = math.exp(x)
            # In log-time dt = t dx: sqrt(f/S) dt = sqrt(g t/S) dx, sqrt(f S) dt = sqrt(g S t) dx
            here = (g, math.sqrt(g * t / survival), math.sqrt(g * t * survival))
            if previous is not None:
                total += (here[1] + previous[1]) / 2 * step
                spread += (here[2] + previous[2]) / 2 * step
            times.append(t)
            mass.append(total)
            previous = here
        end_rate = previous[1] / times[-1] if previous is not None else 0.0
        return cls(tuple(times), tuple(mass), end_rate, spread)

    def delay_after(self, elapsed: float, polling: Polling) -> float:
        """The sleep before the next poll, ``elapsed`` seconds after the task's creation."""
        shortest = polling.interval * _MIN_DELAY_SHARE
        if self.spread <= 0 or self.end_rate <= 0:  # degenerate: no learned range
            return polling.interval
        step = polling.interval / self.spread
        end = self.times[-1]
        if elapsed >= end:
            last = step / self.end_rate
            delay = last + (polling.factor - 1) * (elapsed - end)
        else:
            target = self._mass_at(elapsed) + step
            if target <= self.mass[-1]:
                delay = self._time_at(target) - elapsed
            else:  # beyond the range: at the rate of its end
                delay = end + (target - self.mass[-1]) / self.end_rate - elapsed
        return min(polling.max_interval, max(shortest, delay))

    def _mass_at(self, t: float) -> float:
        times, mass = self.times, self.mass
        if t <= times[0]:
            return 0.0
        j = bisect_right(times, t) - 1
        if j >= len(times) - 1:
            return mass[-1]
        return mass[j] + (mass[j + 1] - mass[j]) * (t - times[j]) / (times[j + 1] - times[j])

    def _time_at(self, target: float) -> float:
        times, mass = self.times, self.mass
        j = bisect_left(mass, target)
        if j == 0:
            return times[0]
        rise = mass[j] - mass[j - 1]
        return times[j] if rise <= 0 else (
            times[j - 1] + (times[j] - times[j - 1]) * (target - mass[j - 1]) / rise
        )


def _bandwidth(logs: Sequence[float]) -> float:
    """Silverman's rule of thumb, ``0.9 min(sd, IQR / 1.34) m^(-1/5)``, floored."""
    m = len(logs)
    mean = sum(logs) / m
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (m - 1))
    iqr = (quantile(logs, 0.75) - quantile(logs, 0.25)) / 1.34
    spread = min(sd, iqr) if iqr > 0 else sd
    return max(_MIN_BANDWIDTH, 0.9 * spread * math.pow(m, -0.2))


def _kernel_density(
    logs: Sequence[float], width: float, low: float, step: float, points: int
) -> list[float]:
    """The Gaussian kernel density of ``logs`` on the grid ``low + step * j``."""
    density = [0.0] * points
    norm = 1.0 / (len(logs) * width * math.sqrt(2 * math.pi))
    reach = _KERNEL_REACH * width
    for x in logs:
        first = max(0, math.ceil((x - reach - low) / step))
        last = min(points - 1, math.floor((x + reach - low) / step))
        for j in range(first, last + 1):
            z = (low + step * j - x) / width
            density[j] += norm * math.exp(-0.5 * z * z)
    return density


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks of a sorted sequence."""
    at = q * (len(ordered) - 1)
    below = math.floor(at)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (at - below)
