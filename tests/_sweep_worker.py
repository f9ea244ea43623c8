"""Experiments for the sweep tests, and a script that runs a sweep to completion.

Usage: ``python tests/_sweep_worker.py RESULTS_ROOT LOG_FILE [tiny|fake [EXECUTOR [WORKERS]]]``.
Every ``run_group`` call appends a line to LOG_FILE (flushed and synced; the file is named by
``$IGR_TEST_SWEEP_LOG``, which worker processes inherit), so a test can tell which groups a
process actually ran.

``tiny`` (this module): a width-16, 2-hidden-layer MLP on a 1000-image MNIST subset for 2 epochs,
three learning rates × two seeds; one program per learning rate, its two seeds vmapped. Logs the
learning rate.

``fake``: :data:`_fake_experiment.FAKE`, no training (cheap to start in a worker process).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from igrlib import sweep
from igrlib.io import data
from igrlib.io.results import Store
from igrlib.training.config import TrainConfig
from igrlib.training.program import train_group
from _fake_experiment import LOG_ENV, log as _log

NAME = "tiny"
PROFILE = "smoke"


def grid() -> list[dict[str, Any]]:
    return [{"learning_rate": lr, "seed": seed} for lr in (0.05, 0.1, 0.2) for seed in (0, 1)]


def group_key(config: Mapping[str, Any]) -> float:
    return config["learning_rate"]


def group_size(config: Mapping[str, Any]) -> int:
    return 2


def run_group(configs: Sequence[Mapping[str, Any]]) -> list[sweep.Outcome]:
    _log(f"{configs[0]['learning_rate']}")
    subset = data.load("mnist", n_train=1000, n_test=500)
    runs = train_group(
        [TrainConfig(width=16, depth=2, batch_size=100, epochs=2, thresholds=(0.5,),
                     selection="test", learning_rate=c["learning_rate"], seed=c["seed"])
         for c in configs],
        subset, progress=False)
    return [
        sweep.Outcome(
            status=r.status, status_step=r.status_step, history=r.history, wall_time_s=r.wall_time_s,
            metrics={"final_test_acc": r.history["test_acc"][-1],
                     "final_train_loss": r.history["train_loss"][-1],
                     "selected_test_acc": r.selections[0.5].metrics["test_acc"]
                     if 0.5 in r.selections else None},
            extra={"num_params": r.num_params})
        for r in runs
    ]




def main(root: str, log: str, which: str = "tiny", executor: str = "inline", workers: str = "1") -> None:
    os.environ[LOG_ENV] = log
    import _fake_experiment
    import _sweep_worker as me  # by its module name: worker processes import it as such

    fake = _fake_experiment.FAKE
    experiment, grid = (me, me.grid()) if which == "tiny" else (fake, fake.grid(sleep=0.5))
    sweep.run(experiment, grid, store=Store(experiment.NAME, PROFILE, root=root), verbose=False,
              executor=executor, workers=int(workers), progress_every=1e9)


if __name__ == "__main__":
    main(*sys.argv[1:])
