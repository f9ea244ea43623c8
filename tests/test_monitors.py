"""Run status: the rules on hand-made evaluations, and each status on a real run.

NaN/inf divergence and collapse on real runs are in test_program.py (a learning rate of 50, and
heavy-ball SGD that learns and then dies); the finite blow-up and the dead run are here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from igrlib.config import ConfigError
from igrlib.io import data
from igrlib.training import program
from igrlib.training.config import TrainConfig
from igrlib.training.monitors import Monitor, MonitorConfig

CHANCE_LOSS = math.log(10)


def feed(monitor: Monitor, evaluations):
    """Feed (loss, acc) pairs at steps 0, 10, 20, …; return the first verdict and its index."""
    for k, (loss, acc) in enumerate(evaluations):
        verdict = monitor.update(10 * k, loss, acc)
        if verdict is not None:
            return verdict, k
    return None, None


@pytest.mark.parametrize("acc,loss,peak,expected", [
    (0.10, CHANCE_LOSS, 0.90, True),          # fell to chance after learning: collapsed
    (0.20, CHANCE_LOSS + 0.2, 0.50, True),    # on the boundaries of the rule
    (0.10, CHANCE_LOSS, 0.49, False),         # never learned: not a collapse
    (0.21, CHANCE_LOSS, 0.90, False),         # above 2/C
    (0.10, CHANCE_LOSS + 0.3, 0.90, False),   # loss far from ln C: a different failure
    (0.10, CHANCE_LOSS - 0.3, 0.90, False),
])
def test_collapse_rule(acc, loss, peak, expected):
    verdict, _ = feed(Monitor(MonitorConfig(), 10), [(2.0, 0.1), (0.5, peak), (loss, acc)])
    assert (verdict is not None and verdict.status == "collapsed") is expected


def test_collapse_rule_scales_with_the_number_of_classes():
    chance = math.log(100)
    assert feed(Monitor(MonitorConfig(), 100), [(4.0, 0.01), (1.0, 0.6), (chance, 0.02)])[0].status == "collapsed"
    assert feed(Monitor(MonitorConfig(), 100), [(4.0, 0.01), (1.0, 0.6), (chance, 0.05)])[0] is None


def test_blow_up_needs_consecutive_evaluations_above_the_factor():
    cfg = MonitorConfig(blowup_factor=10, blowup_evals=3)
    # above 10x twice, back below, then three times: diverged at the third in a row
    verdict, k = feed(Monitor(cfg, 10), [(2.0, 0.5), (25, .1), (30, .1), (5, .1), (21, .1), (22, .1), (23, .1)])
    assert (verdict.status, verdict.step, k) == ("diverged", 60, 6)
    assert "10x" in verdict.reason


def test_nonfinite_is_diverged_at_the_first_bad_step():
    monitor = Monitor(MonitorConfig(), 10)
    assert monitor.update(0, 2.3, 0.1) is None
    verdict = monitor.update(10, float("nan"), 0.1, nonfinite_step=7)
    assert (verdict.status, verdict.step) == ("diverged", 7)


def test_dead_is_decided_after_the_stated_number_of_evaluations():
    cfg = MonitorConfig(dead_evals=4, dead_accuracy=1.5)
    verdict, k = feed(Monitor(cfg, 10), [(2.3, 0.11)] * 10)
    assert (verdict.status, k) == ("dead", 4)
    # leaving chance once, at any time in the window, is enough to be alive
    assert feed(Monitor(cfg, 10), [(2.3, 0.11), (2.2, 0.16)] + [(2.3, 0.11)] * 8)[0] is None


@pytest.mark.parametrize("bad", [{"blowup_factor": 1.0}, {"blowup_evals": 0}, {"dead_accuracy": 0.5},
                                 {"collapse_peak": 1.5}, {"dead_evals": "3"}])
def test_bad_monitor_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        MonitorConfig(**bad)


@pytest.fixture(scope="module")
def small():
    return data.load("mnist", n_train=1000, n_test=500)


@pytest.mark.slow
def test_a_real_finite_blow_up_is_recorded_diverged(small):
    """Full-batch GD at h = 5 on a tanh MLP: the loss climbs to 50x its initial value and stays
    there, finite (no NaN ever): the monitor calls it diverged, with its step, and stops it."""
    cfg = TrainConfig(width=64, depth=2, activation="tanh", method="gd", batch_size=None, learning_rate=5.0,
                      epochs=60, eval_every=3, selection="test", thresholds=(1.0,))
    run = program.train(cfg, small, progress=False)
    h = run.history
    assert run.status == "diverged" and "above 10x" in run.status_reason
    assert np.isfinite(h["train_loss"]).all()
    assert all(loss > 10 * h["train_loss"][0] for loss in h["train_loss"][-3:])
    assert run.status_step == h["step"][-1] and h["epoch"][-1] < cfg.epochs  # stopped early


@pytest.mark.slow
def test_a_real_run_that_never_leaves_chance_is_recorded_dead(small):
    """SGD at h = 1e-4 for a 5-layer ReLU MLP learns nothing in 4 epochs: training accuracy
    stays below 1.5x chance, so after ``dead_evals = 4`` evaluations the run is dead."""
    cfg = TrainConfig(width=32, depth=5, learning_rate=1e-4, batch_size=100, epochs=50, eval_every=1,
                      selection="test", thresholds=(1.0,), monitor={"dead_evals": 4})
    run = program.train(cfg, small, progress=False)
    assert run.status == "dead", (run.status, run.history["train_acc"])
    assert max(run.history["train_acc"]) <= 0.15
    assert run.history["epoch"][-1] == 4 and run.status_step == run.history["step"][-1]
