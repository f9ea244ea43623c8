"""SGD with random shuffling: the modified loss Ẽ_SGD checked symbolically and its error orders
measured in float64.

Numerical problem: a 3-parameter model ``θ₂ tanh(θ₀x + θ₁)`` fitted by squared error to 8 points
split into M = 4 mini-batches of 2, from θ₀ = (0.8, −0.3, 1.2), at h = 0.2/n, n ∈ {8, …, 48}
(h ∈ [0.0042, 0.025], one epoch lasts 4h); every mean iterate is the exact average of all 24
orders.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

from igrlib.config import ConfigError
from igrlib.maths import bea_sgd
from igrlib.maths.losses import modified_loss
from igrlib.maths.order_fits import fitted_slopes

XS = np.linspace(-1.0, 1.0, 8).reshape(4, 2)
YS = np.array([[0.3, -0.5], [0.8, 0.1], [-0.2, 0.9], [0.6, -0.4]])
THETA0 = (0.8, -0.3, 1.2)
RATES = 0.2 / np.array([8, 12, 16, 24, 32, 48])


def _batch_loss(theta, batch):
    x, y = batch
    return 0.5 * jnp.mean((theta[2] * jnp.tanh(theta[0] * x + theta[1]) - y) ** 2)


# --- symbolic ------------------------------------------------------------------------------------

h, a, b = sp.symbols("h a b")
VARS = sp.Matrix([a, b])


def _truncate(expr, order=2):
    expr = sp.expand(expr)
    return sum(expr.coeff(h, k) * h**k for k in range(order + 1))


def _grad(E):
    return sp.Matrix([E]).jacobian(VARS).T


def _epoch(losses, order):
    """θ_M of one epoch in ``order``, to second order in h.

    With θ_j = θ + hA_j + h²B_j, a step subtracts h∇Ê_k(θ_j) = h g_k + h² H_k A_j + O(h³) (first
    Taylor term of the gradient; g_k, H_k at θ)."""
    A, B = sp.zeros(2, 1), sp.zeros(2, 1)
    for k in order:
        g = _grad(losses[k])
        A, B = A - g, B - g.jacobian(VARS) * A
    return (VARS + h * A + h**2 * B).applyfunc(sp.expand)


def _flow(E_mod, t):
    """The time-t flow of −∇E_mod from (a, b) to second order in h (t is a multiple of h)."""
    F = -_grad(E_mod)
    return (VARS + t * F + t**2 / 2 * F.jacobian(VARS) * F).applyfunc(_truncate)


def test_mean_epoch_follows_sgd_modified_loss_symbolically():
    """Four non-quadratic mini-batch losses; all 24 orders; coefficients of h⁰, h¹, h² compared."""
    ys = [sp.Rational(3, 5), sp.Rational(-1, 2), sp.Rational(1, 3), 2]
    losses = [(a * b - y) ** 2 / 2 + k * a**3 / 3 + b**2 * a / (k + 1) for k, y in enumerate(ys)]
    M = len(losses)
    E = sum(losses) / M
    epochs = [_epoch(losses, order) for order in itertools.permutations(range(M))]
    mean = sum(epochs, sp.zeros(2, 1)) / len(epochs)
    sgd = E + h / (4 * M) * sum((_grad(Ek).T * _grad(Ek))[0] for Ek in losses)
    gd = E + h / 4 * (_grad(E).T * _grad(E))[0]
    variance = sum(((_grad(Ek) - _grad(E)).T * (_grad(Ek) - _grad(E)))[0] for Ek in losses) / M
    assert sp.expand(sgd - (gd + h / 4 * variance)) == 0
    assert (mean - _flow(sgd, M * h)).applyfunc(sp.expand) == sp.zeros(2, 1)
    # without the variance term, and for a single order, the h² coefficients do not vanish
    assert (mean - _flow(gd, M * h)).applyfunc(sp.expand) != sp.zeros(2, 1)
    assert (epochs[0] - mean).applyfunc(sp.expand) != sp.zeros(2, 1)


# --- float64 -------------------------------------------------------------------------------------


def test_epoch_error_orders():
    with jax.enable_x64(True):
        study = bea_sgd.epoch_study(_batch_loss, (jnp.asarray(XS), jnp.asarray(YS)),
                                    jnp.array(THETA0), RATES)
    fits = fitted_slopes(study).set_index(["iterate", "reference"])
    assert len(fits) == len(bea_sgd.EPOCH_COMPARISONS)
    for key, expected in bea_sgd.EPOCH_COMPARISONS.items():
        assert abs(fits.loc[key, "slope"] - expected) < 0.15, (key, fits.loc[key, "slope"])
    # the modified flow is closer than gradient flow at every rate, by a factor growing as 1/h
    errs = study.set_index(["iterate", "reference", "h"])["error"].sort_index()
    ratio = errs["mean iterate", "gradient flow of E"] / errs["mean iterate", "flow of Ẽ_SGD"]
    assert np.all(ratio > 5) and ratio.loc[RATES.min()] > 4 * ratio.loc[RATES.max()]


def test_modified_loss_decomposition_and_single_batch():
    with jax.enable_x64(True):
        batches = (jnp.asarray(XS), jnp.asarray(YS))
        theta, hh = jnp.array([0.4, 0.7, -1.1]), 0.03
        E = bea_sgd.mean_loss(_batch_loss, batches)
        sgd = jax.jit(bea_sgd.sgd_modified_loss(_batch_loss, batches, hh))(theta)
        gd = jax.jit(modified_loss(E, hh))(theta)
        var = jax.jit(bea_sgd.variance_regularizer(_batch_loss, batches))(theta)
        np.testing.assert_allclose(sgd, gd + hh / 4 * var, rtol=1e-14)
        assert var > 1e-3
        # the field of Ẽ_SGD is minus its gradient
        field = jax.jit(bea_sgd.sgd_modified_field(_batch_loss, batches, hh))(theta)
        grad_sgd = jax.jit(jax.grad(bea_sgd.sgd_modified_loss(_batch_loss, batches, hh)))(theta)
        np.testing.assert_allclose(field, -grad_sgd, rtol=1e-12)
        # M = 1 is gradient descent: one epoch is one GD step and the variance term vanishes
        one = (jnp.asarray(XS.reshape(1, -1)), jnp.asarray(YS.reshape(1, -1)))
        E1 = bea_sgd.mean_loss(_batch_loss, one)
        step = bea_sgd.epoch_iterates(_batch_loss, one, theta, [hh])[0, 0]
        np.testing.assert_allclose(step, theta - hh * jax.grad(E1)(theta), rtol=1e-15)
        np.testing.assert_allclose(jax.jit(bea_sgd.sgd_modified_loss(_batch_loss, one, hh))(theta),
                                   jax.jit(modified_loss(E1, hh))(theta), rtol=1e-14)


def test_bad_inputs_raise_before_compute():
    batches = (jnp.asarray(XS), jnp.asarray(YS))
    with pytest.raises(ConfigError, match="float64"):
        bea_sgd.epoch_study(_batch_loss, batches, jnp.array(THETA0, dtype=jnp.float32), RATES)
    with jax.enable_x64(True):
        theta = jnp.array(THETA0)
        with pytest.raises(ConfigError, match="leading axis"):
            bea_sgd.epoch_iterates(_batch_loss, (jnp.asarray(XS), jnp.asarray(YS[:3])), theta, RATES)
        with pytest.raises(ConfigError, match="positive"):
            bea_sgd.epoch_iterates(_batch_loss, batches, theta, [0.01, -0.01])
        with pytest.raises(ConfigError, match="flow"):
            bea_sgd.sgd_modified_field(_batch_loss, batches, 0.01, "adam")
    with pytest.raises(ConfigError, match="M must be"):
        bea_sgd.permutations(8)
