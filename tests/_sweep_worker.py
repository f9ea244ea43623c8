"""A tiny experiment for the sweep tests, and a script that runs its sweep to completion.

Usage: ``python tests/_sweep_worker.py RESULTS_ROOT LOG_FILE``. Every ``run_group`` call appends
the group's learning rate to LOG_FILE (flushed and synced), so a test can tell which programs
a process actually ran.

The experiment: a width-16, 2-hidden-layer MLP on a 1000-image MNIST subset for 2 epochs, three
learning rates × two seeds; one program per learning rate, its two seeds vmapped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from igrlib.io import data
from igrlib import sweep
from igrlib.training import train
from igrlib.io.results import Store

NAME = "tiny"
PROFILE = "smoke"
LOG_ENV = "IGR_TEST_SWEEP_LOG"


def grid() -> list[dict[str, Any]]:
    return [{"learning_rate": lr, "seed": seed} for lr in (0.05, 0.1, 0.2) for seed in (0, 1)]


def group_key(config: Mapping[str, Any]) -> float:
    return config["learning_rate"]


def group_size(config: Mapping[str, Any]) -> int:
    return 2


def run_group(configs: Sequence[Mapping[str, Any]]) -> list[sweep.Outcome]:
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a") as handle:
            handle.write(f"{configs[0]['learning_rate']}\n")
            handle.flush()
            os.fsync(handle.fileno())
    subset = data.load("mnist", n_train=1000, n_test=500)
    runs = train.train_group(
        [train.TrainConfig(width=16, depth=2, batch_size=100, epochs=2, thresholds=(0.5,),
                           learning_rate=c["learning_rate"], seed=c["seed"]) for c in configs],
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


def main(root: str, log: str) -> None:
    os.environ[LOG_ENV] = log
    sweep.run(sys.modules[__name__], grid(), store=Store(NAME, PROFILE, root=root), verbose=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
