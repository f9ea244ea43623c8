"""Section 3: a learning-rate × seed grid as one vmapped program vs the same runs one at a time.

Each run is a real :func:`igrlib.training.program.train_group` run on an MNIST subset (training, periodic
evaluation on both splits, status bookkeeping). Per width, timed interleaved, one call training
the whole grid:

* ``sequential``: one program per run;
* ``vmap``: the whole grid as one vmapped program;
* ``runner``: the grouping the grid runner uses (:func:`igrlib.experiments.common.group_size`,
  chunks as :func:`igrlib.sweep.plan` cuts them), timed only where it differs from both.

Reported: runs per minute of each and the speed-ups ``t_sequential / t_case``; the crossover is
the widest width at which the vmapped grid beats the sequential runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench import timing
from igrlib.io import data as data_mod
from igrlib.experiments import common
from igrlib.training.config import TrainConfig
from igrlib.training.program import train_group


def grid(width: int, learning_rates: Sequence[float], seeds: int, **train: Any) -> list[TrainConfig]:
    """The ``len(learning_rates) × seeds`` runs of one width, learning rate varying slowest."""
    return [TrainConfig(width=width, learning_rate=lr, seed=s, selection="test", **train)
            for lr in learning_rates for s in range(seeds)]


def runner_group_size(cfg: TrainConfig) -> int:
    """Runs per program as the grid runner chooses them for ``cfg``."""
    return max(1, common.group_size({"train": cfg.to_dict()}))


def _case(name: str, groups: list[list[TrainConfig]], data: data_mod.Dataset) -> timing.Case:
    def call() -> None:
        for group in groups:
            train_group(group, data, progress=False)

    return timing.Case(name, call, sum(len(g) for g in groups))


def measure(width: int, learning_rates: Sequence[float], seeds: int, repeats: int,
            data: data_mod.Dataset, **train: Any) -> dict[str, Any]:
    """One width's grid; ``train`` holds the other :class:`TrainConfig` fields."""
    configs = grid(width, learning_rates, seeds, **train)
    n = len(configs)
    size = runner_group_size(configs[0])
    cases = [_case("sequential", [[c] for c in configs], data), _case("vmap", [configs], data)]
    if 1 < size < n:
        cases.append(_case("runner", [configs[i:i + size] for i in range(0, n, size)], data))
    times = timing.interleaved(cases, repeats)
    runner = "runner" if 1 < size < n else ("sequential" if size == 1 else "vmap")
    runs_per_min = {c.name: 60 / times.median(c.name) for c in cases}
    speedup = {c.name: times.ratio("sequential", c.name) for c in cases}
    return {
        "width": width,
        "runs": n,
        "runner_group_size": size,
        "runner_is": runner,
        "runs_per_min": {**runs_per_min, "runner": runs_per_min[runner]},
        "speedup_vs_sequential": {**speedup, "runner": speedup[runner]},
        "cases": times.summary(),
    }


def run(widths: Sequence[int], runs: Mapping[int, int], learning_rates: Sequence[float],
        repeats: int, n_train: int, n_test: int, batch_size: int, epochs: int,
        eval_every: int) -> dict[str, Any]:
    """Every width with ``runs[width]`` runs (a multiple of ``len(learning_rates)``)."""
    data = data_mod.load("mnist", n_train=n_train, n_test=n_test)
    train = dict(n_train=n_train, n_test=n_test, batch_size=batch_size, epochs=epochs,
                 eval_every=eval_every)
    rows = []
    for w in widths:
        if runs[w] % len(learning_rates):
            raise ValueError(f"runs[{w}] = {runs[w]} is not a multiple of {len(learning_rates)} learning rates")
        rows.append(measure(w, learning_rates, runs[w] // len(learning_rates), repeats, data, **train))
    faster = [r["width"] for r in rows if r["speedup_vs_sequential"]["vmap"] > 1]
    return {
        "settings": {"widths": list(widths), "runs": {str(w): runs[w] for w in widths},
                     "learning_rates": list(learning_rates), "repeats": repeats, **train,
                     "dataset": data.label},
        "rows": rows,
        "vmap_faster_at_widths": faster,
        # the policy is right where it batches only when batching pays, and loops only where it does not
        "policy_agrees": all(r["speedup_vs_sequential"]["runner"] >= 1 if r["runner_group_size"] > 1
                             else r["speedup_vs_sequential"]["vmap"] <= 1 for r in rows),
    }
