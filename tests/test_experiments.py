"""Experiment grids: validated before compute, grouped deterministically, measured end to end."""

import jax
import numpy as np
import pytest

from igrlib.io import data
from igrlib import sweep
from igrlib.config import ConfigError
from igrlib.experiments import common, mnist_mlp
from igrlib.measurement.measure import MeasureConfig, measure
from igrlib.io.results import Store
from igrlib.training.train import TrainConfig, split, split_eval_fn, train


def test_profiles_give_valid_grids_and_paper_is_the_papers_grid():
    paper = mnist_mlp.grid("paper")
    widths = {c["train"]["width"] for c in paper}
    lrs = {c["train"]["learning_rate"] for c in paper}
    assert widths == {50, 100, 200, 400, 800, 1600}
    assert lrs == {0.5, 0.1, 0.05, 0.01, 0.005, 0.001, 0.0005}
    assert all(c["train"]["batch_size"] == 512 and c["train"]["n_train"] is None for c in paper)
    assert all(c["train"]["thresholds"][0] == 1.0 for c in paper)
    assert len(mnist_mlp.grid("smoke")) < len(mnist_mlp.grid("cpu")) < len(paper)


@pytest.mark.parametrize("kwargs, match", [
    (dict(profile="huge"), "unknown profile"),
    (dict(profile="smoke", learning_rate=[0.1, -1.0]), "learning_rate"),
    (dict(profile="smoke", width=[0]), "width"),
    (dict(profile="smoke", colour="red"), "unknown mnist_mlp override"),
])
def test_bad_grid_values_fail_before_compute(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        mnist_mlp.grid(**kwargs)


def test_plan_is_deterministic_and_groups_share_a_program():
    grid = mnist_mlp.grid("cpu")
    groups = sweep.plan(mnist_mlp, grid)
    assert groups == sweep.plan(mnist_mlp, grid)
    assert sum(len(g) for g in groups) == len(grid)
    for group in groups:
        assert len({common.group_key(c) for c in group}) == 1
        assert len(group) <= mnist_mlp.group_size(group[0])


def test_measure_reports_consistent_quantities():
    ds = data.load("mnist", n_train=512, n_test=256)
    cfg = TrainConfig(width=16, depth=2, epochs=2, batch_size=128, n_train=512, n_test=256)
    result = train(cfg, ds, progress=False)
    mc = MeasureConfig(curvature_examples=256, curvature_batch=128, lanczos_iters=8, trace_samples=4,
                       slope_directions=3, noise_draws=2, sigmas=(0.0, 0.1), slice_points_1d=3,
                       slice_points_2d=3)
    metrics, extra = measure(cfg.build_model(), result.params, result.state, ds, mc, jax.random.key(0))
    assert metrics["num_params"] == result.num_params
    assert metrics["r_ig"] == pytest.approx(metrics["grad_norm"] ** 2 / metrics["num_params"], rel=1e-5)
    assert metrics["lambda_min"] <= metrics["lambda_max"]
    assert metrics["lambda_max"] > 0
    # the training loss over the split matches the last evaluation of the same parameters
    assert metrics["train_loss_full"] == pytest.approx(result.history["train_loss"][-1], rel=1e-4)
    rob = extra["robustness"]
    clean = [m for s, name, m in zip(rob["sigma"], rob["metric"], rob["mean"]) if s == 0 and name == "test_acc"]
    assert clean == [pytest.approx(result.history["test_acc"][-1], abs=1e-6)]
    # the 1-D slice passes through the loss over the curvature examples at α = 0
    s1 = extra["slice_1d"]
    assert np.isclose(s1["alpha"][1], 0.0)
    evaluate = split_eval_fn(cfg.build_model())
    subset_loss, _ = evaluate(result.params, result.state, split(ds.x_train[:256], ds.y_train[:256]))
    assert s1["loss"][1] == pytest.approx(float(subset_loss), rel=1e-5)


def test_smoke_sweep_records_every_run(tmp_path):
    grid = mnist_mlp.grid("smoke", width=[16], seed=[0])
    frame = sweep.run(mnist_mlp, grid, store=Store(mnist_mlp.NAME, "smoke", tmp_path))
    assert len(frame) == len(grid)
    assert set(frame["status"]) <= {"ok", "diverged", "collapsed"}
    table = mnist_mlp.findings(frame, grid[0]["train"]["thresholds"][1])
    assert {"claim", "statistic", "value", "verdict"} <= set(table.columns)
