"""Resumable sweeps: run a grid of configs through an experiment, store every record.

An *experiment* is any object (in practice a module of :mod:`igrlib.experiments`) with

* ``NAME: str``: the store's folder name;
* ``group_key(config) -> hashable``: configs with equal keys may run as one program;
* ``group_size(config) -> int``: how many runs to put in one program (vmap on small models,
  one at a time where batching would be slower);
* ``run_group(configs) -> list[Outcome]``: train and measure, one outcome per config.

Groups are formed from the FULL grid in grid order, so a resumed sweep runs exactly the same
programs as an uninterrupted one and produces the same numbers. A group with every record
present is skipped; otherwise it runs and only missing records are written. An exception inside
a group is stored as ``failed`` for each of its runs (retried next time) and the sweep goes on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from igrlib.io.results import Store, run_id


@dataclass
class Outcome:
    """What an experiment reports for one run; becomes one record in the store."""

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    status_step: int | None = None
    wall_time_s: float | None = None


class Experiment(Protocol):
    NAME: str

    def group_key(self, config: Mapping[str, Any]) -> Hashable: ...

    def group_size(self, config: Mapping[str, Any]) -> int: ...

    def run_group(self, configs: Sequence[Mapping[str, Any]]) -> list[Outcome]: ...


def plan(experiment: Experiment, grid: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Split ``grid`` into the groups that run as one program (deterministic, grid order)."""
    buckets: dict[Hashable, list[Mapping[str, Any]]] = {}
    for config in grid:
        buckets.setdefault(experiment.group_key(config), []).append(config)
    groups = []
    for members in buckets.values():
        size = max(1, experiment.group_size(members[0]))
        groups.extend(members[i:i + size] for i in range(0, len(members), size))
    return groups


def run(experiment: Experiment, grid: Sequence[Mapping[str, Any]], profile: str | None = None,
        store: Store | None = None, verbose: bool = True) -> pd.DataFrame:
    """Run every config of ``grid`` that has no final record yet; return all of the grid's records.

    Returns :meth:`Store.frame` restricted to the grid's configs, in the store's order.
    """
    store = store or Store(experiment.NAME, profile)
    groups = plan(experiment, grid)
    todo = [g for g in groups if not all(store.done(c) for c in g)]
    if verbose:
        print(f"{experiment.NAME} [{store.profile}]: {len(grid)} runs in {len(groups)} programs, "
              f"{len(groups) - len(todo)} already in the store, {len(todo)} to run")
    for i, group in enumerate(todo, 1):
        start = time.perf_counter()
        try:
            outcomes = experiment.run_group(group)
        except Exception as err:  # noqa: BLE001 - one failing program must not stop the sweep
            message = "".join(traceback.format_exception_only(type(err), err)).strip()
            for config in group:
                if not store.done(config):
                    store.put(config, status="failed", error=message,
                              extra={"traceback": traceback.format_exc()})
            if verbose:
                print(f"  program {i}/{len(todo)} failed: {message}")
            continue
        for config, outcome in zip(group, outcomes, strict=True):
            if not store.done(config):
                store.put(config, status=outcome.status, metrics=outcome.metrics,
                          history=outcome.history, extra=outcome.extra,
                          status_step=outcome.status_step, wall_time_s=outcome.wall_time_s)
        if verbose:
            print(f"  program {i}/{len(todo)}: {len(group)} runs in {time.perf_counter() - start:.1f} s")
    return frame(store, grid)


def frame(store: Store, grid: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The store's records of exactly the configs in ``grid``."""
    ids = {run_id(c) for c in grid}
    df = store.frame()
    return df[df["id"].isin(ids)].reset_index(drop=True) if len(df) else df
