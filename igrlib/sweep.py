"""Resumable sweeps: run a grid of configs through an experiment, store every record.

An *experiment* is any object (in practice a module of :mod:`igrlib.experiments`) with

* ``NAME: str``: the store's folder name;
* ``group_key(config) -> hashable``: configs with equal keys may run as one program;
* ``group_size(config) -> int``: how many runs of a program to train as one vmapped group (vmap
  on small models, one at a time where batching would be slower); asked on the worker, which
  knows its device;
* ``run_group(configs) -> list[Outcome]``: train and measure, one outcome per config.

The driver (:func:`run`) cuts the FULL grid into programs by ``group_key`` alone, in grid order,
and hands each program with a missing or failed record to an executor (:mod:`igrlib.executors`:
this process, local processes, submitit/Slurm, Dask). The worker splits its program into groups
of ``group_size`` runs, skips groups whose records are all final, and writes the records itself,
so a resumed sweep trains exactly the groups an uninterrupted one would, with the same numbers,
and a driver that dies loses nothing finished. An exception inside a group is stored as
``failed`` for each of its runs (retried next time) and the sweep goes on; a job that dies (a
killed worker, a lost node) is resubmitted up to ``retries`` times, then stored as ``failed``
with the error and its log. Workers hold a lease per program (:mod:`igrlib.leases`), so two
drivers on one grid run each program once.

Command line (fills the store; ``--dry-run`` plans and prints without running)::

    python -m igrlib.sweep mnist_mlp --profile smoke --executor process --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from igrlib import executors, leases
from igrlib.config import PROFILES, ConfigError, resolve_profile
from igrlib.io.results import Store, run_id

#: Seconds between progress lines (``$IGR_PROGRESS_S`` overrides).
PROGRESS_ENV, PROGRESS_S = "IGR_PROGRESS_S", 30.0
#: How often the driver looks at its jobs, in seconds.
POLL_S = 0.1


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
    """Split ``grid`` into programs: the configs of each ``group_key``, keys in order of first
    appearance, members in grid order (deterministic; never asks ``group_size``)."""
    buckets: dict[Hashable, list[Mapping[str, Any]]] = {}
    for config in grid:
        buckets.setdefault(experiment.group_key(config), []).append(config)
    return list(buckets.values())


def run(experiment: Experiment, grid: Sequence[Mapping[str, Any]], profile: str | None = None,
        store: Store | None = None, verbose: bool = True, *, executor: Any = None,
        workers: int | None = None, devices: Sequence[str] | str | None = None,
        retries: int = 2, lease_ttl: float = leases.DEFAULT_TTL_S,
        progress_every: float | None = None, cluster: str | None = None,
        scheduler: str | None = None, requests: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run every config of ``grid`` that has no final record yet; return all of the grid's records.

    ``executor``: ``"inline"``, ``"process"``, ``"submitit"``, ``"dask"`` or a
    :class:`concurrent.futures.Executor`; None reads ``$IGR_EXECUTOR`` (else inline, or process
    when ``workers > 1``; then a single program to run stays inline). ``workers``: processes (None: ``$IGR_WORKERS``, else 1); ``devices``:
    GPU ids of this host, one pinned process worker each (None: ``$IGR_DEVICES``). ``retries``:
    resubmissions of a job that died. ``lease_ttl``: seconds a dead worker on another host
    keeps its program. ``progress_every``: seconds between progress lines (None:
    ``$IGR_PROGRESS_S``, else 30). ``cluster``, ``scheduler``, ``requests``: see
    :func:`igrlib.executors.open_backend`.

    Returns :meth:`Store.frame` restricted to the grid's configs, in the store's order.
    """
    implicit = executor is None and not os.environ.get(executors.EXECUTOR_ENV)
    executor, workers, devices = executors.settings(executor, workers, devices)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
    store = store if store is not None else Store(experiment.NAME, profile)
    programs = plan(experiment, grid)
    todo = [p for p in programs if not all(store.done(c) for c in p)]
    if implicit and executor == "process" and len(todo) < 2:
        # a pool chosen for more workers cannot use a second one for one program, and would only
        # add its start-up; a pool asked for by name is kept (its workers isolate the job)
        executor = "inline"
    ref = None if executor == "inline" else executors.reference(experiment)
    if verbose:
        where = executor if isinstance(executor, str) else type(executor).__name__
        print(f"{experiment.NAME} [{store.profile}]: {len(grid)} runs in {len(programs)} programs, "
              f"{len(programs) - len(todo)} already in the store, {len(todo)} to run"
              + (f" ({where}, {workers} workers)" if todo and where != "inline" else ""), flush=True)
    if todo:
        every = progress_every if progress_every is not None else float(
            os.environ.get(PROGRESS_ENV) or PROGRESS_S)
        backend = executors.open_backend(executor, workers, devices, store, cluster=cluster,
                                         scheduler=scheduler, requests=requests)
        try:
            _drive(backend, experiment, ref, store, todo, retries, lease_ttl,
                   _Progress(experiment.NAME, todo, verbose, every))
        finally:
            backend.close()
    return frame(store, grid)


class _Progress:
    """Plain progress lines (papermill and logs have no terminal): one per finished program and
    one every ``every`` seconds with programs done/running/failed, elapsed time and an ETA."""

    def __init__(self, name: str, programs: list[list[Mapping[str, Any]]], verbose: bool, every: float):
        self.name, self.verbose, self.every = name, verbose, every
        self.total, self.runs_total = len(programs), sum(len(p) for p in programs)
        self.start = self.last = time.monotonic()
        self.done = self.failed = self.runs_done = 0

    def say(self, line: str) -> None:
        if self.verbose:
            print(line, flush=True)
        self.last = time.monotonic()

    def finished(self, number: int, status: dict[str, Any], size: int) -> None:
        self.runs_done += size
        if status["state"] == "failed":
            self.failed += 1
            self.say(f"  program {number}/{self.total} failed: {status['error']}")
            return
        self.done += 1
        self.say(f"  program {number}/{self.total}: {size} runs in {status['seconds']:.1f} s"
                 + ("" if status["ran"] else " (finished by another worker)"))

    def tick(self, running: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        elapsed = now - self.start
        left = self.runs_total - self.runs_done
        eta = f"{elapsed / self.runs_done * left:.0f} s" if self.runs_done else "unknown"
        self.say(f"  [{self.name} {elapsed:.0f} s] programs: {self.done}/{self.total} done, "
                 f"{running} running, {self.failed} failed; runs {self.runs_done}/"
                 f"{self.runs_total}; ETA {eta}")


def _drive(backend: executors.Backend, experiment: Experiment, ref: str | None, store: Store,
           todo: list[list[Mapping[str, Any]]], retries: int, lease_ttl: float,
           progress: _Progress) -> None:
    """Submit every program, collect statuses, resubmit dead jobs, wait for programs that
    another driver's worker holds (and take them over if that worker dies)."""
    root = str(store.path.parents[1])
    jobs = {}
    for configs in todo:
        pid = executors.program_id(configs)
        jobs[pid] = executors.Job(
            experiment=ref or experiment.NAME, profile=store.profile, root=root, program=pid,
            store=None if store.experiment == experiment.NAME else store.experiment,
            configs=[dict(c) for c in configs], path=ref and executors.import_root(ref),
            lease_ttl=lease_ttl, log_dir=backend.log_dir)
    number = {pid: i for i, pid in enumerate(jobs, 1)}
    lease_dir = store.path / "leases"
    pending, inflight, waiting = list(jobs), {}, set()
    attempts: Counter[str] = Counter()
    generation = 0  # a pool replaced after a crash must not be replaced again for its old jobs
    while pending or inflight or waiting:
        for pid in pending:
            inflight[backend.submit(jobs[pid], experiment)] = (pid, generation)
        pending = []
        finished = [h for h in inflight if h.done()]
        restart = False
        for handle in finished:
            pid, gen = inflight.pop(handle)
            try:
                status = handle.result()
            except Exception as err:  # noqa: BLE001 - the job died: retry, then record it
                restart |= gen == generation and backend.restartable(err)
                attempts[pid] += 1
                message = f"{type(err).__name__}: {err}".strip()
                if attempts[pid] <= retries and (backend.owned or not _broken(err)):
                    progress.say(f"  program {number[pid]}/{progress.total} died ({message}); "
                                 f"resubmitting ({attempts[pid]}/{retries})")
                    pending.append(pid)
                    continue
                status = _record_death(store, jobs[pid], message, backend.log_path(handle))
            if status["state"] == "held":
                waiting.add(pid)
            else:
                progress.finished(number[pid], status, len(jobs[pid].configs))
        if restart:
            backend.restart()
            generation += 1
        for pid in list(waiting):
            if all(store.done(c) for c in jobs[pid].configs):
                waiting.discard(pid)
                progress.finished(number[pid], {"state": "done", "ran": 0, "seconds": 0.0},
                                  len(jobs[pid].configs))
            elif leases.holder(lease_dir, pid, lease_ttl) is None:  # its worker died: take over
                waiting.discard(pid)
                pending.append(pid)
        if time.monotonic() - progress.last >= progress.every:
            live = [p for p, _ in inflight.values()] + list(waiting)
            progress.tick(sum(leases.holder(lease_dir, p, lease_ttl) is not None for p in live))
        if not finished and not pending:
            time.sleep(POLL_S)
    progress.tick(0, force=progress.total > 1 or progress.failed > 0)


def _broken(err: BaseException) -> bool:
    from concurrent.futures import BrokenExecutor

    return isinstance(err, BrokenExecutor)


def _record_death(store: Store, job: executors.Job, message: str, log: str | None) -> dict[str, Any]:
    """Store a dead job's missing runs as ``failed`` with the error and its log path."""
    ids = [run_id(c) for c in job.configs]
    extra = {"log": log, "job": job.program}
    for config in job.configs:
        if not store.done(config):
            store.put(config, status="failed", error=f"the job died: {message}", extra=extra,
                      group=ids, device=False)
    return {"state": "failed", "error": f"the job died: {message}" + (f" (log: {log})" if log else ""),
            "ran": 0, "seconds": 0.0}


def frame(store: Store, grid: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The store's records of exactly the configs in ``grid``."""
    ids = {run_id(c) for c in grid}
    df = store.frame()
    return df[df["id"].isin(ids)].reset_index(drop=True) if len(df) else df


# ------------------------------------------------------------------------------- command line


def _experiment(name: str) -> Any:
    """``mnist_mlp`` -> :mod:`igrlib.experiments.mnist_mlp`; ``pkg.mod`` or ``pkg.mod:ATTR``
    as given."""
    ref = name if ("." in name or ":" in name) else f"igrlib.experiments.{name}"
    try:
        return executors.resolve(ref)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"unknown experiment {name!r} ({err})") from err


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m igrlib.sweep",
                                     description="Fill the results store with an experiment's grid.")
    parser.add_argument("experiment", help="mnist_mlp, egr_mlp, cifar_resnet, or package.module[:ATTR]")
    parser.add_argument("--profile", choices=PROFILES, default=None, help="default: $IGR_PROFILE, else cpu")
    parser.add_argument("--executor", choices=executors.KINDS, default=None,
                        help="default: $IGR_EXECUTOR, else inline (process with --workers > 1)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (process, dask)")
    parser.add_argument("--devices", default=None,
                        help="comma-separated GPU ids of this host: one pinned process worker each")
    parser.add_argument("--gpus-per-job", type=int, default=None, help="submitit: GPUs per job")
    parser.add_argument("--partition", default=None, help="submitit: the Slurm partition")
    parser.add_argument("--time-min", type=int, default=None, help="submitit: minutes per job")
    parser.add_argument("--mem-gb", type=int, default=None, help="submitit: memory per job")
    parser.add_argument("--cluster", default=None, choices=("slurm", "local", "debug"),
                        help="submitit: where jobs run (default: Slurm if found, else local)")
    parser.add_argument("--scheduler", default=None, help="dask: a scheduler address (default: a local cluster)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="the seeds (default: the profile's)")
    parser.add_argument("--retries", type=int, default=2, help="resubmissions of a job that died")
    parser.add_argument("--dry-run", action="store_true", help="plan and print the programs; run nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit status 0 when every run of the grid has a final record."""
    args = parse_args(argv)
    profile = resolve_profile(args.profile)
    experiment = _experiment(args.experiment)
    grid = experiment.grid(profile, seed=args.seeds) if args.seeds else experiment.grid(profile)
    executor, workers, devices = executors.settings(args.executor, args.workers, args.devices)
    requests = executors.resources(profile, gpus_per_node=args.gpus_per_job,
                                   timeout_min=args.time_min, mem_gb=args.mem_gb,
                                   slurm_partition=args.partition)
    store = Store(experiment.NAME, profile)
    if args.dry_run:
        programs = plan(experiment, grid)
        print(f"{experiment.NAME} [{profile}] -> {store.path}: {len(grid)} runs in "
              f"{len(programs)} programs; executor {executor}, {workers} workers"
              + (f", devices {','.join(devices)}" if devices else "")
              + (f"; per job {requests}" if executor == "submitit" else ""))
        for i, configs in enumerate(programs, 1):
            done = sum(store.done(c) for c in configs)
            print(f"  program {i} {executors.program_id(configs)}: {len(configs)} runs, "
                  f"{done} done")
        return 0
    df = run(experiment, grid, store=store, executor=executor, workers=workers, devices=devices,
             retries=args.retries, cluster=args.cluster, scheduler=args.scheduler,
             requests=requests if executor == "submitit" else None)
    final = df["status"].isin(("ok", "diverged", "collapsed")).sum() if len(df) else 0
    print(f"{experiment.NAME} [{profile}]: {final} of {len(grid)} runs final in {store.path}")
    return 0 if final == len(grid) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
