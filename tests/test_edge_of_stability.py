"""The edge-of-stability experiment's pieces, checked exactly where the maths allows (float64).

Problems: ``E = ½θᵀAθ`` with ``A = diag(1, 3, 5)`` (gradient flow ``e^{−At}θ0``, the flow of the
modified loss ``E + (h/4)‖∇E‖²`` is ``e^{−(A + (h/2)A²)t}θ0``, the EGR step multiplies by
``1 − h(A + 2μA²)``) and synthetic ``h·λ_max`` trajectories for the entry summary.
"""

import jax
import jax.numpy as jnp
import numpy as np
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


def test_paired_verdict_follows_the_interval():
    assert eos.paired_verdict("c", [-1.0, -1.2, -0.9, -1.1, -1.05], -1, "u")["verdict"] == "reproduced"
    assert eos.paired_verdict("c", [1.0, 1.2, 0.9, 1.1, 1.05], -1, "u")["verdict"] == "not reproduced"
    assert eos.paired_verdict("c", [-1.0, 0.5, -0.9, 0.3, -0.5], -1, "u")["verdict"] == "partly"
    assert eos.paired_verdict("c", [-1.0, -1.2], -1, "u")["verdict"] == "partly"  # too few seeds
    assert eos.paired_verdict("c", [], -1, "u")["verdict"] == "no evidence"


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
