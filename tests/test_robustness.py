"""Noise robustness, loss slope (igrlib.maths.robustness) and landscape slices (igrlib.maths.landscape)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree
from scipy.special import gammaln

from igrlib.maths import landscape, robustness
from igrlib.config import ConfigError

RNG = np.random.default_rng(0)
SHAPES = {"w": (6, 5), "b": (5,)}  # m = 35
A_MATRIX = (lambda g: g @ g.T / 35 - 0.3 * np.eye(35))(RNG.standard_normal((35, 35)))
C_VECTOR = RNG.standard_normal(35)
THETA = {name: RNG.standard_normal(shape) for name, shape in SHAPES.items()}
DUMMY_BATCHES = (np.zeros((3, 2, 1)), np.zeros((3, 2, 1)))  # 3 batches of 2 examples


def quadratic_loss(params, batch):
    """E = ½ θᵀAθ (an indefinite A), whatever the batch."""
    theta = ravel_pytree(params)[0]
    return 0.5 * theta @ jnp.asarray(A_MATRIX) @ theta + 0.0 * jnp.sum(batch[0])


def linear_loss(params, batch):
    """E = cᵀθ, whatever the batch."""
    return jnp.asarray(C_VECTOR) @ ravel_pytree(params)[0] + 0.0 * jnp.sum(batch[0])


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def as64(tree):
    return jax.tree.map(jnp.asarray, tree)


# ---------------------------------------------------------------- noise


def test_gaussian_perturbation_absolute_and_relative():
    params = {"big": jnp.asarray(3.0 * RNG.standard_normal((300, 200))), "zero": jnp.zeros(7)}
    key = jax.random.key(3)
    unit = jax.tree.map(jnp.subtract, robustness.gaussian_perturbation(params, key, 1.0), params)
    for sigma in (0.0, 0.05):
        absolute = robustness.gaussian_perturbation(params, key, sigma)
        relative = robustness.gaussian_perturbation(params, key, sigma, mode="relative")
        rms = np.sqrt(np.mean(np.asarray(params["big"]) ** 2))
        # Same key, same ε: δ_abs = σ ε and δ_rel = σ·RMS(θ_t)·ε exactly (up to rounding).
        np.testing.assert_allclose(absolute["big"] - params["big"], sigma * unit["big"], rtol=0, atol=1e-14)
        np.testing.assert_allclose(relative["big"] - params["big"], sigma * rms * unit["big"], rtol=0, atol=1e-13)
        np.testing.assert_array_equal(relative["zero"], 0.0)  # an all-zero tensor gets no noise
        if sigma == 0:
            for leaf, original in zip(jax.tree.leaves(absolute), jax.tree.leaves(params)):
                np.testing.assert_array_equal(leaf, original)
        else:
            np.testing.assert_allclose(np.std(absolute["big"] - params["big"]), sigma, rtol=0.02)
            np.testing.assert_allclose(np.std(relative["big"] - params["big"]), sigma * rms, rtol=0.02)
    with pytest.raises(ConfigError):
        robustness.gaussian_perturbation(params, key, 0.1, mode="layerwise")


@jax.jit
def shift_metrics(params):
    """Mean squared displacement from THETA (expectation σ² in absolute mode), and a second metric."""
    delta = ravel_pytree(params)[0] - ravel_pytree(as64(THETA))[0]
    return {"msd": jnp.mean(delta**2), "loss": quadratic_loss(params, DUMMY_BATCHES)}


def test_noise_robustness_table():
    params, key = as64(THETA), jax.random.key(4)
    sigmas, num_draws = [0.0, 0.1, 0.3], 64
    table = robustness.noise_robustness(shift_metrics, params, key, sigmas, num_draws)
    frame = pd.DataFrame(table)
    assert len(frame) == 6 and set(frame.metric) == {"msd", "loss"}
    clean = shift_metrics(params)
    zero = frame[frame.sigma == 0].set_index("metric")
    assert zero.loc["loss", "mean"] == float(clean["loss"]) and zero.loc["msd", "mean"] == 0.0
    assert np.all(zero["std"] == 0) and np.all(zero["stderr"] == 0)
    msd = frame[frame.metric == "msd"].set_index("sigma")
    # Draw d uses jax.random.split(key, num_draws)[d] at every σ.
    draws = jax.jit(jax.vmap(lambda k: shift_metrics(robustness.gaussian_perturbation(params, k, 0.1))["msd"]))(
        jax.random.split(key, num_draws)
    )
    np.testing.assert_allclose(msd.loc[0.1, ["mean", "std"]], [draws.mean(), np.std(draws, ddof=1)], rtol=1e-10)
    # Common random numbers: δ(σ) = σ ε with the same ε, so the msd scales exactly as σ².
    np.testing.assert_allclose(msd.loc[0.3, ["mean", "std"]], 9 * msd.loc[0.1, ["mean", "std"]], rtol=1e-10)
    for sigma in sigmas[1:]:
        np.testing.assert_allclose(msd.loc[sigma, "stderr"], msd.loc[sigma, "std"] / np.sqrt(num_draws), rtol=1e-12)
        assert abs(msd.loc[sigma, "mean"] - sigma**2) < 4 * msd.loc[sigma, "stderr"]
    chunked = robustness.noise_robustness(shift_metrics, params, key, sigmas, num_draws, draw_batch=16)
    np.testing.assert_allclose(chunked["mean"], table["mean"], rtol=1e-12)


def test_noise_robustness_rejects_bad_input():
    params, key = as64(THETA), jax.random.key(0)
    for sigmas, num_draws, mode in (([-0.1], 4, "absolute"), ([], 4, "absolute"), ([0.1], 1, "absolute"),
                                    ([0.1], 4, "nope"), ([[0.1]], 4, "absolute")):
        with pytest.raises(ConfigError):
            robustness.noise_robustness(shift_metrics, params, key, sigmas, num_draws, mode)
    with pytest.raises(ConfigError):
        robustness.noise_robustness(lambda p: {"vec": p["b"]}, params, key, [0.1], 4)


# ---------------------------------------------------------------- slope


def test_loss_slope_of_linear_function():
    params, key, n = as64(THETA), jax.random.key(5), 200
    slope = robustness.loss_slope(linear_loss, params, DUMMY_BATCHES, key, radius=1.0, num_directions=n)
    np.testing.assert_allclose(slope.grad_norm, np.linalg.norm(C_VECTOR), rtol=1e-13)
    units = [ravel_pytree(robustness.random_unit_direction(params, k))[0] for k in jax.random.split(key, n)]
    expected = np.abs(np.asarray(units) @ C_VECTOR)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(units), axis=1), 1.0, rtol=1e-13)
    np.testing.assert_allclose(slope.slopes, expected, rtol=1e-10)
    np.testing.assert_allclose(slope.mean_abs_slope, expected.mean(), rtol=1e-10)
    np.testing.assert_allclose(slope.stderr, expected.std(ddof=1) / np.sqrt(n), rtol=1e-10)
    m = C_VECTOR.size  # E|u·c| = ‖c‖ Γ(m/2) / (√π Γ((m+1)/2)) on the unit sphere
    sphere_mean = np.linalg.norm(C_VECTOR) * np.exp(gammaln(m / 2) - gammaln((m + 1) / 2)) / np.sqrt(np.pi)
    assert abs(slope.mean_abs_slope - sphere_mean) < 4 * slope.stderr


def test_loss_slope_at_quadratic_critical_point():
    zero = jax.tree.map(jnp.zeros_like, as64(THETA))
    key, r = jax.random.key(6), 0.5
    slope = robustness.loss_slope(quadratic_loss, zero, DUMMY_BATCHES, key, radius=r, num_directions=8,
                                  direction_batch=4)
    units = np.asarray([ravel_pytree(robustness.random_unit_direction(zero, k))[0] for k in jax.random.split(key, 8)])
    curvatures = np.einsum("ij,jk,ik->i", units, A_MATRIX, units)
    assert slope.grad_norm == 0.0
    np.testing.assert_allclose(slope.slopes, r * np.abs(curvatures) / 2, rtol=1e-10)  # |½ r² uᵀAu| / r
    for bad in ({"radius": 0.0}, {"num_directions": 1}):
        with pytest.raises(ConfigError):
            robustness.loss_slope(quadratic_loss, zero, DUMMY_BATCHES, key, **{"radius": r, "num_directions": 4, **bad})


# ---------------------------------------------------------------- landscape


def test_filter_normalize_matches_output_unit_norms():
    params = {
        "linear": {"w": RNG.standard_normal((7, 4)), "b": RNG.standard_normal(4)},
        "conv": {"w": RNG.standard_normal((3, 3, 2, 5)), "b": RNG.standard_normal(5)},
    }
    params["linear"]["w"][:, 2] = 0.0  # a dead unit
    direction = jax.tree.map(lambda p: RNG.standard_normal(p.shape), params)
    zero_bias = landscape.filter_normalize(as64(direction), as64(params))
    tensor_bias = landscape.filter_normalize(as64(direction), as64(params), bias_mode="tensor")
    for layer in ("linear", "conv"):
        w, d = params[layer]["w"], direction[layer]["w"]
        axes = tuple(range(w.ndim - 1))
        unit_norm = np.sqrt(np.sum(w**2, axis=axes))
        # d[..., j] · ‖θ[..., j]‖ / ‖d[..., j]‖: the filter keeps its direction and takes θ's norm.
        np.testing.assert_allclose(zero_bias[layer]["w"], d * unit_norm / np.sqrt(np.sum(d**2, axis=axes)), rtol=1e-13)
        np.testing.assert_allclose(np.sqrt(np.sum(np.asarray(zero_bias[layer]["w"]) ** 2, axis=axes)), unit_norm,
                                   rtol=1e-13, atol=0)
        np.testing.assert_array_equal(zero_bias[layer]["b"], 0.0)
        b, db = params[layer]["b"], direction[layer]["b"]
        np.testing.assert_allclose(tensor_bias[layer]["b"], db * np.linalg.norm(b) / np.linalg.norm(db), rtol=1e-13)
        np.testing.assert_array_equal(tensor_bias[layer]["w"], zero_bias[layer]["w"])
    np.testing.assert_array_equal(zero_bias["linear"]["w"][:, 2], 0.0)
    with pytest.raises(ConfigError):
        landscape.filter_normalize({"w": jnp.ones((2, 2))}, {"w": jnp.ones((2, 3))})
    with pytest.raises(ConfigError):
        landscape.filter_normalize(params, params, bias_mode="drop")


def closed_form(theta, *terms):
    point = ravel_pytree(theta)[0] + sum(c * ravel_pytree(d)[0] for c, d in terms)
    return 0.5 * point @ A_MATRIX @ point


def test_slices_match_closed_form_quadratic():
    theta = as64(THETA)
    d1 = landscape.random_filter_direction(theta, jax.random.key(8), bias_mode="tensor")
    d2 = landscape.random_filter_direction(theta, jax.random.key(9), bias_mode="tensor")
    for d in (d1, d2):  # random filter directions have the weights' per-unit norms
        np.testing.assert_allclose(np.linalg.norm(d["w"], axis=0), np.linalg.norm(theta["w"], axis=0), rtol=1e-13)
        np.testing.assert_allclose(np.linalg.norm(d["b"]), np.linalg.norm(theta["b"]), rtol=1e-13)
    alphas, betas = np.linspace(-1, 1, 5), np.array([-0.5, 0.0, 0.25])
    line = landscape.slice_1d(quadratic_loss, theta, DUMMY_BATCHES, d1, alphas)
    np.testing.assert_allclose(line, [closed_form(theta, (a, d1)) for a in alphas], rtol=1e-12)
    np.testing.assert_allclose(line[2], quadratic_loss(theta, DUMMY_BATCHES), rtol=1e-13)  # α = 0
    plane = landscape.slice_2d(quadratic_loss, theta, DUMMY_BATCHES, d1, d2, alphas, betas, grid_batch=4)
    assert plane.shape == (5, 3)
    expected = [[closed_form(theta, (a, d1), (b, d2)) for b in betas] for a in alphas]
    np.testing.assert_allclose(plane, expected, rtol=1e-12)
    np.testing.assert_allclose(plane[:, 1], line, rtol=1e-13)
    with pytest.raises(ConfigError):
        landscape.slice_1d(quadratic_loss, theta, DUMMY_BATCHES, {"w": d1["w"]}, alphas)
    with pytest.raises(ConfigError):
        landscape.slice_1d(quadratic_loss, theta, DUMMY_BATCHES, d1, [np.nan])
