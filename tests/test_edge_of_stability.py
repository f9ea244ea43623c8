"""The edge-of-stability experiment's pieces, checked exactly where the maths allows (float64).

Problems: ``E = ½θᵀAθ`` with ``A = diag(1, 3, 5)`` (gradient flow ``e^{−At}θ0``, the flow of the
modified loss ``E + (h/4)‖∇E‖²`` is ``e^{−(A + (h/2)A²)t}θ0``, the EGR step multiplies by
``1 − h(A + 2μA²)``) and synthetic ``h·λ_max`` trajectories for the entry summary.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from igrlib.config import ConfigError
from igrlib.experiments import edge_of_stability as eos
from igrlib.maths import implicit_rate

A = np.array([1.0, 3.0, 5.0])


def _quadratic(theta):
    return 0.5 * jnp.sum(jnp.asarray(A) * theta**2)


def test_gradient_matching_rate_is_exact_on_a_quadratic():
    with jax.enable_x64(True):
        along = implicit_rate.gradient_matching_rate(_quadratic, jnp.array([0.0, 2.0, 0.0]))
        theta = jnp.array([1.0, -0.5, 0.25])
        general = implicit_rate.gradient_matching_rate(_quadratic, theta)
    # along one eigenvector: c = −1/(2λ), cosine 1, nothing left over
    assert along.c == pytest.approx(-1 / 6, rel=1e-14)
    assert along.cosine == pytest.approx(1.0, rel=1e-14) and along.residual < 1e-7
    assert along.rayleigh == pytest.approx(3.0, rel=1e-14)
    g = A * np.asarray(theta)
    hg = A * g
    assert general.c == pytest.approx(-(g @ hg) / (2 * hg @ hg), rel=1e-13)
    cos = (g @ hg) / np.linalg.norm(g) / np.linalg.norm(hg)
    assert general.cosine == pytest.approx(cos, rel=1e-13)
    assert general.residual == pytest.approx(np.linalg.norm(g + 2 * general.c * hg) / np.linalg.norm(g), rel=1e-10)


def test_gradient_matching_rate_refuses_float32_and_a_stationary_point():
    with pytest.raises(ConfigError):
        implicit_rate.gradient_matching_rate(_quadratic, jnp.array([1.0, 1.0, 1.0], jnp.float32))
    with jax.enable_x64(True), pytest.raises(ConfigError, match="vanishes"):
        implicit_rate.gradient_matching_rate(_quadratic, jnp.zeros(3))


def test_low_order_flows_and_egr_path_are_exact_on_a_quadratic():
    h, mu, n = 0.1, 0.03, 5
    with jax.enable_x64(True):
        theta0 = jnp.array([1.0, -2.0, 0.5])
        ts = jnp.arange(n + 1) * h
        flows = np.asarray(eos._low_order_flows(_quadratic, theta0, jnp.asarray(h), ts))
        egr = np.asarray(eos._egr_path(_quadratic, theta0, jnp.asarray(h), jnp.asarray(mu), n))
    t = np.asarray(ts)[:, None]
    np.testing.assert_allclose(flows[0], np.exp(-A * t) * np.asarray(theta0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(flows[1], np.exp(-(A + h / 2 * A**2) * t) * np.asarray(theta0),
                               rtol=1e-9, atol=1e-12)
    factor = (1 - h * (A + 2 * mu * A**2)) ** np.arange(n + 1)[:, None]
    np.testing.assert_allclose(egr, factor * np.asarray(theta0), rtol=1e-13, atol=1e-15)


def test_entry_summary_reads_the_first_entry_and_the_plateau():
    steps = [0, 10, 20, 30, 40, 50]
    z = [1.0, 1.5, 1.95, 2.1, 1.9, 2.05]
    out = eos.entry_summary(steps, z)
    assert out["entry_step"] == 20 and out["h_lambda_start"] == 1.0 and out["h_lambda_peak"] == 2.1
    after = np.array([1.95, 2.1, 1.9, 2.05])
    assert out["h_lambda_after"] == pytest.approx(after.mean(), rel=1e-15)
    assert out["h_lambda_sd"] == pytest.approx(after.std(ddof=1), rel=1e-14)
    assert out["frac_above_2"] == 0.5
    never = eos.entry_summary(steps, [1.0] * 6)
    assert np.isnan(never["entry_step"]) and np.isnan(never["h_lambda_after"])
    with pytest.raises(ConfigError):
        eos.entry_summary([0, 1], [1.0])


def _flatness_runs(seeds: int) -> pd.DataFrame:
    """Flatness records with known paired λ_max differences against gradient flow (λ = 10 + s in
    seed s): GD lower by 1 + 0.1 s in every seed, the modified flow higher by 0.5 in every seed,
    EGR lower in 3 of 5 seeds; so GD − modified flow = −1.5 − 0.1 s."""
    s = np.arange(seeds, dtype=float)
    flow = 10 + s
    egr_shift = np.array([-0.2, -0.3, 0.1, -0.1, 0.4])[:seeds]
    lam = {"gd": flow - 1 - 0.1 * s, "modified_flow": flow + 0.5, "egr": flow + egr_shift, "gradient_flow": flow}
    frame = pd.DataFrame({"study": "flatness", "seed": s, "h": 0.1, "target_loss": 0.2, "gd_h_lambda_peak": 2.1,
                          "gd_edge_step": 40.0, **{f"lambda_{a}": v for a, v in lam.items()},
                          **{f"time_{a}": 1.0 for a in eos.ARMS}})
    return pd.concat([frame, pd.DataFrame({"study": ["flows"], "z": [1.9]})], ignore_index=True)


def test_flatness_findings_follow_the_books_paired_rule():
    """Five seeds: one-sided within-seed permutation p is the sign-test tail, exact in float64
    (1/32 when every seed goes one way, P(≥ 3 of 5) = 1/2 for 3 of 5), Holm over the four rows."""
    t = eos.flatness_findings(_flatness_runs(5)).set_index("claim")
    gd, mf, egr, gd_mf = (t.loc[claim] for _, _, claim in eos.FLATNESS_CLAIMS)
    assert gd["verdict"] == "reproduced" and gd["p"] == 1 / 32
    assert "predicted sign in 5 of 5 seeds" in gd["value"]
    assert gd["effect"].startswith("-1.2 [") and "5 seeds" in gd["effect"]  # mean of −1 − 0.1 s
    assert mf["verdict"] == "not reproduced" and mf["p"] == 1.0 and "in 0 of 5 seeds" in mf["value"]
    assert egr["verdict"] == "partly" and egr["p"] == 0.5 and "in 3 of 5 seeds" in egr["value"]
    assert gd_mf["verdict"] == "reproduced" and gd_mf["p"] == 1 / 32
    np.testing.assert_array_equal([gd["p_holm"], mf["p_holm"], egr["p_holm"], gd_mf["p_holm"]],
                                  [4 / 32, 1.0, 1.0, 4 / 32])
    assert set(t["threshold"]) == {"matched loss"}


def test_flatness_findings_never_decide_on_two_seeds():
    t = eos.flatness_findings(_flatness_runs(2)).set_index("claim")
    gd, mf = (t.loc[claim, "verdict"] for _, _, claim in eos.FLATNESS_CLAIMS[:2])
    assert (gd, mf) == ("partly", "no evidence")  # the same effects as above, symmetric, short of 3 seeds
    assert not {"reproduced", "not reproduced"} & set(t["verdict"])


def test_arm_pair_puts_the_arm_at_x_1_within_each_seed():
    table = eos.flatness_table(_flatness_runs(3))
    pair = eos.arm_pair(table, "gd", "gradient_flow")
    assert len(pair) == 6 and set(pair["x"]) == {0.0, 1.0}
    one = pair[pair["seed"] == 2].set_index("x")["lambda_max"]
    assert (one[1.0], one[0.0]) == (table.loc[2, "lambda_gd"], table.loc[2, "lambda_gradient_flow"])
    with pytest.raises(ConfigError, match="arm"):
        eos.arm_pair(table, "sam", "gradient_flow")


def test_grids_validate_before_any_compute():
    with pytest.raises(ConfigError, match="bogus"):
        eos.sharpening_grid("bogus")
    with pytest.raises(ConfigError, match="bogus"):
        eos.float64_grid("bogus")
    grid = eos.sharpening_grid("smoke")
    train = grid[0]["train"]
    assert train["method"] == "gd" and train["batch_size"] is None
    assert train["probe_examples"] == train["n_train"] and "lambda_max" in train["probes"]
    studies = [c["study"] for c in eos.float64_grid("smoke")]
    assert set(studies) == set(eos.STUDIES)
    with pytest.raises(ConfigError):
        eos.sharpening_grid("smoke", learning_rate=[-0.1])


def test_tiny_problem_is_float64_and_shares_its_loss_across_seeds():
    with pytest.raises(ConfigError, match="float64"):
        eos.tiny_problem(8, 2, 7)
    with jax.enable_x64(True):
        E0, theta0 = eos.tiny_problem(8, 2, 7, seed=0)
        E1, theta1 = eos.tiny_problem(8, 2, 7, seed=1)
        assert E0 is E1 and theta0.dtype == jnp.float64
        assert theta0.shape == (16 * 2 + 2 + 2 * 10 + 10,)
        assert not np.allclose(theta0, theta1) and float(E0(theta0)) > 0
    with pytest.raises(ConfigError, match="pool"):
        eos.tiny_problem(8, 2, 5)


def test_edge_window_keeps_the_stretch_at_the_edge_only():
    steps = [0, 10, 20, 30, 40, 50, 60]
    z = [1.0, 1.95, 2.5, 2.1, 1.92, 1.5, 1.0]
    out = eos.edge_window(steps, z)
    assert (out["edge_entry"], out["edge_exit"], out["edge_max"]) == (10, 40, 2.5)
    window = np.array([1.95, 2.5, 2.1, 1.92])
    assert out["edge_mean"] == pytest.approx(window.mean(), rel=1e-15)
    assert out["edge_sd"] == pytest.approx(window.std(ddof=1), rel=1e-14)
    assert out["edge_frac_above_2"] == 0.5
    assert np.isnan(eos.edge_window(steps, [1.0] * 7)["edge_entry"])
