"""Heavy-ball and Nesterov momentum: the modified equation derived symbolically and its error
orders measured in float64.

Numerical problem: the two-parameter model (x = 1, y = 0.6) from (2.8, 3.5), β = 0.5, at
h = 0.1/n, n ∈ {50, …, 500} (h ∈ [2·10⁻⁴, 2·10⁻³], so h·λ_max(θ0)/(1−β) ≤ 0.12).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

from igrlib.config import ConfigError
from igrlib.experiments.two_param import loss_fn
from igrlib.maths import bea, bea_momentum
from igrlib.maths.order_fits import fitted_slopes

T = 0.1
STEPS = np.array([50, 80, 125, 200, 320, 500])
BETA = 0.5

# --- symbolic ------------------------------------------------------------------------------------

h, a, b, beta, c, nu = sp.symbols("h a b beta c nu")
VARS = sp.Matrix([a, b])
E_SYM = (a * b - sp.Rational(3, 5)) ** 2 / 2 + a**3 / 3


def _truncate(expr, order=2):
    expr = sp.expand(expr)
    return sum(expr.coeff(h, k) * h**k for k in range(order + 1))


def _residual(weight):
    """Coefficients of h¹, h², h³ in θ(t+h) − θ − β(θ − θ(t−h)) + h∇E(θ + νβ(θ − θ(t−h))), with
    θ(t) the flow of −∇[E + weight·h c/(4(1−β)²)‖∇E‖²]/(1−β) (Lie series to h², residual ÷ h)."""
    g = sp.Matrix([E_SYM]).jacobian(VARS).T
    E_mod = E_SYM + weight * h * c / (4 * (1 - beta) ** 2) * (g.T * g)[0]
    F = -sp.Matrix([E_mod]).jacobian(VARS).T / (1 - beta)
    FF = F.jacobian(VARS) * F

    def shift(s):  # θ(t + s·h) − θ to second order
        return (s * h * F + (s * h) ** 2 / 2 * FF).applyfunc(_truncate)

    back = shift(-1)
    look = -nu * beta * back  # θ + νβ(θ − θ(t−h)) − θ
    H = g.jacobian(VARS)
    grad_at_look = g + H * look  # O(h²) terms of the look-ahead only enter at h³ after × h
    residual = shift(1) + beta * back + h * grad_at_look
    return [[sp.factor(_truncate(r).coeff(h, k)) for k in (1, 2)] for r in residual]


def test_modified_equation_symbolically():
    """The h¹ coefficient vanishes; the h² one is linear in c and vanishes only at c(β) (local
    error O(h³)), which is the library's coefficient; gradient flow leaves an h² term."""
    for method, weight_nu in bea_momentum.METHODS.items():
        coeffs = [[k.subs(nu, weight_nu) for k in row] for row in _residual(1)]
        assert all(sp.simplify(row[0]) == 0 for row in coeffs)
        (c_beta,) = sp.solve(coeffs[0][1], c)
        assert all(sp.simplify(row[1].subs(c, c_beta)) == 0 for row in coeffs)
        expected = {"heavy_ball": 1 + beta, "nesterov": 1 - beta + 2 * beta**2}[method]
        assert sp.simplify(c_beta - expected) == 0
        for value in (0.0, 0.3, 0.9):
            assert float(c_beta.subs(beta, value)) == pytest.approx(
                bea_momentum.regularizer_coefficient(value, method), rel=1e-15)
        gf = [[k.subs(nu, weight_nu) for k in row] for row in _residual(0)]
        assert any(sp.simplify(row[1]) != 0 for row in gf)


# --- float64 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studies():
    with jax.enable_x64(True):
        E, theta0 = loss_fn(1.0, 0.6), jnp.array([2.8, 3.5])
        return {method: bea_momentum.error_study(E, theta0, T, STEPS, BETA, method)
                for method in bea_momentum.METHODS}


@pytest.mark.parametrize("method", list(bea_momentum.METHODS))
def test_error_orders(studies, method):
    fits = fitted_slopes(studies[method]).set_index(["kind", "v0", "flow start", "order"])
    for key, row in fits.iterrows():
        if key == ("global", "v₀ = 0", "θ₀", 1):
            # the initial layer: started at rest, the modified flow is no better than order 1
            assert row.slope < 1.3, key
        else:
            assert abs(row.deviation) < 0.15, (key, row.slope)
    # from a consistent buffer the modified flow wins at every rate (rows run from the largest h
    # down), by a factor growing as 1/h
    study = studies[method]
    for kind in ("local", "global"):
        rows = study[(study.kind == kind) & (study.v0 == "consistent v₀")]
        gf, modified = (rows[rows.order == o].error.to_numpy() for o in (0, 1))
        assert np.all(modified < gf) and modified[-1] < gf[-1] / 10


def test_beta_zero_is_gradient_descent():
    with jax.enable_x64(True):
        E, theta = loss_fn(1.0, 0.6), jnp.array([1.3, -0.4])
        gd_field = jax.jit(bea.modified_field(E, 0.01, 1))(theta)
        for method in bea_momentum.METHODS:
            field = jax.jit(bea_momentum.momentum_modified_field(E, 0.01, 0.0, method))(theta)
            np.testing.assert_allclose(field, gd_field, rtol=1e-14)
            final = bea_momentum.momentum_final(E, theta, jnp.zeros(2), 0.01, 0.0, method, 7)
            np.testing.assert_allclose(final, bea.gd_final(E, theta, 0.01, 7), rtol=1e-14)
    assert bea_momentum.regularizer_factor(0.9, "heavy_ball") == pytest.approx(19.0, rel=1e-14)
    assert bea_momentum.regularizer_factor(0.9, "nesterov") == pytest.approx(17.2, rel=1e-14)


def test_bad_inputs_raise_before_compute():
    E = loss_fn(1.0, 0.6)
    with pytest.raises(ConfigError, match="float64"):
        bea_momentum.error_study(E, jnp.array([2.8, 3.5], dtype=jnp.float32), T, STEPS, BETA,
                                 "heavy_ball")
    with pytest.raises(ConfigError, match="β"):
        bea_momentum.regularizer_coefficient(1.0, "heavy_ball")
    with pytest.raises(ConfigError, match="method"):
        bea_momentum.momentum_modified_field(E, 0.01, 0.5, "adam")
    with pytest.raises(ConfigError, match="steps"):
        bea_momentum.momentum_final(E, jnp.zeros(2), jnp.zeros(2), 0.01, 0.5, "nesterov", 2.5)
