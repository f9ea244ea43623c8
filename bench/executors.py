"""Section: a sweep of small programs in this process vs a pool of two worker processes.

Each program is a real :func:`igrlib.training.program.train_group` call (``runs`` vmapped seeds of
a width-``width`` 2-hidden-layer MLP on an MNIST subset for ``epochs`` epochs), run through
:func:`igrlib.sweep.run` into a fresh results store, records and leases included. Timed
interleaved, one call sweeping the whole grid of ``programs`` programs:

* ``inline``: this process, one program after another;
* ``process_cold``: ``executor="process", workers=2``: a new spawn pool per sweep, so each
  worker's start-up (imports, JAX, compiling the program) is paid every time, as by a user;
* ``process_warm``: the same pool kept across sweeps (a :class:`ProcessPoolExecutor` passed as
  the executor): the steady state of a long sweep.

Reported per program length (``epochs``): seconds per sweep, the ratios ``t_case / t_inline``
(below 1: the pool wins), and the *crossover*: the program length (inline seconds per program)
above which the cold pool beats this process, from straight-line fits ``t = a + b·epochs`` of
both. A spawned worker imports the driver's ``__main__`` module again (here ``bench.run``, with
PyTorch), which the cold case pays as a user's script would. The dispatch overhead per job is the time per program of a sweep of no-op programs
(nothing trained; store, leases and the job's round trip only), inline and on the warm pool.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from bench import timing
from igrlib import sweep
from igrlib.io import data as data_mod
from igrlib.io.results import Store
from igrlib.training.config import TrainConfig
from igrlib.training.program import train_group


class Programs:
    """The benchmark's experiment: one program per ``program`` value, its seeds vmapped."""

    NAME = "bench_executors"

    def group_key(self, config: Mapping[str, Any]) -> int:
        return config["program"]

    def group_size(self, config: Mapping[str, Any]) -> int:
        return 64

    def run_group(self, configs: Sequence[Mapping[str, Any]]) -> list[sweep.Outcome]:
        first = configs[0]
        if first["epochs"] == 0:  # a no-op program: the dispatch overhead alone
            return [sweep.Outcome("ok") for _ in configs]
        subset = data_mod.load("mnist", n_train=first["n_train"], n_test=first["n_test"])
        runs = train_group([TrainConfig(width=first["width"], depth=2, batch_size=first["batch_size"],
                                        epochs=first["epochs"], learning_rate=0.1, seed=c["seed"],
                                        thresholds=(0.5,), selection="test", n_train=first["n_train"],
                                        n_test=first["n_test"]) for c in configs],
                           subset, progress=False)
        return [sweep.Outcome(r.status, metrics={"test_acc": r.history["test_acc"][-1]})
                for r in runs]


PROGRAMS = Programs()


def grid(programs: int, runs: int, epochs: int, **train: Any) -> list[dict[str, Any]]:
    return [{"program": p, "seed": s, "epochs": epochs, **train}
            for p in range(programs) for s in range(runs)]


def _sweep(configs: list[dict[str, Any]], executor: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as root:
        df = sweep.run(PROGRAMS, configs, store=Store(PROGRAMS.NAME, "smoke", root=root),
                       verbose=False, executor=executor, workers=2, retries=0)
        if set(df["status"]) != {"ok"}:
            raise RuntimeError(f"benchmark sweep failed: {df['error'].dropna().unique()}")


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y = a + b x``; returns ``(a, b)``."""
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def run(epochs: Sequence[int], programs: int, runs: int, width: int, n_train: int, n_test: int,
        batch_size: int, repeats: int, noop_programs: int) -> dict[str, Any]:
    train = dict(width=width, n_train=n_train, n_test=n_test, batch_size=batch_size)
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    try:
        rows = []
        for e in epochs:
            configs = grid(programs, runs, e, **train)
            cases = [timing.Case(name, lambda ex=ex: _sweep(configs, ex))
                     for name, ex in (("inline", "inline"), ("process_cold", "process"),
                                      ("process_warm", pool))]
            t = timing.interleaved(cases, repeats)
            rows.append({"epochs": e, "seconds": {c.name: t.median(c.name) for c in cases},
                         "inline_s_per_program": t.median("inline") / programs,
                         "over_inline": {c.name: t.ratio(c.name, "inline") for c in cases[1:]},
                         "cases": t.summary()})
        noop = grid(noop_programs, runs, 0, **train)
        cases = [timing.Case("inline", lambda: _sweep(noop, "inline"), noop_programs),
                 timing.Case("process_warm", lambda: _sweep(noop, pool), noop_programs)]
        t = timing.interleaved(cases, repeats)
        dispatch_ms = {c.name: 1e3 * t.median(c.name) for c in cases}
    finally:
        pool.shutdown()
    x = np.asarray(epochs, float)
    a_i, b_i = _fit(x, np.asarray([r["seconds"]["inline"] for r in rows]))
    a_c, b_c = _fit(x, np.asarray([r["seconds"]["process_cold"] for r in rows]))
    # only where both grow with the program's length and this process grows faster
    cross_epochs = (a_c - a_i) / (b_i - b_c) if b_i > b_c > 0 else None
    return {
        "settings": {"epochs": list(epochs), "programs": programs, "runs": runs, "repeats": repeats,
                     "noop_programs": noop_programs, "workers": 2, **train},
        "rows": rows,
        "dispatch_ms_per_job": dispatch_ms,
        "fits_s": {"inline": {"a": a_i, "b_per_epoch": b_i},
                   "process_cold": {"a": a_c, "b_per_epoch": b_c}},
        # program length above which two cold workers beat this process (None: never, here)
        "crossover_epochs": cross_epochs,
        "crossover_program_s": None if cross_epochs is None else (a_i + b_i * cross_epochs) / programs,
        "longest_process_cold_over_inline": rows[-1]["over_inline"]["process_cold"],
    }
