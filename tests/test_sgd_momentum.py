"""The SGD/momentum experiment: its grid and arms, and reading runs at matched training loss."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from igrlib.config import ConfigError
from igrlib.experiments import sgd_momentum


def test_cpu_grid_has_every_arm_once():
    grid = sgd_momentum.grid("cpu")
    spec = sgd_momentum.PROFILES["cpu"]
    trains = [c["train"] for c in grid]
    keys = [(t["method"], t["batch_size"], t["learning_rate"], t["n_train"], t["seed"]) for t in trains]
    assert len(keys) == len(set(keys))  # the run at (anchor, h) is shared by three arms, kept once
    seeds = len(spec["seed"])
    momentum = [t for t in trains if t["method"] == "momentum"]
    assert sorted({t["hparams"]["beta"] for t in momentum}) == [b for b in spec["betas"] if b > 0]
    for t in momentum:  # fixed effective rate h/(1 − β)
        assert t["learning_rate"] / (1 - t["hparams"]["beta"]) == pytest.approx(spec["h"])
    gd = [t for t in trains if t["method"] == "gd" and t["learning_rate"] == spec["gd_h"]]
    assert len(gd) == seeds and all(t["batch_size"] is None and t["n_train"] == spec["gd_n_train"] for t in gd)
    own = [t for t in trains if t["method"] == "gd" and t["learning_rate"] != spec["gd_h"]]
    assert sorted({t["learning_rate"] for t in own}) == sorted(h for h in spec["penalty_h"] if h != spec["gd_h"])
    ratio = {t["batch_size"]: t["learning_rate"] for t in trains
             if t["method"] == "sgd" and t["n_train"] != spec["gd_n_train"]
             and math.isclose(t["learning_rate"] / t["batch_size"], spec["h"] / spec["ratio_anchor"])}
    assert sorted(ratio) == sorted(spec["batch_sizes"])
    penalty = [t for t in trains if t["method"] == "var_penalty"]
    assert len(penalty) == seeds * len(spec["penalty_h"])
    for t in penalty:  # full batch on the GD arm's subset, its evaluation schedule, λ = h = gd_h
        assert t["batch_size"] is None and t["n_train"] == spec["gd_n_train"]
        assert t["eval_every"] == gd[0]["eval_every"] and t["probe_every"] == gd[0]["probe_every"]
        assert t["hparams"] == {"lam": spec["gd_h"], "micro_batch": spec["gd_batch_sizes"][0]}
        assert t["epochs"] * t["learning_rate"] == pytest.approx(
            sgd_momentum.PENALTY_TIME * gd[0]["epochs"] * gd[0]["learning_rate"])
    for t in own:  # the small rate's own GD baseline runs as long as its penalty runs
        assert any(p["learning_rate"] == t["learning_rate"] and p["epochs"] == t["epochs"] for p in penalty)


@pytest.mark.parametrize("override", [dict(betas=(0.0, 1.0)), dict(betas=("0.9",)), dict(h=-0.1),
                                      dict(nesterov="yes"), dict(seed=[]), dict(colour=3),
                                      dict(penalty_h=0.1), dict(penalty_lam=0.0),
                                      dict(gd_epochs=10, penalty_h=(0.2,), penalty_micro_batch=33),
                                      dict(gd_epochs=10, penalty_h=(0.2,), penalty_micro_batch=128)])
def test_bad_grid_values_raise_before_compute(override):
    with pytest.raises(ConfigError):
        sgd_momentum.grid("smoke", **override)


def _run(run_id, loss, acc, probe_loss, probe_r_ig, **config):
    history = {"epoch": list(range(len(loss))), "train_loss": loss, "test_acc": acc, "val_acc": acc,
               "probe_train_loss": probe_loss, "probe_r_ig": probe_r_ig,
               "probe_grad_variance": [2 * r for r in probe_r_ig], "probe_lambda_max": [10.0] * len(probe_r_ig)}
    return dict(id=run_id, history=history, status="ok", **config)


def test_matched_loss_interpolates_in_log_loss_exactly():
    # E falls 1 → 0.5 → 0.1; E* = 0.25 lies at w = log(0.5/0.25)/log(0.5/0.1) from the second point
    a = _run("a", [1.0, 0.5, 0.1], [0.2, 0.6, 0.9], [1.0, 0.1], [1.0, 1e-2])
    b = _run("b", [1.0, 0.25, 0.2], [0.1, 0.7, 0.8], [1.0, 0.25], [4.0, 4e-2])
    frame = pd.DataFrame([a, b])
    assert sgd_momentum.matched_level(frame) == pytest.approx(0.25)
    out = sgd_momentum.at_matched_loss(frame, 0.25)
    w = math.log(0.5 / 0.25) / math.log(0.5 / 0.1)
    assert out["epoch_at_E"].tolist() == pytest.approx([1 + w, 1.0], rel=1e-14)
    assert out["test_acc_at_E"].tolist() == pytest.approx([0.6 + w * 0.3, 0.7], rel=1e-14)
    # probes: log-linear between (E = 1, R = 1) and (E = 0.1, R = 0.01), i.e. R = E² there
    w_probe = math.log(1 / 0.25) / math.log(1 / 0.1)
    assert out["r_ig_at_E"].iloc[0] == pytest.approx(0.25**2, rel=1e-12) and w_probe > 0
    assert out["grad_variance_at_E"].iloc[0] == pytest.approx(2 * 0.25**2, rel=1e-12)
    assert out["r_ig_at_E"].iloc[1] == pytest.approx(4e-2)  # exactly at a probe
    # a level a run never reaches gives NaN, not an extrapolation
    assert np.isnan(sgd_momentum.at_matched_loss(frame, 0.15)["test_acc_at_E"].iloc[1])


def test_arms_and_findings_on_synthetic_runs():
    """Runs built so that test accuracy at E* falls with B at fixed h in every seed: the row says
    reproduced; the fixed-h/B arm has equal accuracies: the equivalence row says reproduced."""
    spec = sgd_momentum.PROFILES["smoke"]
    h, anchor = 0.1, 64
    rows = []
    for seed in range(4):
        for batch, lr, acc in ((16, h, 0.9), (64, h, 0.8), (256, h, 0.7), (16, h * 16 / anchor, 0.8)):
            rows.append(_run(f"{seed}-{batch}-{lr}", [1.0, 0.1], [0.1, acc + 0.001 * seed], [1.0, 0.1],
                             [1.0, 0.1 * batch], method="sgd", batch_size=batch, learning_rate=lr, seed=seed,
                             n_train=1024, n_test=1000, test_acc=acc, r_ig=1.0))
    overrides = dict(h=h, ratio_anchor=anchor, gd_n_train=spec["gd_n_train"])
    groups = sgd_momentum.arms(pd.DataFrame(rows), "smoke", **overrides)
    assert sorted(groups["batch"]["batch"].unique()) == [16, 64, 256]
    assert sorted(groups["ratio"]["batch"].unique()) == [16, 64]
    table = sgd_momentum.findings(groups).set_index("claim")
    assert table.loc["fixed h: test accuracy falls as B grows (at E*)", "verdict"] == "reproduced"
    assert table.loc["fixed h: R_IG at E* rises as B grows (weaker implicit regularizer)", "verdict"] == "reproduced"
    assert table.loc["fixed h/B: same test accuracy at B = 16 and B = 64 (at E*)", "verdict"] == "reproduced"


def test_gd_epochs_zero_drops_the_gd_arm():
    smoke = sgd_momentum.grid("smoke")
    assert {c["train"]["method"] for c in smoke} == {"sgd"}
    assert "No GD arm" in sgd_momentum.describe(smoke, "smoke")
    with pytest.raises(ConfigError, match="gd_epochs"):
        sgd_momentum.grid("smoke", gd_epochs=-1)


def test_penalty_rows_and_gap_closed_on_synthetic_runs():
    """GD, SGD and GD + penalty on 5 seeds at one matched loss: test accuracy at E* is 0.80 + δ
    (GD), 0.84 + δ (SGD), 0.83 + δ (penalty), so the penalty closes 30 of the 40 test images of
    the gap (1,000 test images) in every seed; the penalty runs are read at the GD arm's level."""
    spec = sgd_momentum.PROFILES["smoke"]
    n, rows = spec["gd_n_train"], []
    for seed in range(5):  # 5 seeds: the smallest exact p, 1/32, can reach 0.05
        d = 0.001 * seed
        for method, batch, acc, lam_max, extra in (("gd", None, 0.80, 3.0, {}), ("sgd", 32, 0.84, 1.0, {}),
                                                   ("var_penalty", None, 0.83, 2.0, {"lam": 0.2, "micro_batch": 32})):
            run = _run(f"{seed}-{method}", [1.0, 0.1], [0.1, acc + d], [1.0, 0.1], [1.0, 0.1],
                       method=method, batch_size=batch, learning_rate=spec["gd_h"], seed=seed, n_train=n,
                       n_test=1000, test_acc=acc + d, r_ig=1.0, **extra)
            run["history"]["probe_lambda_max"] = [lam_max, lam_max]
            rows.append(run)
    runs = pd.DataFrame(rows)
    groups = sgd_momentum.arms(runs, "smoke")
    assert set(groups["gd"]["method"]) == {"gd", "sgd"} and set(groups["penalty"]["method"]) == {"gd", "sgd", "var_penalty"}
    level = groups["gd"]["E_match"].iloc[0]
    assert (groups["penalty"]["E_match"] == level).all()
    gap = sgd_momentum.gap_closed(groups["penalty"])
    per_seed = gap[gap["seed"] != "mean"]
    # E* sits a factor 1 + 1e-9 above the last loss: the reading is within 1e-9 of the last point
    np.testing.assert_allclose(per_seed["gap"], 40.0, rtol=1e-6)
    np.testing.assert_allclose(per_seed["closed"], 30.0, rtol=1e-6)
    assert gap.iloc[-1]["fraction"] == pytest.approx(0.75, rel=1e-6)
    table = sgd_momentum.findings(groups).set_index("claim")
    variant = "GD h = 0.2 + λV (λ = 0.2, b = 32)"
    higher = table.loc[f"explicit variance penalty: {variant} reaches higher test accuracy than GD h = 0.2 (at E*)"]
    assert higher["verdict"] == "reproduced" and "+30" in higher["effect"]
    assert table.loc[f"explicit variance penalty: {variant} reaches lower λ_max than GD h = 0.2, as SGD does (at E*)",
                     "verdict"] == "reproduced"
    # 10 images below SGD in every seed: outside the ±5-image margin, so not the same accuracy
    assert table.loc[f"explicit variance penalty: {variant} recovers the test accuracy of SGD B = 32, h = 0.2 (at E*)",
                     "verdict"] == "not reproduced"


def test_cost_grid_times_gd_and_the_penalty_on_one_batch_and_sgd_on_its_own():
    assert sgd_momentum.cost_grid("smoke") == []
    full, sgd = sgd_momentum.cost_grid("cpu")
    spec = sgd_momentum.PROFILES["cpu"]
    assert full["batch"] == spec["gd_n_train"] and set(full["rules"]) == {"GD", "GD + λV, b = 32"}
    assert sgd["batch"] == 32 and set(sgd["rules"]) == {"SGD"}
    costs = pd.DataFrame([{"batch": 1000, "seconds_GD": 0.002, "seconds_GD + λV, b = 32": 0.01},
                          {"batch": 32, "seconds_SGD": 0.0005}])
    table = sgd_momentum.cost_table(costs, 1000).set_index("rule")
    assert table.loc["GD + λV, b = 32", "ratio_to_gd_step"] == pytest.approx(5.0)
    assert table.loc["SGD", "ms_per_epoch"] == pytest.approx(0.5 * 31)


def test_a_penalty_at_a_smaller_rate_is_paired_with_gd_at_its_own_rate():
    """With GD at the penalty's rate in the arm, the penalty rows compare against it, while the gap
    table keeps GD at SGD's rate (the SGD − GD gap is the one SGD's arm defines)."""
    spec = sgd_momentum.PROFILES["smoke"]
    h, small, rows = spec["gd_h"], spec["gd_h"] / 2, []
    for seed in range(5):
        for method, rate, acc, extra in (("gd", h, 0.80, {}), ("sgd", h, 0.84, {}), ("gd", small, 0.78, {}),
                                         ("var_penalty", small, 0.81, {"lam": h, "micro_batch": 32})):
            rows.append(_run(f"{seed}-{method}-{rate}", [1.0, 0.1], [0.1, acc + 0.001 * seed], [1.0, 0.1],
                             [1.0, 0.1], method=method, batch_size=32 if method == "sgd" else None,
                             learning_rate=rate, seed=seed, n_train=spec["gd_n_train"], n_test=1000,
                             test_acc=acc, r_ig=1.0, **extra))
    groups = sgd_momentum.arms(pd.DataFrame(rows), "smoke")
    assert set(groups["gd"]["learning_rate"]) == {h}  # GD at the small rate is not in the GD arm
    table = sgd_momentum.findings(groups).set_index("claim")
    variant = f"GD h = {small:g} + λV (λ = {h:g}, b = 32)"
    row = table.loc[f"explicit variance penalty: {variant} reaches higher test accuracy than GD h = {small:g} (at E*)"]
    assert "+30" in row["effect"]  # 0.81 − 0.78 of 1,000 test images
    gap = sgd_momentum.gap_closed(groups["penalty"])
    assert gap.iloc[-1]["closed"] == pytest.approx(10.0, rel=1e-6)  # 0.81 − 0.80: against GD at h
