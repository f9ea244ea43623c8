"""The two-parameter model E = ½(y − abx)²: closed forms, conservation law, Figure 1 claims."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import sympy as sp

from igrlib.maths import bea
from igrlib.config import ConfigError
from igrlib.experiments import two_param as tp
from igrlib.maths.losses import igr_lambda, modified_loss, r_ig

X, Y = 1.0, 0.6
POINTS = [(2.8, 3.5), (0.3, -1.7), (1.0, 0.7), (-0.5, 2.2)]


@pytest.fixture(scope="module")
def cfg():
    # rates up to just below h* ≈ 0.1087, where GD from (2.8, 3.5) switches branch
    # and beyond: on the mirror branch at 0.12 and 0.16, back on a, b > 0 at 0.2
    return tp.config("smoke", h_grid=tuple(np.linspace(0.002, 0.108, 40)), h_beyond=(0.12, 0.16, 0.2),
                     norm_horizon=50.0)


def test_igr_lambda_rig_and_modified_loss_closed_forms():
    h = 0.04
    E = tp.loss_fn(X, Y)
    assert igr_lambda(h, 2) == h / 2
    with jax.enable_x64(True):
        modified = jax.jit(modified_loss(E, h))
        for a, b in POINTS:
            theta = jnp.array([a, b])
            r = Y - a * b * X
            # R_IG = ‖∇E‖²/m with ∇E = −r x (b, a)
            closed_rig = r**2 * X**2 * (a**2 + b**2) / 2
            assert float(r_ig(jax.grad(E)(theta))) == pytest.approx(closed_rig, rel=1e-13)
            closed = float(tp.modified_loss_closed(theta, X, Y, igr_lambda(h, 2)))
            assert float(modified(theta)) == pytest.approx(closed, rel=1e-13)


def test_hessian_eigenvalues_closed_form():
    E = tp.loss_fn(X, Y)
    with jax.enable_x64(True):
        hessian = jax.jit(jax.hessian(E))
        for a, b in POINTS:
            theta = jnp.array([a, b])
            np.testing.assert_allclose(tp.hessian_eigenvalues(theta, X, Y),
                                       jnp.linalg.eigvalsh(hessian(theta)), rtol=1e-12, atol=1e-12)
        # at a minimum: 0 and x²(a² + b²), least at the least-norm minimum
        s = tp.flattest_minimum(X, Y)[0]
        at_min = tp.hessian_eigenvalues(jnp.array([s, s]), X, Y)
        np.testing.assert_allclose(at_min, [0, 2 * X * Y], atol=1e-12)
    assert tp.min_norm(X, Y) == pytest.approx(np.hypot(s, s), rel=1e-15)


def test_gd_step_factor_on_conserved_quantity(cfg):
    table = tp.conservation(cfg)
    gd = table[table.path.str.startswith("GD")].dropna()
    assert set(gd.path) == {"GD h_S", "GD h_M", "GD h_L"}
    assert np.max(np.abs(gd.factor - gd.predicted)) <= 1e-12
    # every step shrinks |a² − b²|, and large rates shrink it more
    assert np.all(gd.predicted <= 1)
    q_end = table.groupby("path").q.last().abs()
    assert q_end["GD h_L"] < q_end["GD h_M"] < q_end["GD h_S"] < q_end["gradient flow"]
    flow = table[table.path == "gradient flow"].q
    assert np.max(np.abs(flow - flow.iloc[0])) < 1e-9


def test_final_norm_decreases_with_learning_rate(cfg):
    table = tp.final_norms(cfg)
    gd = table[(table.method == "GD") & (table.region == "grid")]
    assert np.all(gd.loss < 1e-20)  # every run converged to the hyperbola of minima
    assert np.all(gd.branch == "a,b>0")
    assert np.all(np.diff(gd.norm.to_numpy()) < 0)
    assert np.all(gd.norm >= tp.min_norm(X, Y) - 1e-12)
    assert gd.norm.iloc[-1] < tp.min_norm(X, Y) + 1e-3  # h ≈ h*: the flattest minimum itself
    # the gradient-flow end is the h → 0 limit, and the modified flows agree with GD as h → 0
    gf_norm = np.linalg.norm(tp.gradient_flow_end(cfg))
    assert gd.norm.iloc[0] < gf_norm
    for order in ("1st", "2nd"):
        mf = table[(table.method == f"modified flow ({order} order)") & (table.region == "grid")]
        assert np.all(np.diff(mf.norm.to_numpy()) < 0)
        assert abs(mf.norm.iloc[0] - gd.norm.iloc[0]) < 0.1 * abs(gf_norm - gd.norm.iloc[0])
    beyond = table[(table.method == "GD") & (table.region == "beyond")].set_index("h")
    assert list(beyond.branch) == ["a,b<0", "a,b<0", "a,b>0"]
    # not monotone beyond h*: the norm rises on the mirror branch, then GD returns next to the
    # flattest minimum (0.7746, 0.7746) at h = 0.2
    assert beyond.norm[0.12] < beyond.norm[0.16] and beyond.norm[0.2] < tp.min_norm(X, Y) + 0.01
    np.testing.assert_allclose(beyond.loc[0.2, ["a", "b"]].to_numpy(float), [0.7393, 0.8115], atol=1e-3)
    assert tp.branch_switch(table) == (0.108, 0.12)


def test_branch_switch_needs_a_bracket():
    rows = lambda branches: pd.DataFrame(dict(method="GD", h=[0.1, 0.2, 0.3], branch=branches))  # noqa: E731
    assert tp.branch_switch(rows(["a,b>0", "a,b<0", "a,b>0"])) == (0.1, 0.2)
    for branches in (["a,b>0"] * 3, ["a,b<0"] * 3, ["a,b<0", "a,b>0", "a,b>0"]):
        with pytest.raises(ConfigError, match="bracket"):
            tp.branch_switch(rows(branches))


def test_second_order_field_of_the_model_is_not_a_gradient():
    """f₂ = ⅓f′f′f + ¹⁄₁₂f″(f, f), f = −∇E, for E = ½(y − abx)², derived with sympy: its curl is
    −(x⁵/3)(a − b)(a + b)(a² + b²)(abx − y), zero only on a = ±b and on the minima; and the same
    f₂ is what bea.second_order_term computes, at every test point."""
    a, b, x, y = sp.symbols("a b x y", real=True)
    theta = sp.Matrix([a, b])
    f = -sp.Matrix([sp.diff(sp.Rational(1, 2) * (y - a * b * x) ** 2, v) for v in theta])
    jac = f.jacobian(theta)
    fpp = sp.Matrix([sum(sp.diff(f[i], theta[j], theta[k]) * f[j] * f[k]
                         for j in range(2) for k in range(2)) for i in range(2)])
    f2 = jac * jac * f / 3 + fpp / 12
    curl = sp.diff(f2[1], a) - sp.diff(f2[0], b)
    assert sp.expand(curl + x**5 / 3 * (a - b) * (a + b) * (a**2 + b**2) * (a * b * x - y)) == 0
    numeric = sp.lambdify((a, b, x, y), list(f2))
    with jax.enable_x64(True):
        field = bea.second_order_term(tp.loss_fn(X, Y))
        for point in POINTS:
            np.testing.assert_allclose(field(jnp.asarray(point, jnp.float64)), numeric(*point, X, Y),
                                       rtol=1e-12, atol=1e-12)


def test_trajectories_converge_from_both_starts(cfg):
    for which in ("start", "far"):
        table = tp.trajectories(cfg, which)
        ends = table.groupby("path").last()
        assert set(ends.index) == {"GD h_S", "GD h_M", "GD h_L", "gradient flow", "modified flow"}
        assert np.all(ends.loss < 1e-8)
        np.testing.assert_allclose(ends.loc["gradient flow", ["a", "b"]].to_numpy(float),
                                   tp.gradient_flow_end(cfg, which), rtol=1e-8)
        # larger rates end at flatter (smaller-norm) minima; the modified flow lies between GD
        # at h_M and gradient flow
        norm = ends.norm
        assert norm["GD h_L"] < norm["GD h_M"] < norm["GD h_S"] < norm["gradient flow"]
        assert norm["GD h_M"] < norm["modified flow"] < norm["gradient flow"]


def test_egr_mimics_a_larger_learning_rate(cfg):
    table = tp.egr(cfg)
    egr = table[table.method == "EGR"]
    gd = table[table.method == "GD at h_eff"]
    flow = table[table.method == "modified flow at h_eff"]
    assert np.all(np.diff(egr.norm.to_numpy()) < 0)  # more penalty, flatter minimum
    assert egr.norm.iloc[0] == pytest.approx(gd.norm.iloc[0], rel=1e-12)  # μ = 0: plain GD
    # EGR at μ follows the first-order modified flow at h_eff = h' + 4μ, much closer than the
    # gradient flow does
    gf_norm = np.linalg.norm(tp.gradient_flow_end(cfg))
    gap = np.abs(flow.norm.to_numpy() - egr.norm.to_numpy())
    assert np.all(gap[1:] < 0.1 * (gf_norm - egr.norm.to_numpy()[1:]))


@pytest.mark.parametrize(
    "overrides",
    [
        {"h_m": -0.02},
        {"h_s": 0.05},  # not h_s < h_m < h_l
        {"h_l": 2.0},  # ≥ 1/(xy): no stable minimum
        {"x": 0.0},
        {"far_rates": (1e-5, 1e-6, 1e-4)},
        {"mu_grid": (0.0, -0.01)},
        {"breakdown_z": (0.5, 2.5)},
        {"bea_steps": (10, 0)},
        {"learning_rate": 0.1},  # unknown key
    ],
)
def test_bad_config_raises(overrides):
    with pytest.raises(ConfigError):
        tp.config("smoke", **overrides)


def test_bad_profile_and_start_raise():
    with pytest.raises(ConfigError):
        tp.config("laptop")
    with pytest.raises(ConfigError):
        tp.trajectories(tp.config("smoke"), "middle")
