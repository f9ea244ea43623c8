"""Wall time of compiled calls measured side by side, for step-cost ratios.

Each round calls every function once, in turn, and waits for its result: interleaving the rounds
makes the ratios between calls fair on a machine whose load changes while they run (a slow
minute hits every call alike). Compile each call before timing it: compilation is not a step's cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import jax


def interleaved_times(calls: Mapping[str, Callable[[int], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``calls[name](round)`` in each of ``repeats`` rounds (``jax.block_until_ready``
    on its result), every round calling each function once, in the order given."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call(round_))
            times[name].append(time.perf_counter() - start)
    return times
