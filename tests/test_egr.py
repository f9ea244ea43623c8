"""Explicit gradient regularization: the wrapper and the optax transform against the gradient of
``E + μ‖∇E‖²`` computed directly (float64), the unit conversions, and the EGR MLP experiment's
grid and analysis on synthetic records."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree

from igrlib.training import egr
from igrlib.maths import losses, models
from igrlib.config import ConfigError
from igrlib.experiments import egr_mlp

MU = 0.3
N_EXAMPLES, N_FEATURES, WIDTH = 12, 6, 5


@functools.cache
def _problem():
    """A 2-hidden-layer tanh MLP (Haiku parameters), data, and in numpy: flat θ, E, ∇E, dense H."""
    with jax.enable_x64(True):
        model = models.mlp(WIDTH, depth=2, num_classes=3, activation="tanh")
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((N_EXAMPLES, N_FEATURES)))
        y = jnp.asarray(rng.integers(0, 3, N_EXAMPLES))
        params, _ = model.init(jax.random.key(1), x)
        params = jax.tree_util.tree_map(lambda p: p + 0.2 * jnp.ones_like(p), params)  # nonzero biases

        def loss_aux(p, xb, yb):
            logits, _ = model.apply(p, {}, xb, True)
            return losses.cross_entropy(logits, yb), logits

        flat, unravel = ravel_pytree(params)
        flat_loss = lambda v: loss_aux(unravel(v), x, y)[0]  # noqa: E731
        value, g, hess = jax.jit(
            lambda v: (flat_loss(v), jax.grad(flat_loss)(v), jax.hessian(flat_loss)(v)))(flat)
        dense = {"E": float(value), "g": np.asarray(g), "H": np.asarray(hess)}
        return params, x, y, loss_aux, dense


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def _direct(loss_aux, mu):
    """∇ of E + μ‖∇E‖², written out by nested jax.grad (no igrlib code)."""
    energy = lambda p, x, y: loss_aux(p, x, y)[0]  # noqa: E731

    def penalised(p, x, y):
        g = jax.grad(energy)(p, x, y)
        return energy(p, x, y) + mu * sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(g))

    return jax.value_and_grad(penalised)


def test_problem_is_float64_with_a_large_penalty_term():
    params, _, _, _, d = _problem()
    assert d["g"].dtype == np.float64
    penalty = 2 * MU * d["H"] @ d["g"]
    # the check below must tell ∇E_μ from ∇E
    assert np.linalg.norm(penalty) > 0.05 * np.linalg.norm(d["g"]) > 0


@pytest.mark.parametrize("method", ["hvp", "double_backprop"])
def test_wrapper_matches_direct_gradient_exactly(method):
    params, x, y, loss_aux, d = _problem()

    @jax.jit
    def both(p):
        return (_direct(loss_aux, MU)(p, x, y),
                egr.egr_value_and_grad(loss_aux, MU, method, has_aux=True)(p, x, y))

    (direct_value, direct_grad), ((value, logits), grad) = both(params)
    dense = d["g"] + 2 * MU * d["H"] @ d["g"]
    np.testing.assert_allclose(_flat(direct_grad), dense, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_flat(grad), _flat(direct_grad), rtol=0, atol=1e-12)
    np.testing.assert_allclose(value, direct_value, rtol=1e-14)
    np.testing.assert_allclose(value, d["E"] + MU * d["g"] @ d["g"], rtol=1e-14)
    assert logits.shape == (N_EXAMPLES, 3)


def test_wrapper_finite_difference_error_is_first_order():
    params, x, y, loss_aux, d = _problem()
    exact = d["g"] + 2 * MU * d["H"] @ d["g"]
    radii = (1e-2, 1e-3, 1e-4)
    grads = jax.jit(lambda p: [egr.egr_value_and_grad(loss_aux, MU, "finite_difference",
                                                      has_aux=True, fd_radius=eps)(p, x, y)[1]
                               for eps in radii])(params)
    errors = [np.linalg.norm(_flat(g) - exact) for g in grads]
    assert errors[-1] < 1e-3 * np.linalg.norm(exact)
    for big, small in zip(errors, errors[1:]):
        assert 7 < big / small < 13, errors  # O(ε): a 10x smaller radius, a ~10x smaller error


def test_wrapper_without_aux_is_value_and_grad_of_the_penalised_loss():
    params, x, y, loss_aux, _ = _problem()
    energy = lambda p, xb, yb: loss_aux(p, xb, yb)[0]  # noqa: E731
    value, grad = jax.jit(egr.egr_value_and_grad(energy, MU))(params, x, y)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(losses.egr_loss(energy, MU)))(params, x, y)
    np.testing.assert_allclose(value, ref_value, rtol=1e-14)
    np.testing.assert_allclose(_flat(grad), _flat(ref_grad), rtol=0, atol=1e-12)


def test_wrapper_with_mu_zero_is_the_plain_gradient():
    params, x, y, loss_aux, d = _problem()
    (value, _), grad = jax.jit(egr.egr_value_and_grad(loss_aux, 0.0, has_aux=True))(params, x, y)
    np.testing.assert_allclose(_flat(grad), d["g"], rtol=0, atol=1e-14)
    np.testing.assert_allclose(value, d["E"], rtol=1e-15)


def test_wrapper_accepts_a_traced_mu():
    params, x, y, loss_aux, _ = _problem()
    mus = jnp.asarray([0.0, MU])
    grads = jax.jit(jax.vmap(lambda m: egr.egr_value_and_grad(loss_aux, m, has_aux=True)(params, x, y)[1]))(mus)
    direct = jax.jit(_direct(loss_aux, MU))(params, x, y)[1]
    np.testing.assert_allclose(_flat(jax.tree_util.tree_map(lambda a: a[1], grads)), _flat(direct),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["hvp", "double_backprop", "finite_difference"])
def test_transform_first_in_a_chain_gives_the_penalised_sgd_step(method):
    params, x, y, loss_aux, _ = _problem()
    h = 0.05
    tx = optax.chain(egr.egr_transform(MU, method, fd_radius=1e-5), optax.sgd(h))
    energy = lambda p: loss_aux(p, x, y)[0]  # noqa: E731

    @jax.jit
    def step(p):
        state = tx.init(p)
        updates, _ = tx.update(jax.grad(energy)(p), state, p, value_fn=energy, unused_extra=1.0)
        return updates, _direct(loss_aux, MU)(p, x, y)[1]

    updates, direct = step(params)
    tol = 1e-7 if method == "finite_difference" else 1e-13  # O(ε) with ε = 1e-5
    np.testing.assert_allclose(_flat(updates), -h * _flat(direct), rtol=0,
                               atol=tol * np.abs(_flat(direct)).max())


def test_transform_needs_params():
    params, x, y, loss_aux, _ = _problem()
    tx = egr.egr_transform(MU)
    with pytest.raises(ConfigError, match="params"):
        tx.update(params, tx.init(params), None, value_fn=lambda p: loss_aux(p, x, y)[0])


@pytest.mark.parametrize("mu", [-0.1, float("nan"), float("inf"), "big", None])
def test_bad_mu_is_a_config_error(mu):
    with pytest.raises(ConfigError, match="mu"):
        egr.egr_value_and_grad(lambda p: p, mu)
    with pytest.raises(ConfigError, match="mu"):
        egr.egr_transform(mu)


def test_bad_method_is_a_config_error():
    with pytest.raises(ConfigError, match="penalty method"):
        egr.egr_value_and_grad(lambda p: p, 0.1, "newton")
    with pytest.raises(ConfigError, match="penalty method"):
        egr.egr_transform(0.1, "newton")
    with pytest.raises(ConfigError, match="repeats"):
        egr.step_cost(lambda p: (p, None), 1.0, (), repeats=0)


def test_forms_and_conversions():
    """E + μ‖∇E‖² = E + μ'·R_IG with μ' = μ·m, = the IGR modified loss of h = 4μ; λ_equiv adds up."""
    params, x, y, loss_aux, d = _problem()
    energy = lambda p: loss_aux(p, x, y)[0]  # noqa: E731
    m = d["g"].size
    mu = 0.0125
    egr_value = jax.jit(losses.egr_loss(energy, mu))(params)
    np.testing.assert_allclose(egr_value, d["E"] + (mu * m) * (d["g"] @ d["g"] / m), rtol=1e-14)
    np.testing.assert_allclose(egr_value, jax.jit(losses.modified_loss(energy, 4 * mu))(params), rtol=1e-14)
    assert egr.lambda_equiv(0.02, 0.0, m) == pytest.approx(losses.igr_lambda(0.02, m), rel=1e-15)
    assert egr.lambda_equiv(0.0, mu, m) == pytest.approx(losses.igr_lambda(4 * mu, m), rel=1e-15)
    assert egr.lambda_equiv(0.02, mu, m) == pytest.approx((0.02 / 4 + mu) * m, rel=1e-15)


def test_step_cost_times_every_method():
    params, x, y, loss_aux, _ = _problem()
    seconds = egr.step_cost(loss_aux, params, (x, y), repeats=2)
    assert set(seconds) == {"plain", *losses.PENALTY_METHODS}
    assert all(s > 0 for s in seconds.values())


# --------------------------------------------------------------------- the EGR MLP experiment


def test_grid_arms_and_deduplication():
    configs = [c["train"] for c in egr_mlp.grid("cpu")]
    spec = egr_mlp.PROFILES["cpu"]
    n_seeds, n_widths = len(spec["seed"]), len(spec["width"])
    assert len(configs) == n_widths * n_seeds * (len(spec["mu"]) + len(spec["plain_lr"]))
    egr_runs = [c for c in configs if c["method"] == "egr"]
    assert {c["hparams"]["mu"] for c in egr_runs} == {mu for mu in spec["mu"] if mu > 0}
    assert {c["learning_rate"] for c in egr_runs} == set(spec["small_lr"])
    plain = [c for c in configs if c["method"] == "sgd"]
    assert all("mu" not in c["hparams"] for c in plain)
    assert {c["learning_rate"] for c in plain} == set(spec["small_lr"]) | set(spec["plain_lr"])
    # the μ = 0 run at the small rate is also a plain run: a rate in both arms is not run twice
    small = spec["small_lr"][0]
    assert len(egr_mlp.grid("cpu", plain_lr=(small, 0.5))) == n_widths * n_seeds * (len(spec["mu"]) + 1)
    assert len(egr_mlp.grid("smoke", mu=(0.0, 0.0))) == len(egr_mlp.grid("smoke", mu=(0.0,)))


@pytest.mark.parametrize("overrides,match", [
    (dict(mu=(-0.1,)), "mu"), (dict(epochs=0), "epochs"), (dict(widht=(50,)), "widht"),
    (dict(penalty_method="newton"), "penalty_method")])
def test_grid_rejects_bad_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        egr_mlp.grid("smoke", **overrides)


def _fake_runs() -> pd.DataFrame:
    """Records as the store would give them: R_IG falls and accuracy rises with h + 4μ up to the
    plain arm's largest rate, then the largest μ hurts; three seeds, small noise."""
    rng = np.random.default_rng(0)
    rows = []
    m = 1000
    arms = [(0.02, mu) for mu in (0.0, 0.0075, 0.02, 0.12, 0.5)] + [(h, 0.0) for h in (0.05, 0.1, 0.5)]
    for seed in range(3):
        for h, mu in arms:
            h_eq = h + 4 * mu
            acc = 0.9 + 0.01 * np.log10(h_eq / 0.02) - (0.2 if mu == 0.5 else 0)
            rows.append(dict(
                id=f"{seed}-{h}-{mu}", status="ok", width=50, learning_rate=h, mu=mu, seed=seed,
                method="egr" if mu > 0 else "sgd", num_params=m, reached_0p95=mu != 0.5,
                test_acc=acc + 1e-4 * rng.standard_normal(), final_test_acc=acc,
                r_ig=1e-3 / h_eq * (1 + 0.01 * rng.standard_normal()), train_loss_full=0.1,
                mean_abs_slope=0.1 / h_eq, lambda_max=10 / h_eq))
    return pd.DataFrame(rows)


def test_tidy_adds_the_lambda_axis():
    df = egr_mlp.tidy(_fake_runs(), 0.95)
    row = df[(df["learning_rate"] == 0.02) & (df["mu"] == 0.12)].iloc[0]
    assert row["arm"] == "EGR" and row["h_equiv"] == pytest.approx(0.5)
    assert row["lambda_equiv"] == pytest.approx((0.02 + 0.48) * 1000 / 4)
    assert row["mu_prime"] == pytest.approx(120)
    assert set(df.loc[df["mu"] == 0, "arm"]) == {"EGR", "plain"}  # μ = 0 at the small h is the EGR baseline
    assert set(df.loc[df["mu"] == 0.5, "category"]) == {"below threshold"}
    assert egr_mlp.matched_mu_limit(df) == pytest.approx(0.12)


def test_findings_on_synthetic_records():
    table = egr_mlp.findings(_fake_runs(), 0.95).set_index("claim")
    assert (table.loc[["EGR lowers R_IG", "EGR raises test accuracy (moderate μ)", "EGR flattens: slope falls",
                       "EGR flattens: λ_max falls"], "verdict"] == "reproduced").all(), table
    # the synthetic runs depend on h + 4μ only: each EGR setting matches its plain rate, paired by seed
    arm_rows = table[table.index.str.startswith("EGR ≈ larger h")]
    assert len(arm_rows) == 6 and (arm_rows["verdict"] == "reproduced").all(), arm_rows
    # two μ levels (0.12 kept, 0.5 not) in three seeds: a permutation test cannot go below 1/8
    assert table.loc["too large μ hurts", "verdict"] == "partly"
    # flip the accuracy trend: the verdicts must follow
    runs = _fake_runs()
    runs["test_acc"] = -runs["test_acc"]
    flipped = egr_mlp.findings(runs, 0.95).set_index("claim")
    assert flipped.loc["EGR raises test accuracy (moderate μ)", "verdict"] == "not reproduced"


def test_matched_pairs_pair_each_mu_with_its_plain_rate():
    runs = _fake_runs()
    pairs = egr_mlp.matched_pairs(runs, 0.95)
    assert list(pairs["mu"]) == [0.0075, 0.02, 0.12]  # μ = 0.5 is below threshold, h + 4μ = 2.02 unmatched
    np.testing.assert_allclose(pairs["h_equiv"], [0.05, 0.1, 0.5])
    assert (pairs[["n_baseline", "n_egr", "n_plain"]] == 3).all().all()
    first = pairs.iloc[0]
    plain = runs[(runs["method"] == "sgd") & np.isclose(runs["learning_rate"], 0.05)]
    assert first["test_acc_plain"] == pytest.approx(plain["test_acc"].mean(), rel=1e-12)
    base = runs[(runs["mu"] == 0) & np.isclose(runs["learning_rate"], 0.02)]
    assert first["r_ig_baseline"] == pytest.approx(base["r_ig"].mean(), rel=1e-12)
    # the synthetic accuracy depends on h + 4μ only, so EGR and plain agree to the noise
    np.testing.assert_allclose(pairs["test_acc_egr"], pairs["test_acc_plain"], atol=1e-3)
