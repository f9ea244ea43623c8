"""Backward error analysis: modified fields against dense formulas, and error orders in float64.

Error orders are measured on the two-parameter model (x = 1, y = 0.6) from (2.8, 3.5) at
h = 0.1/n, n ∈ {50, 80, 125, 200, 320, 500}, i.e. h ∈ [2·10⁻⁴, 2·10⁻³] (h·λ_max(θ0) ≤ 0.06).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igrlib.maths import bea
from igrlib.config import ConfigError
from igrlib.experiments.two_param import loss_fn
from igrlib.maths.losses import modified_loss

T_ORDERS = 0.1
STEPS = np.array([50, 80, 125, 200, 320, 500])
KAPPA = 3.0


def _quadratic(theta):
    return 0.5 * KAPPA * jnp.sum(theta**2)


def _small_loss(theta):
    """A smooth non-quadratic loss on R³ (tanh regression on 4 points)."""
    A = jnp.array([[1.0, -0.5, 0.3], [0.2, 0.8, -1.1], [-0.7, 0.4, 0.9], [0.5, 0.5, 0.5]])
    c = jnp.array([0.3, -0.2, 0.5, 0.1])
    return 0.5 * jnp.sum((jnp.tanh(A @ theta) - c) ** 2) + 0.1 * jnp.sum(theta**4)


def _x2y(theta):
    return theta[0] ** 2 * theta[1]


def test_error_orders_on_two_parameter_model():
    with jax.enable_x64(True):
        study = bea.error_study(loss_fn(1.0, 0.6), jnp.array([2.8, 3.5]), T_ORDERS, STEPS)
    fits = bea.fitted_orders(study).set_index(["kind", "order"])
    for order in bea.ORDERS:
        assert abs(fits.loc[("local", order), "slope"] - (order + 2)) < 0.15
        assert abs(fits.loc[("global", order), "slope"] - (order + 1)) < 0.15
    # each order beyond gradient flow is a strict improvement at every h
    for kind in ("local", "global"):
        rows = study[study.kind == kind]
        errs = [rows[rows.order == o]["error"].to_numpy() for o in bea.ORDERS]
        assert np.all(errs[1] < errs[0]) and np.all(errs[2] < errs[1])


def test_one_step_matches_paper_worked_check():
    """A worked check of the book's backward-error-analysis chapter (flows integrated with RK4): ‖GD − flow‖ after one step."""
    with jax.enable_x64(True):
        E, theta0, hs = loss_fn(1.0, 0.6), jnp.array([2.8, 3.5]), [0.02, 0.01, 0.005]
        gf, first = bea.local_error(E, theta0, hs, 0), bea.local_error(E, theta0, hs, 1)
    np.testing.assert_allclose(gf, [0.183, 0.052, 0.0139], rtol=0.02)
    np.testing.assert_allclose(first, [0.068, 0.011, 0.0015], rtol=0.03)


@jax.jit
def _dense_fields(theta, h):
    """f₀, f₀ + h f₁ and f₂ from dense derivatives: −g, −(I + (h/2)H)g, ⅓ f′f′f + ¹⁄₁₂ f″(f, f)."""
    g = jax.grad(_small_loss)(theta)
    H = jax.hessian(_small_loss)(theta)
    T3 = jax.jacfwd(jax.hessian(_small_loss))(theta)  # T3[i, j, k] = ∂³E/∂θi∂θj∂θk
    f, fp, fpp = -g, -H, -T3
    f2 = fp @ fp @ f / 3 + jnp.einsum("ijk,j,k->i", fpp, f, f) / 12
    return f, -(jnp.eye(theta.size) + (h / 2) * H) @ g, f2


@partial(jax.jit, static_argnames="h")
def _library_fields(theta, h):
    return (
        bea.modified_field(_small_loss, h, 0)(theta),
        bea.modified_field(_small_loss, h, 1)(theta),
        -jax.grad(modified_loss(_small_loss, h))(theta),
        bea.second_order_term(_small_loss)(theta),
        bea.second_order_term_gradient_form(_small_loss)(theta),
        bea.modified_field(_small_loss, h, 2)(theta),
    )


def test_modified_fields_against_dense_derivatives():
    h = 0.07
    with jax.enable_x64(True):
        theta = jnp.array([0.4, -1.2, 0.9])
        # numpy copies: arithmetic on them below stays float64 outside the x64 context
        f, f_first, f2 = map(np.asarray, _dense_fields(theta, h))
        library = map(np.asarray, _library_fields(theta, h))
        lib_f, lib_first, lib_loss, lib_f2, lib_f2_form, lib_second = library
    np.testing.assert_allclose(lib_f, f, rtol=1e-14)
    # −∇[E + (h/4)‖∇E‖²] = −(I + (h/2)H)∇E, from the field and from igrlib.maths.losses.modified_loss
    np.testing.assert_allclose(lib_first, f_first, rtol=1e-12)
    np.testing.assert_allclose(lib_loss, f_first, rtol=1e-12)
    # f₂ = −∇[(1/12) gᵀHg] − (1/6) H²g, both as nested jvps and in gradient form
    np.testing.assert_allclose(lib_f2, f2, rtol=1e-12)
    np.testing.assert_allclose(lib_f2_form, f2, rtol=1e-12)
    np.testing.assert_allclose(lib_second, f_first + h**2 * f2, rtol=1e-12)


def test_second_order_field_is_not_a_gradient_for_x2y():
    """A gradient field has a symmetric Jacobian. f₁ does for E = x²y; f₂ does not."""
    with jax.enable_x64(True):
        theta = jnp.array([0.7, -0.4])
        jacobians = jax.jit(lambda t: (jax.jacfwd(bea.first_order_term(_x2y))(t),
                                       jax.jacfwd(bea.second_order_term(_x2y))(t)))
        J1, J2 = map(np.asarray, jacobians(theta))
    assert abs(J1[0, 1] - J1[1, 0]) < 1e-12
    assert abs(J2[0, 1] - J2[1, 0]) > 1e-2


def test_quadratic_closed_forms_and_numerics():
    h = 0.1
    with jax.enable_x64(True):
        theta0 = jnp.array([1.5])
        for order in bea.ORDERS:
            field = jax.jit(bea.modified_field(_quadratic, h, order))(theta0)
            rate = bea.quadratic_modified_rate(h, KAPPA, order)
            np.testing.assert_allclose(field, -rate * theta0, rtol=1e-13)
        # the series of the exact rate: error of the order-k truncation is O((hκ)^{k+1})
        small = np.array([1e-3, 2e-3])
        for order in bea.ORDERS:
            exact = bea.quadratic_exact_rate(small, KAPPA)
            gap = exact - bea.quadratic_modified_rate(small, KAPPA, order)
            assert abs(np.log(gap[1] / gap[0]) / np.log(2) - (order + 1)) < 0.01
        # flows integrated numerically match the closed-form one-step error |θ0|·z·ρ_k(z)
        zs = np.array([0.05, 0.3, 0.9, 1.5])
        for order in bea.ORDERS:
            numeric = bea.local_error(_quadratic, theta0, zs / KAPPA, order)
            closed = 1.5 * zs * bea.quadratic_relative_error(zs, order)
            np.testing.assert_allclose(numeric, closed, rtol=1e-8)
        table = bea.breakdown(_quadratic, theta0, zs)
        for order in bea.ORDERS:
            rel = table[table.order == order]["relative"].to_numpy()
            np.testing.assert_allclose(rel, bea.quadratic_relative_error(zs, order), rtol=1e-6)
    assert np.isnan(bea.quadratic_exact_rate(0.5, KAPPA))  # hκ = 1.5: GD flips sign, no real flow


def test_gd_trajectory_final_and_step_agree():
    with jax.enable_x64(True):
        E, theta0 = loss_fn(1.0, 0.6), jnp.array([2.8, 3.5])
        path = bea.gd_trajectory(E, theta0, 0.01, 7)
        assert path.shape == (8, 2)
        np.testing.assert_array_equal(path[1], bea.gd_step(E, theta0, 0.01))
        np.testing.assert_allclose(path[-1], bea.gd_final(E, theta0, 0.01, 7), rtol=1e-15)


def test_sharpness_matches_dense_hessian():
    with jax.enable_x64(True):
        theta = jnp.array([1.0, 0.7])
        E = loss_fn(1.0, 0.6)
        top = jnp.linalg.eigvalsh(jax.jit(jax.hessian(E))(theta))[-1]
        assert abs(bea.sharpness(E, theta) - top) < 1e-9 * top


def test_fit_order_recovers_power_law():
    hs = np.geomspace(1e-3, 1e-1, 7)
    assert abs(bea.fit_order(hs, 3.0 * hs**2.5) - 2.5) < 1e-12
    with pytest.raises(ConfigError):
        bea.fit_order(hs, -hs)


@pytest.mark.parametrize(
    "call",
    [
        lambda E, t: bea.local_error(E, t, [0.01, -0.01], 1),
        lambda E, t: bea.local_error(E, t, [0.01], 3),
        lambda E, t: bea.local_error(E, t, [], 0),
        lambda E, t: bea.global_error(E, t, [0.03], 0.1, 0),  # 0.1/0.03 is not whole
        lambda E, t: bea.global_error(E, t, [0.01], -1.0, 0),
        lambda E, t: bea.horizon_rates(1.0, [10, 0]),
        lambda E, t: bea.breakdown(E, t, [0.5, 2.0]),
        lambda E, t: bea.gd_trajectory(E, t, 0.1, -1),
        lambda E, t: bea.modified_field(E, 0.1, 5),
        lambda E, t: bea.modified_flow(E, t, -0.1, 1, 1.0),
    ],
)
def test_bad_input_raises_config_error(call):
    with jax.enable_x64(True):
        with pytest.raises(ConfigError):
            call(loss_fn(1.0, 0.6), jnp.array([2.8, 3.5]))


def test_error_study_refuses_float32():
    E = partial(lambda theta: jnp.sum(theta**2))
    with pytest.raises(ConfigError, match="float64"):
        bea.local_error(E, jnp.array([1.0, 2.0], dtype=jnp.float32), [0.01], 0)
