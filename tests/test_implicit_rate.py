"""The implicit coefficient of GD measured from its iterates, in float64.

Problems: the two-parameter model (x = 1, y = 0.6) from (2.8, 3.5) over T = 0.1 at h = T/n,
n ∈ {48, 96, 192} (h·λ_max(θ0) ≤ 0.06); a 2 → 4 → 1 tanh MLP (17 parameters, mean squared error
on 6 points, λ_max(θ0) ≈ 2.18) over T = 0.5 at n ∈ {16, 32, 64}; and E = κθ²/2 in one dimension,
where the coefficient is known in closed form. Every fit uses 9 checkpoints, so one compiled flow
per loss serves all of its rates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igrlib.config import ConfigError
from igrlib.experiments.two_param import loss_fn
from igrlib.maths import bea, implicit_rate, models
from igrlib.maths.order_fits import fitted_slopes

SAMPLES = 8
TWO_PARAM = loss_fn(1.0, 0.6)
KAPPA = 3.0


def _quadratic(theta):
    return 0.5 * KAPPA * jnp.sum(theta**2)


def _tiny_mlp():
    """A 2 → 4 → 1 tanh MLP by igrlib.maths.models, mean squared error on 6 points: (E, θ0)."""
    net = models.mlp(4, depth=1, num_classes=1, activation="tanh")
    x = jax.random.normal(jax.random.key(1), (6, 2))
    y = jnp.sin(2 * x[:, :1])
    params, _ = net.init(jax.random.key(0), x)
    E, theta0, _ = bea.flat_loss(lambda p: 0.5 * jnp.mean((net.apply(p, {}, x, False)[0] - y) ** 2),
                                 params)
    return E, theta0


with jax.enable_x64(True):
    MLP, MLP_THETA0 = _tiny_mlp()


@pytest.mark.parametrize("problem", ["two_param", "mlp"])
def test_fitted_coefficient_converges_to_h_over_4_at_second_order(problem):
    E, theta0, T, ns = {
        "two_param": (TWO_PARAM, jnp.array([2.8, 3.5]), 0.1, [48, 96, 192]),
        "mlp": (MLP, MLP_THETA0, 0.5, [16, 32, 64]),
    }[problem]
    with jax.enable_x64(True):
        study = implicit_rate.coefficient_study(E, jnp.asarray(theta0, jnp.float64), T, ns, SAMPLES)
    slope = fitted_slopes(study[["h", "n", "error", "expected"]])["slope"].item()
    assert abs(slope - 2) < 0.1  # |ĉ − h/4| = O(h²): ĉ/(h/4) − 1 = O(h)
    ratio = study["ratio"].to_numpy()
    assert np.all(np.abs(ratio - 1) < 0.05) and np.all(np.diff(np.abs(ratio - 1)) < 0)
    assert np.all(study["explained"] > 0.9999) and np.all(study["condition"] < 100)


def test_quadratic_coefficient_is_the_closed_form_and_confounded_with_the_rate():
    """In one dimension GD is exactly the flow of E + c*‖∇E‖², c* = (−log(1−hκ)/(hκ) − 1)/(2κ):
    the fit finds c*, leaves no residual, and is flagged as indistinguishable from a rescaled h."""
    zs = np.array([0.1, 0.5, 0.9])
    with jax.enable_x64(True):
        fits = [implicit_rate.fit_implicit_coefficient(
            _quadratic, bea.gd_trajectory(_quadratic, jnp.array([1.0]), z / KAPPA, SAMPLES), z / KAPPA)
            for z in zs]
    exact = implicit_rate.quadratic_implicit_coefficient(zs / KAPPA, KAPPA)
    np.testing.assert_allclose([f.c for f in fits], exact, rtol=1e-8)
    # c*/(h/4) = 1 + 2z/3 + z²/2 + …: the departure grows without bound as hκ → 1
    np.testing.assert_allclose(exact[0] / (zs[0] / KAPPA / 4), 1 + 2 * zs[0] / 3 + zs[0] ** 2 / 2,
                               atol=2e-3)
    assert all(f.converged and f.explained > 1 - 1e-12 for f in fits)
    assert all(f.condition > 1e10 and not f.meaningful() for f in fits)
    # the one-step (linear) estimate carries the O(c²) bias that Gauss–Newton removes
    assert all(abs(f.linear - f.c) > 1e-3 * f.c for f in fits)
    assert np.isnan(implicit_rate.quadratic_implicit_coefficient(1.2 / KAPPA, KAPPA))


def test_coefficient_departs_and_the_fit_fails_towards_the_edge_of_stability():
    zs = [0.2, 1.0, 1.95]
    with jax.enable_x64(True):
        edge = implicit_rate.edge_study(MLP, MLP_THETA0, zs, SAMPLES)
    assert edge["converged"].all()
    ratio, explained = edge["ratio"].to_numpy(), edge["explained"].to_numpy()
    assert np.all(np.diff(ratio) > 0) and ratio[-1] > 2  # ĉ grows well past h/4
    assert np.all(np.diff(explained) < 0)
    assert explained[0] > 0.99 and explained[-1] < 0.3  # near h·λ_max = 2 the fit explains little


def test_bad_inputs_are_refused_before_compute():
    with jax.enable_x64(True):
        good = np.asarray(bea.gd_trajectory(_quadratic, jnp.array([1.0]), 0.1, 3))
        with pytest.raises(ConfigError, match="float64"):
            implicit_rate.fit_implicit_coefficient(_quadratic, good.astype(np.float32), 0.1)
        with pytest.raises(ConfigError, match="steps"):
            implicit_rate.fit_implicit_coefficient(_quadratic, good, 0.1, steps=[0, 2, 1, 3])
        with pytest.raises(ConfigError, match="shape"):
            implicit_rate.fit_implicit_coefficient(_quadratic, good[:1], 0.1)
        with pytest.raises(ConfigError, match="learning rate"):
            implicit_rate.fit_implicit_coefficient(_quadratic, good, -0.1)
        with pytest.raises(ConfigError, match="multiple"):
            implicit_rate.coefficient_study(_quadratic, jnp.array([1.0]), 0.1, [10], SAMPLES)
        with pytest.raises(ConfigError, match="zs"):
            implicit_rate.edge_study(_quadratic, jnp.array([1.0]), [2.0], 4)
