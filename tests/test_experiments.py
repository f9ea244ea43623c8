"""Experiment grids: validated before compute, grouped deterministically, measured end to end."""

import jax
import numpy as np
import pandas as pd
import pytest

from igrlib.io import data
from igrlib import executors, sweep
from igrlib.config import ConfigError
from igrlib.experiments import common, mnist_mlp
from igrlib.measurement.measure import MeasureConfig, measure
from igrlib.io.results import Store
from igrlib.maths.objectives import split, split_eval_fn
from igrlib.training.config import TrainConfig
from igrlib.training.program import train


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
    # a program holds every run of its key; the worker splits it by the group size of its device
    assert len({common.group_key(g[0]) for g in groups}) == len(groups)
    for group in groups:
        assert all(len(part) <= mnist_mlp.group_size(group[0]) for part in executors.split(mnist_mlp, group))


def test_measure_reports_consistent_quantities():
    ds = data.load("mnist", n_train=512, n_test=256)
    cfg = TrainConfig(width=16, depth=2, epochs=2, batch_size=128, n_train=512, n_test=256, selection="test")
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


# ---------------------------------------------------------------------------------------------
# Analysis on synthetic records (no training): each function follows the data it is given


def _fake_mnist_runs() -> pd.DataFrame:
    """Records as the store gives them: R_IG and the slope fall with h, accuracy rises, ‖∇E‖
    RISES (so a slope row reading it would fail), h·λ_max = 1.2 everywhere, and the accuracy lost
    to noise grows with h although the noisy accuracy itself rises; seed 2 diverges at h = 0.5."""
    rng = np.random.default_rng(0)
    rows = []
    for width, m in ((50, 1000), (100, 3000)):
        for seed in range(3):
            for i, h in enumerate((0.01, 0.05, 0.1, 0.5)):
                ok = not (seed == 2 and h == 0.5)
                clean = 0.90 + 0.01 * i + 0.001 * seed
                rows.append(dict(
                    id=f"{width}-{seed}-{h}", status="ok" if ok else "diverged", width=width,
                    learning_rate=h, seed=seed, mu=0.0, num_params=m, lambda_=h * m / 4, n_test=2000,
                    reached_1=ok, test_acc=clean, train_loss_full=0.01 / (1 + i),
                    r_ig=1e-6 / (1 + i) * (1 + 0.01 * rng.standard_normal()),
                    mean_abs_slope=1e-3 / (1 + i), grad_norm=0.1 * (1 + i),
                    lambda_max=1.2 / h, hessian_trace=10 / h,
                    history={}, extra={"robustness": dict(
                        sigma=[0.0, 0.1], metric=["test_acc", "test_acc"],
                        mean=[clean, clean - 0.001 * (1 + i)])}))
    return pd.DataFrame(rows).rename(columns={"lambda_": "lambda"})


def test_mnist_findings_follow_the_data_and_lead_with_within_width_rows():
    table = mnist_mlp.findings(_fake_mnist_runs(), 1.0).set_index("claim")
    assert list(table.index[:5]) == [c for c in table.index if "within width 50" in c]
    for claim in ("2.1 within width 50: R_IG falls with h", "2.3 within width 100: test accuracy rises with h",
                  "2.2 within width 100: slope falls with h", "2.2 flatter: slope falls with h",
                  "2.1 R_IG falls as λ grows"):
        assert table.loc[claim, "verdict"] == "reproduced", claim
    # noise costs MORE accuracy at larger h, though the raw noisy accuracy rises: the drop decides
    assert table.loc["2.4 within width 50: noise costs less accuracy with h", "verdict"] == "not reproduced"
    assert table.loc["2.4 noise costs less accuracy with h (σ=0.1, relative)", "verdict"] == "not reproduced"
    # the paired effect is in test images, 2000 × (0.92 − 0.90), between h = 0.01 and the largest
    # rate every seed kept (0.1: h = 0.5 lost seed 2)
    assert table.loc["2.3 within width 50: test accuracy rises with h", "effect"] == \
        "+40 [+40, +40] test images (0.01→0.1, 3 seeds)"
    assert "2.1 at matched loss" not in table.index and table["p_holm"].ge(table["p"]).all()


def test_mnist_within_width_findings_are_the_within_width_rows_alone():
    runs = _fake_mnist_runs()
    alone = mnist_mlp.within_width_findings(runs[runs["width"] == 100], 1.0)
    full = mnist_mlp.findings(runs, 1.0).set_index("claim")
    assert list(alone["claim"]) == [c for c in full.index if "within width 100" in c]
    for row in alone.itertuples():  # same statistics; Holm runs over the smaller family
        assert (row.value, row.effect, row.verdict) == tuple(full.loc[row.claim, ["value", "effect", "verdict"]])
    assert (alone["p_holm"].to_numpy() <= full.loc[alone["claim"], "p_holm"].to_numpy()).all()


def test_mnist_survivorship_stability_and_robustness_drop():
    runs = _fake_mnist_runs()
    assert mnist_mlp.unsurvived_rates(mnist_mlp.tidy(runs)) == [0.5]
    both = mnist_mlp.survivorship(runs, 1.0)
    assert "verdict (without h ∈ {0.5})" in both and "n=22 runs" in both["value"].iloc[-1]
    assert "n=18 runs" in both["value (without h ∈ {0.5})"].iloc[-1]  # the 4 survivors at h = 0.5 out
    np.testing.assert_allclose(mnist_mlp.stability_table(runs)["mean"], 1.2)
    rob = mnist_mlp.robustness_at(mnist_mlp.tidy(runs))
    index = rob["learning_rate"].map({0.01: 0, 0.05: 1, 0.1: 2, 0.5: 3})
    np.testing.assert_allclose(rob["robustness_drop"], 0.001 * (1 + index), rtol=1e-9)
    assert (rob["sigma"] == 0.1).all()


def _history_runs(effect_of_h: bool) -> pd.DataFrame:
    """Trajectories with R_IG = c(h)·E^2.5 along each run; c(h) = 0.1/h when ``effect_of_h``
    (the learning rate lowers R_IG at equal loss), else 1 (larger h only reaches lower E). The
    loss falls by the same factor per probe in every run, so the matched points share E."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(3):
        for h in (0.01, 0.05, 0.1, 0.5):
            loss = 10.0 ** (-np.arange(30 + int(10 * h)) / 10)
            c = 0.1 / h if effect_of_h else 1.0
            r_ig = c * loss ** 2.5 * np.exp(0.01 * rng.standard_normal(len(loss)))
            history = dict(probe_step=list(range(len(loss))), probe_train_loss=list(loss), probe_r_ig=list(r_ig),
                           probe_lambda_max=list(1.0 / np.sqrt(loss)), probe_hessian_trace=list(5.0 / loss))
            rows.append(dict(id=f"{seed}-{h}", width=50, learning_rate=h, seed=seed, history=history))
    return pd.DataFrame(rows)


def test_matched_loss_control_on_synthetic_histories():
    with_effect, without = _history_runs(True), _history_runs(False)
    fits = mnist_mlp.loss_exponents(with_effect)
    np.testing.assert_allclose(fits["k_mean"], 2.5, atol=0.01)
    assert (fits["partial_rho_h_r_ig"] < -0.9).all()
    assert (mnist_mlp.loss_exponents(without)["partial_rho_h_r_ig"].abs() < 0.2).all()
    matched = mnist_mlp.matched_loss(with_effect, targets=(0.1, 0.01))
    assert set(matched["target"]) == {0.1, 0.01} and (matched["train_loss"] <= matched["target"]).all()
    table = mnist_mlp.matched_loss_findings(with_effect, targets=(0.1,)).set_index("claim")
    assert table.loc["2.1 width 50, E* = 0.1: R_IG falls with h", "verdict"] == "reproduced"
    null = mnist_mlp.matched_loss_findings(without, targets=(0.1,)).set_index("claim")
    assert null.loc["2.1 width 50, E* = 0.1: R_IG falls with h", "verdict"] != "reproduced"
    skipped = mnist_mlp.matched_loss_findings(_fake_mnist_runs())
    assert skipped["value"].iloc[0].startswith("skipped") and len(skipped) == 1


def test_describe_states_everything_that_shapes_a_result():
    text = mnist_mlp.describe(mnist_mlp.grid("cpu"))
    for piece in ("10,000 training", "evaluated every 2 epochs", "stops 10 evaluations", "thresholds 100%, 99%",
                  "checkpoint: the evaluation of maximal", "seeds [0, 1, 2, 3, 4]", "curvature on 2,048"):
        assert piece in text, piece
    spec = mnist_mlp.within_width_grid()
    assert {c["train"]["n_train"] for c in spec} == {None} and len({c["train"]["seed"] for c in spec}) >= 3
    assert len({c["train"]["learning_rate"] for c in spec}) == 3 and len({c["train"]["width"] for c in spec}) == 1
    from igrlib.io.results import run_id
    run = mnist_mlp.WITHIN_WIDTH_RUN  # the same configs, as a sweep experiment with its own store
    assert [run_id(c) for c in run.grid("cpu")] == [run_id(c) for c in spec]
    assert run.NAME != mnist_mlp.NAME and len(run.grid("cpu", seed=[7])) == 3
    with pytest.raises(ConfigError, match="cpu profile only"):
        run.grid("smoke")


def test_verdicts_on_two_disjoint_seed_sets():
    a = mnist_mlp.findings(_fake_mnist_runs(), 1.0)
    runs_b = _fake_mnist_runs().assign(seed=lambda f: f["seed"] + 5)
    same = mnist_mlp.with_seed_sets(a, mnist_mlp.findings(runs_b, 1.0)).set_index("claim")
    row = same.loc["2.3 within width 50: test accuracy rises with h"]
    assert (row["verdict (A)"], row["verdict (B)"], row["stability"], row["verdict"]) == \
        ("reproduced", "reproduced", "holds on both seed sets", "reproduced")
    assert list(same.index) == list(a["claim"]) and row["effect"] == a.set_index("claim").loc[row.name, "effect"]
    # on set B accuracy FALLS with h: the row that set A reproduces is unstable, the others hold
    flipped = runs_b.assign(test_acc=lambda f: 1.82 - f["test_acc"])
    both = mnist_mlp.with_seed_sets(a, mnist_mlp.findings(flipped, 1.0)).set_index("claim")
    row = both.loc["2.3 within width 50: test accuracy rises with h"]
    assert (row["verdict (A)"], row["verdict (B)"], row["verdict"]) == ("reproduced", "not reproduced", "unstable")
    assert both.loc["2.1 within width 50: R_IG falls with h", "verdict"] == "reproduced"
    assert mnist_mlp.with_seed_sets(a, None) is a


@pytest.mark.parametrize("seeds_b, match", [([2, 5], "disjoint.*both hold \\[2\\]"), (3, "not a count"),
                                            ([5, -1], "integers >= 0"), ([True], "integers >= 0")])
def test_second_seed_set_is_disjoint_and_a_list(seeds_b, match):
    with pytest.raises(ConfigError, match=match):
        mnist_mlp.seed_set_b("cpu", seeds_b, [0, 1, 2])


def test_profiles_name_a_disjoint_second_seed_set_at_cpu_only():
    from igrlib.experiments import egr_mlp
    for module in (mnist_mlp, egr_mlp):
        assert module.seed_set_b("cpu", None, range(5)) == (5, 6, 7, 8, 9)
        assert module.seed_set_b("smoke", None, [0, 1]) == () == module.seed_set_b("paper", None, [0, 1, 2])
        assert module.seed_set_b("smoke", [7, 8], [0, 1]) == (7, 8)
    assert "no second seed set" in mnist_mlp.seed_sets_note([0, 1], ())
    assert "B = [5, 6]" in mnist_mlp.seed_sets_note([0, 1], (5, 6))


def test_history_frame_keeps_evaluations_and_leaves_probes_to_trajectories():
    """Probes run at their own cadence (shorter lists than the evaluations): a run recorded with
    them still gives one row per evaluation, and its probes one row per probe and quantity."""
    from igrlib.experiments import common
    history = {"epoch": [1, 2, 3, 4], "step": [10, 20, 30, 40], "test_acc": [0.1, 0.2, 0.3, 0.4],
               "probe_step": [20, 40], "probe_epoch": [2, 4], "probe_r_ig": [1e-3, 1e-4]}
    runs = pd.DataFrame([{"id": "a", "width": 50, "learning_rate": 0.1, "seed": 0, "status": "ok",
                          "history": history}])
    frame = common.history_frame(runs, ("width", "seed"))
    assert list(frame["epoch"]) == [1, 2, 3, 4] and not any(c.startswith("probe_") for c in frame)
    assert (frame["width"] == 50).all()
    assert list(common.trajectories(runs)["value"]) == [1e-3, 1e-4]
