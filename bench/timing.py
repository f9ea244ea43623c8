"""Interleaved timing: cases alternate within each repeat, ratios are taken repeat by repeat.

On a shared machine the speed available to a process drifts over seconds. Timing case A for a
while, then case B, folds that drift into the ratio A/B; calling A, B, C, A, B, C, … and taking
the median over repeats of the per-repeat ratio ``t_A,r / t_B,r`` cancels most of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Case:
    """A unit of work: ``call()`` runs ``steps`` steps and returns only once they are done
    (JAX results are blocked on inside ``call``)."""

    name: str
    call: Callable[[], object]
    steps: int = 1


@dataclass(frozen=True)
class Timings:
    """``per_step[name]``: seconds per step, one entry per repeat; ``first_call_s[name]``: the
    warm-up call's seconds (compilation included)."""

    per_step: dict[str, np.ndarray]
    first_call_s: dict[str, float]

    def median(self, name: str) -> float:
        """Median seconds per step of ``name``."""
        return float(np.median(self.per_step[name]))

    def ratio(self, a: str, b: str) -> float:
        """``median_r (t_a,r / t_b,r)``: the time of ``a`` over that of ``b``, paired by repeat."""
        return float(np.median(self.per_step[a] / self.per_step[b]))

    def spread(self, name: str) -> float:
        """Relative spread ``(q75 − q25) / median`` of ``name``'s times (dimensionless)."""
        q25, q50, q75 = np.percentile(self.per_step[name], [25, 50, 75])
        return float((q75 - q25) / q50)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per case, median milliseconds per step, steps per second, spread, the
        first call's seconds."""
        return {name: {"ms": 1e3 * self.median(name), "steps_per_s": 1 / self.median(name),
                       "spread": self.spread(name), "first_call_s": self.first_call_s[name]}
                for name in self.per_step}


def interleaved(cases: Sequence[Case], repeats: int, warmup: int = 1) -> Timings:
    """Time ``cases``: each is first called ``warmup`` times (compilation, caches), then
    ``repeats`` rounds call every case once, the order rotated by one each round so that no case
    always follows the same neighbour."""
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be distinct, got {names}")
    if repeats < 1 or warmup < 1:
        raise ValueError(f"repeats and warmup must be >= 1, got {repeats} and {warmup}")
    first: dict[str, float] = {}
    for case in cases:
        start = time.perf_counter()
        case.call()
        first[case.name] = time.perf_counter() - start
        for _ in range(warmup - 1):
            case.call()
    out: dict[str, list[float]] = {c.name: [] for c in cases}
    for r in range(repeats):
        shift = r % len(cases)
        for case in list(cases[shift:]) + list(cases[:shift]):
            start = time.perf_counter()
            case.call()
            out[case.name].append((time.perf_counter() - start) / case.steps)
    return Timings({name: np.asarray(ts) for name, ts in out.items()}, first)
