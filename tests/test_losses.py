"""Losses, the IGR modified loss and the penalty gradient, checked in float64 against dense maths.

Every JAX computation here runs under ``jax.jit`` and the reference maths in numpy: op-by-op
dispatch of a dense Hessian takes tens of seconds on a loaded 2-core machine, one compiled
program well under one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from igrlib.maths import losses, models
from igrlib.config import ConfigError

N_EXAMPLES, N_IN, N_HIDDEN, N_OUT = 16, 3, 5, 4  # 3*5 + 5 + 5*4 + 4 = 44 parameters


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _loss(params, x, y):
    """E(θ): mean cross-entropy of a one-hidden-layer tanh MLP."""
    return _loss_with_aux(params, x, y)[0]


def _loss_with_aux(params, x, y):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return losses.cross_entropy(logits, y), logits


@functools.cache
def _problem():
    """Parameters (a dict), inputs, labels, and in numpy: flat θ, E, ∇E and the dense Hessian."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        params = {
            "w1": jnp.asarray(rng.standard_normal((N_IN, N_HIDDEN))),
            "b1": jnp.asarray(0.3 * rng.standard_normal(N_HIDDEN)),
            "w2": jnp.asarray(rng.standard_normal((N_HIDDEN, N_OUT)) / 2),
            "b2": jnp.asarray(0.3 * rng.standard_normal(N_OUT)),
        }
        x = jnp.asarray(rng.standard_normal((N_EXAMPLES, N_IN)))
        y = jnp.asarray(rng.integers(0, N_OUT, N_EXAMPLES))
        flat, unravel = ravel_pytree(params)
        flat_loss = lambda v: _loss(unravel(v), x, y)  # noqa: E731
        value, g, hess = jax.jit(
            lambda v: (flat_loss(v), jax.grad(flat_loss)(v), jax.hessian(flat_loss)(v)))(flat)
        dense = {"flat": np.asarray(flat), "E": float(value), "g": np.asarray(g), "H": np.asarray(hess)}
        return params, x, y, flat_loss, dense


def _flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def test_problem_is_float64_and_nontrivial():
    params, _, _, _, d = _problem()
    assert d["g"].dtype == np.float64 and d["H"].shape == (44, 44)
    assert models.num_params(params) == 44
    assert np.linalg.norm(d["g"]) > 1e-2  # a zero gradient would make every check vacuous
    np.testing.assert_allclose(d["H"], d["H"].T, rtol=0, atol=1e-13)


@pytest.mark.parametrize("h", [0.05, 0.5])
def test_modified_loss_gradient_is_one_plus_half_h_hessian_times_gradient(h):
    _, _, _, flat_loss, d = _problem()
    g, hess = d["g"], d["H"]
    expected = g + (h / 2) * hess @ g
    value, got = jax.jit(jax.value_and_grad(losses.modified_loss(flat_loss, h)))(d["flat"])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    # the correction is large enough that the check tells Ẽ from E
    assert np.abs(expected - g).max() > 1e-3
    np.testing.assert_allclose(value, d["E"] + h / 4 * g @ g, rtol=1e-14)


def test_modified_loss_works_on_pytrees_with_extra_arguments():
    params, x, y, _, d = _problem()
    got = jax.jit(jax.grad(losses.modified_loss(_loss, 0.2)))(params, x, y)
    np.testing.assert_allclose(_flat(got), d["g"] + 0.1 * d["H"] @ d["g"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["hvp", "double_backprop"])
def test_exact_penalty_methods_match_the_direct_gradient(method):
    mu = 0.3
    params, x, y, _, d = _problem()
    dense = d["g"] + 2 * mu * d["H"] @ d["g"]

    @jax.jit
    def both(p):
        direct = jax.grad(losses.egr_loss(_loss, mu))(p, x, y)
        return direct, losses.penalized_value_and_grad(_loss_with_aux, mu, method)(p, x, y)

    direct, ((value, logits), grad, total) = both(params)
    np.testing.assert_allclose(_flat(direct), dense, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_flat(total), _flat(direct), rtol=0, atol=1e-12)
    np.testing.assert_allclose(_flat(grad), d["g"], rtol=0, atol=1e-14)
    np.testing.assert_allclose(value, d["E"], rtol=1e-15)
    assert logits.shape == (N_EXAMPLES, N_OUT)


def test_finite_difference_error_is_first_order_in_the_radius():
    mu = 0.3
    params, x, y, _, d = _problem()
    exact = d["g"] + 2 * mu * d["H"] @ d["g"]
    radii = (1e-2, 1e-3, 1e-4)

    @jax.jit
    def totals(p):
        return [losses.penalized_value_and_grad(_loss_with_aux, mu, "finite_difference", eps)(
            p, x, y)[2] for eps in radii]

    errors = [np.linalg.norm(_flat(t) - exact) for t in totals(params)]
    assert errors[-1] < 1e-3 * np.linalg.norm(exact)
    for big, small in zip(errors, errors[1:]):
        assert 7 < big / small < 13, errors  # O(ε): a 10x smaller radius, a ~10x smaller error


def test_finite_difference_at_a_stationary_point_is_zero_not_nan():
    quad = lambda v: 0.5 * jnp.sum(jnp.arange(1.0, 4.0) * v**2)  # noqa: E731  ∇E(0) = 0
    hg = jax.jit(lambda v: losses.hessian_grad_product(
        jax.grad(quad), v, jax.grad(quad)(v), "finite_difference"))(jnp.zeros(3))
    np.testing.assert_array_equal(hg, np.zeros(3))


def test_hessian_grad_product_methods_agree_on_a_quadratic():
    a = np.asarray([[2.0, 0.5], [0.5, 1.0]])
    quad = lambda v: 0.5 * v @ a @ v + jnp.sum(v)  # noqa: E731  H = a everywhere
    theta = np.asarray([0.3, -0.7])
    g = a @ theta + 1
    products = jax.jit(lambda v, u: [losses.hessian_grad_product(jax.grad(quad), v, u, method)
                                     for method in losses.PENALTY_METHODS])(theta, g)
    for method, got in zip(losses.PENALTY_METHODS, products):
        # on a quadratic the look-ahead difference is exact up to rounding
        tol = 1e-9 if method == "finite_difference" else 1e-14
        np.testing.assert_allclose(got, a @ g, rtol=0, atol=tol, err_msg=method)


# ----------------------------------------------------------------------- the two-parameter model


@pytest.mark.parametrize("a,b,x,y,h", [(0.7, -1.3, 0.9, 2.0, 0.1), (2.0, 0.25, -1.5, 0.5, 0.7)])
def test_two_parameter_model_closed_forms(a, b, x, y, h):
    r = y - a * b * x
    energy = 0.5 * r**2
    lam = h / 2  # λ = h·m/4 with m = 2

    @jax.jit
    def measured(theta):
        grad = jax.grad(models.two_param_loss)(theta, x, y)
        return (models.two_param_loss(theta, x, y), grad, losses.r_ig(grad),
                losses.modified_loss(models.two_param_loss, h)(theta, x, y))

    value, grad, rig, modified = measured(np.asarray([a, b]))
    m = models.num_params(grad)
    assert m == 2
    assert losses.igr_lambda(h, m) == pytest.approx(lam, rel=1e-15)
    np.testing.assert_allclose(value, energy, rtol=1e-14)
    np.testing.assert_allclose(grad, [-r * x * b, -r * x * a], rtol=1e-14)
    np.testing.assert_allclose(rig, (r * x) ** 2 * (a**2 + b**2) / 2, rtol=1e-14)
    np.testing.assert_allclose(modified, energy * (1 + lam * x**2 * (a**2 + b**2)), rtol=1e-14)
    # Ẽ = E + λ·R_IG, the identity that defines the paper's λ
    np.testing.assert_allclose(modified, energy + losses.igr_lambda(h, m) * rig, rtol=1e-14)


def test_r_ig_counts_every_leaf_of_a_pytree():
    tree = {"a": np.asarray([1.0, 2.0]), "b": np.asarray([[3.0], [4.0]]), "c": np.asarray(5.0)}
    assert models.num_params(tree) == 5
    np.testing.assert_allclose(losses.sq_norm(tree), 55.0, rtol=1e-15)
    np.testing.assert_allclose(losses.r_ig(tree), 11.0, rtol=1e-15)


# ---------------------------------------------------------------------- cross-entropy, accuracy


def test_cross_entropy_matches_numpy_log_softmax():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((7, 10)) * 5 + 100  # a large offset tests the stable form
    labels = rng.integers(0, 10, 7)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(7), labels].mean()
    got = jax.jit(losses.cross_entropy)(logits, labels)
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    np.testing.assert_allclose(jax.jit(losses.cross_entropy)(np.zeros((3, 10)), np.asarray([0, 4, 9])),
                               np.log(10), rtol=1e-15)


def test_accuracy():
    logits = np.asarray([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert float(losses.accuracy(logits, np.asarray([1, 0, 0, 1]))) == 0.5


# --------------------------------------------------------------------------------- bad input


def test_bad_penalty_method_is_config_error():
    with pytest.raises(ConfigError, match="penalty method"):
        losses.penalized_value_and_grad(_loss_with_aux, 0.1, "newton")
    with pytest.raises(ConfigError, match="penalty method"):
        losses.hessian_grad_product(jax.grad(_loss), {}, {}, "exact")


@pytest.mark.parametrize("bad", [0.0, -0.1, float("inf"), float("nan"), "big"])
def test_non_positive_h_or_mu_is_config_error(bad):
    with pytest.raises(ConfigError, match="learning rate"):
        losses.modified_loss(_loss, bad)
    with pytest.raises(ConfigError, match="mu"):
        losses.egr_loss(_loss, bad)
