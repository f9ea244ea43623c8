"""The equal-compute experiment: its grid (arms, budgets, pairing), the matched-loss interpolation
(exact on power laws, in float64) and the analysis on a synthetic results frame whose effects are
known, so every verdict can be predicted. No training here but a few steps of the smoke MLP (the step
timing); the chapter runs the experiment at smoke."""

import numpy as np
import pandas as pd
import pytest

from igrlib.config import ConfigError
from igrlib.experiments import equal_compute as ec
from igrlib.maths import stats


def _arms(grid):
    frame = pd.DataFrame([{**c["train"], **c["train"]["hparams"]} for c in grid])
    return frame.assign(arm=[ec.arm_of(r, 0.02, 60) for _, r in frame.iterrows()])


def test_cpu_grid_pairs_every_arm_on_the_same_seeds_with_the_stated_budgets():
    frame = _arms(ec.grid("cpu"))
    assert len(frame) == 10 * 5 and frame["arm"].nunique() == 10
    assert all(set(g["seed"]) == {0, 1, 2, 3, 4} for _, g in frame.groupby("arm"))
    by_arm = frame.groupby("arm").first()
    assert by_arm.loc[ec.TWICE, "epochs"] == 2 * by_arm.loc[ec.BASELINE, "epochs"] == 120
    assert by_arm.loc["SGD h+4μ", "learning_rate"] == pytest.approx(0.02 + 4 * 0.02)
    assert by_arm.loc["SAM-u ρ=2μ", "rho"] == pytest.approx(2 * by_arm.loc["EGR (HVP)", "mu"])
    assert by_arm.loc["EGR (FD)", "penalty_method"] == "finite_difference"
    assert (frame["patience"].isna()).all() and (frame["selection"] == "validation").all()


def test_grid_refuses_bad_input_before_any_compute():
    with pytest.raises(ConfigError, match="bogus"):
        ec.grid("bogus")
    with pytest.raises(ConfigError, match="mu"):
        ec.grid("smoke", mu=-0.1)
    with pytest.raises(ConfigError, match="override"):
        ec.grid("smoke", batch_size=7)
    with pytest.raises(ConfigError, match="unknown arm"):
        ec.arms({**ec.PROFILES["smoke"], "arms": ("SGD h", "Adam")})
    assert ec.seed_set_b("cpu", None, range(5)) == (5, 6, 7, 8, 9)
    with pytest.raises(ConfigError, match="disjoint"):
        ec.seed_set_b("cpu", [4, 5], range(5))


def test_matched_loss_interpolation_is_exact_on_power_laws():
    """Along a run with q = c·E^k at the probes, log-log interpolation returns c·E*^k exactly;
    the epoch is interpolated linearly in log E."""
    losses = np.array([2.0, 0.8, 0.3, 0.1, 0.05])
    epochs = np.array([0.0, 6.0, 12.0, 18.0, 24.0])
    probes = pd.DataFrame({"id": "a", "step": np.arange(5), "epoch": epochs, "train_loss": losses,
                           "r_ig": 3e-4 * losses**1.7, "lambda_max": 40 * losses**-0.3,
                           "hessian_trace": 5 * losses**0.5, "grad_norm": 2 * losses**0.85})
    never = probes.assign(id="b", train_loss=losses + 0.2)
    level = 0.2
    out = ec.at_matched_loss(pd.concat([probes, never]), level).set_index("id")
    np.testing.assert_allclose(out.loc["a", "r_ig"], 3e-4 * level**1.7, rtol=1e-12)
    np.testing.assert_allclose(out.loc["a", "lambda_max"], 40 * level**-0.3, rtol=1e-12)
    np.testing.assert_allclose(out.loc["a", "hessian_trace"], 5 * level**0.5, rtol=1e-12)
    w = np.log(level / 0.3) / np.log(0.1 / 0.3)
    assert out.loc["a", "epoch_at_level"] == pytest.approx(12 + 6 * w, rel=1e-12)
    assert out.loc["b"].isna().all()  # b's loss never falls to 0.2
    assert ec.matched_level(pd.concat([probes, never])) == pytest.approx(0.25)
    with pytest.raises(ConfigError):
        ec.at_matched_loss(probes, 0.0)
    # test accuracy from the evaluation history: linear in log E between the evaluations
    runs = pd.DataFrame([{"id": "a", "history": {"train_loss": list(losses), "test_acc": [0.1, 0.5, 0.8, 0.9, 0.95]}},
                         {"id": "b", "history": {"train_loss": list(losses + 0.2), "test_acc": [0.1] * 5}}])
    acc = ec.accuracy_at_loss(runs, level).set_index("id")["test_acc_at_level"]
    assert acc["a"] == pytest.approx(0.8 + w * 0.1, rel=1e-12) and np.isnan(acc["b"])


# ---------------------------------------------------------------------------------------------
# A synthetic results frame: every arm on 5 seeds, with effects chosen per arm

SEEDS = range(5)
#: arm -> (Δ test accuracy over SGD h, factor on R_IG along the trajectory), per seed alike
EFFECTS = {ec.BASELINE: (0.0, 1.0), ec.TWICE: (0.004, 1.0), "SGD h+4μ": (0.006, 0.5),
           "EGR (HVP)": (0.006, 0.5), "EGR (FD)": (0.006, 0.5), "GNP": (-0.003, 0.3),
           "SAM-u ρ=2μ": (0.006, 0.5), "SAM ρ=0.05": (0.010, 0.2)}


def _run(arm, seed, m=1000):
    spec = ec.PROFILES["cpu"]
    train = dict(ec.arms(spec))[arm]
    hp = {k: v for k, v in train.items() if k not in ("method", "learning_rate", "epochs")}
    d_acc, factor = EFFECTS[arm]
    noise = 1e-4 * ((seed * 7 + len(arm)) % 5 - 2)  # seed-to-seed spread, smaller than every effect
    losses = np.geomspace(2.0, 0.02 * (1 + seed / 10), 6)
    history = {"probe_step": list(range(6)), "probe_epoch": [6.0 * i for i in range(6)],
               "probe_train_loss": list(losses), "probe_r_ig": list(factor * 1e-4 * losses),
               "probe_lambda_max": list(factor * 30 + 0 * losses), "probe_hessian_trace": list(factor * 300 + 0 * losses),
               "train_loss": list(losses), "test_acc": list(0.93 + d_acc + noise - 0.1 * losses)}
    return dict(id=f"{arm}-{seed}", status="ok", method=train["method"], learning_rate=train["learning_rate"],
                epochs=train.get("epochs", 60), seed=seed, width=50, num_params=m, n_test=10_000,
                mu=hp.get("mu"), penalty_method=hp.get("penalty_method", "hvp"), rho=hp.get("rho"),
                ascent=hp.get("ascent"), alpha=hp.get("alpha"), r=hp.get("r"), reached_0p95=True,
                test_acc=0.93 + d_acc + noise, r_ig=factor * 1e-6, lambda_max=factor * 30,
                hessian_trace=factor * 300, train_loss_full=0.03, history=history)


@pytest.fixture(scope="module")
def runs():
    return pd.DataFrame([_run(arm, s) for arm in EFFECTS for s in SEEDS])


def test_tidy_labels_arms_budgets_and_first_order_mu(runs):
    df = ec.tidy(runs, 0.95).set_index("id")
    assert set(df["arm"]) == set(EFFECTS)
    assert df.loc["SGD h, 2× steps-0", "gradient_budget"] == 2
    assert df.loc["EGR (HVP)-0", "gradient_budget"] == 3 and df.loc["SAM ρ=0.05-0", "gradient_budget"] == 2
    norm = np.sqrt(1000 * df.loc["SAM ρ=0.05-0", "r_ig"])
    assert df.loc["SAM ρ=0.05-0", "mu_first_order"] == pytest.approx(0.05 / (2 * norm), rel=1e-12)
    assert df.loc["SAM-u ρ=2μ-0", "mu_first_order"] == pytest.approx(0.02, rel=1e-12)
    gnp = np.sqrt(1000 * df.loc["GNP-0", "r_ig"])
    assert df.loc["GNP-0", "mu_first_order"] == pytest.approx(0.8 * 0.1 / (2 * gnp), rel=1e-12)
    assert np.isnan(df.loc["SGD h-0", "mu_first_order"])


def test_findings_give_the_verdicts_the_planted_effects_imply(runs):
    table = ec.findings(runs, 0.95).set_index("claim")
    verdict = table["verdict"]
    # every seed moves the predicted way: p = 1/32 with 5 seeds
    assert verdict["SAM ρ=0.05 raises test accuracy over SGD h (equal steps)"] == "reproduced"
    assert verdict["GNP raises test accuracy over SGD h (equal steps)"] == "not reproduced"
    assert verdict["SAM ρ=0.05 lowers R_IG at E* (vs SGD h)"] == "reproduced"
    # the 2× arm is SGD h's own run until its last step: no row at the matched loss
    assert not any(c.startswith(f"{ec.TWICE} ") and "at E*" in c for c in table.index)
    assert verdict["SAM ρ=0.05 raises test accuracy over SGD h, 2× steps (equal gradients)"] == "reproduced"
    assert verdict["GNP raises test accuracy over SGD h, 2× steps (equal gradients)"] == "not reproduced"
    # EGR (HVP) costs three gradients a step: no equal-gradient row
    assert not any("EGR (HVP) raises test accuracy over SGD h, 2×" in c for c in table.index)
    assert verdict["EGR (FD) ≈ EGR (HVP): same test accuracy"] == "reproduced"
    assert verdict["SAM-u ρ=2μ ≈ EGR (HVP): same R_IG at E*"] == "reproduced"
    assert verdict["SAM ρ=0.05 raises test accuracy at E* (vs SGD h)"] == "reproduced"
    assert verdict["GNP raises test accuracy at E* (vs SGD h)"] == "not reproduced"
    effect = table.loc["SAM ρ=0.05 raises test accuracy over SGD h (equal steps)", "effect"]
    assert effect.startswith("+100")  # 0.010 of 10,000 test images


def test_arms_table_reads_the_verdicts_and_costs(runs):
    costs = ec.cost_table(pd.DataFrame([{"width": 50, "batch": 512, "seconds_SGD": 0.01, "seconds_EGR (HVP)": 0.03,
                                         "seconds_SAM ρ=0.05": 0.02}]))
    assert dict(zip(costs["arm"], costs["ratio_to_sgd"]))[ec.TWICE] == 1.0
    table = ec.arms_table(runs, 0.95, costs).set_index("arm")
    assert table.loc["EGR (HVP)", "wall time / step (× SGD)"] == pytest.approx(3.0)
    assert table.loc["SAM ρ=0.05", "Δ test images vs SGD h"] == pytest.approx(100, abs=2)
    assert table.loc["SAM ρ=0.05", "acc verdict (equal steps)"] == "reproduced"
    assert table.loc["SAM ρ=0.05", "R_IG at E*"] < table.loc[ec.BASELINE, "R_IG at E*"]
    assert np.isnan(table.loc["GNP", "wall time / step (× SGD)"])  # not timed in this frame


def test_accuracy_differences_pair_by_seed_and_respect_the_gradient_budget(runs):
    kept, _ = ec.matched(runs, 0.95)
    twice = ec.accuracy_differences(kept, ec.TWICE)
    assert "EGR (HVP)" not in set(twice["arm"]) and ec.BASELINE not in set(twice["arm"])
    sam = twice[twice["arm"] == "SAM ρ=0.05"]
    assert list(sam["seed"]) == list(SEEDS)
    np.testing.assert_allclose(sam["d"].mean(), 1e4 * (0.010 - 0.004), atol=2)
    assert set(ec.accuracy_differences(kept, ec.BASELINE)["arm"]) == set(EFFECTS) - {ec.BASELINE}


def test_describe_names_every_arm_of_a_grid_even_without_egr():
    text = ec.describe(ec.grid("smoke"))
    assert "SAM ρ=0.05 (sam, h = 0.05, rho = 0.05, ascent = normalized)" in text and "2× arm" not in text
    text = ec.describe(ec.grid("cpu"))
    assert "120 for the 2× arm" in text and "fd_radius = 0.001" in text and text.count("fd_radius") == 1


# ---------------------------------------------------------------------------------------------
# The CIFAR-10 slice and the chapter's budget


def test_cifar_slice_grid_per_profile():
    assert ec.cifar_grid("smoke") == [] and ec.cifar_cost_grid("smoke") == []  # CI runs no ResNet
    frame = pd.DataFrame([{**c["train"], **c["train"]["hparams"]} for c in ec.cifar_grid("cpu")])
    frame["arm"] = [ec.arm_of(r, 0.05, 4) for _, r in frame.iterrows()]
    assert len(frame) == 8 and set(frame["model"]) == {"resnet18"} and set(frame["width_multiplier"]) == {0.0625}
    assert set(frame["arm"]) == {"SGD h", "SGD h+4μ", "EGR (FD)", "SAM ρ=0.05"}
    assert all(sorted(g["seed"]) == [0, 1] for _, g in frame.groupby("arm"))
    assert frame.loc[frame["arm"] == "SGD h+4μ", "learning_rate"].iloc[0] == pytest.approx(0.05 + 4 * 0.0125)
    assert (frame["dataset"] == "cifar10").all() and (frame["epochs"] == 4).all() and frame["patience"].isna().all()
    paper = ec.cifar_grid("paper")
    assert len(paper) == 10 * 3 and {c["train"]["width_multiplier"] for c in paper} == {1.0}
    assert ec.cifar_grid("cpu", seed=[3])[0]["train"]["seed"] == 3
    # the timing uses the training programs of the runs (same program key as seed 0's runs)
    (cost,) = ec.cifar_cost_grid("cpu")
    assert set(cost["rules"]) == {"SGD", "EGR (FD)", "SAM ρ=0.05"}
    runs = {c["train"]["method"]: c["train"] for c in ec.cifar_grid("cpu") if c["train"]["seed"] == 0}
    assert cost["rules"]["SAM ρ=0.05"] == runs["sam"] and cost["rules"]["EGR (FD)"] == runs["egr"]


def _cifar_run(config, test_acc, r_ig, train_loss):
    train = config["train"]
    return {**train, **train["hparams"], "id": f"{train['method']}-{train['learning_rate']}-{train['seed']}",
            "status": "ok", "num_params": 44_000, "reached_0p1": True, "test_acc": test_acc, "train_acc": 0.3,
            "r_ig": r_ig, "lambda_max": 50.0, "train_loss_full": train_loss, "history": {}}


@pytest.mark.parametrize("train_loss", [2.0, 0.01])
def test_cifar_findings_are_not_testable_far_from_a_minimum(train_loss):
    """Two seeds, every arm ahead of SGD h in both: far from a minimum (the slice's few epochs)
    no claim is testable; near one the rows get the within-seed verdicts."""
    rows = []
    for c in ec.cifar_grid("cpu"):
        t = c["train"]
        ahead = 0.0 if (t["method"] == "sgd" and t["learning_rate"] == 0.05) else 0.01
        rows.append(_cifar_run(c, 0.2 + ahead + 0.001 * t["seed"], 1e-3 * (1 - 50 * ahead), train_loss))
    runs = pd.DataFrame(rows)
    table = ec.cifar_findings(runs, 0.1)
    assert len(table) == 2 * 3
    far = table["verdict"] == "not testable at this budget"
    assert far.all() if train_loss > stats.MAX_TRAIN_LOSS else not far.any()
    arms = ec.cifar_table(runs, 0.1, table=table).set_index("arm")
    assert arms.loc["SAM ρ=0.05", "Δ test images vs SGD h (per seed)"] == "+10, +10"
    assert arms.loc["SGD h", "Δ test images vs SGD h (per seed)"] == "–"
    assert arms.loc["EGR (FD)", "gradients / step"] == 2 and arms.loc["SGD h", "runs"] == 2
    assert arms.loc["SGD h+4μ", "train loss"] == pytest.approx(train_loss)


def test_training_step_timing_runs_each_rules_own_program():
    grid = ec.grid("smoke", seed=[0])
    rules = {"SGD": grid[0]["train"], "SAM": grid[-1]["train"]}
    seconds = ec._time_training_steps(dict(rules=rules, repeats=2))
    assert set(seconds) == {"SGD", "SAM"} and all(0 < s < 1 for s in seconds.values())


def test_sweep_options_and_program_order(monkeypatch):
    monkeypatch.delenv("IGR_EXECUTOR", raising=False)
    monkeypatch.delenv("IGR_WORKERS", raising=False)
    assert ec.sweep_options("cpu") == dict(executor="process", workers=2)
    assert ec.sweep_options("smoke") == {} and ec.sweep_options("paper") == {}
    monkeypatch.setenv("IGR_WORKERS", "1")
    assert ec.sweep_options("cpu") == {}  # the environment says where sweeps run
    grid = ec.grid("cpu")
    ordered = ec.largest_first(grid)
    assert sorted(map(id, ordered)) == sorted(map(id, grid))
    # the normalised-SAM program (three arms, 15 runs of two gradients) first, its runs in grid order
    assert [c["train"]["hparams"].get("rho") for c in ordered[:15]] == [0.01] * 5 + [0.05] * 5 + [0.2] * 5
    assert ordered[15]["train"]["hparams"].get("penalty_method") == "hvp"  # 3 gradients × 5 runs


def test_cpu_chapter_renders_the_slice_and_the_command_line_trains_it(capsys):
    """At cpu the chapter reads the slice's stored records (it takes about 7 minutes, beyond the
    chapter's budget); the command the chapter prints plans exactly that grid."""
    assert ec.cifar_spec("cpu")["in_chapter"] is False and ec.cifar_spec("paper")["in_chapter"] is True
    from igrlib import sweep

    assert sweep.main(["igrlib.experiments.equal_compute:CIFAR", "--profile", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{ec.CIFAR.NAME} [cpu]") and f"{len(ec.cifar_grid('cpu'))} runs" in out
