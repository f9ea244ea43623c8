"""Update rules: each method against its textbook recursion on a tiny float64 logistic regression,
the vmapped-state property (per-run hyperparameters in the optimizer state), validation, and the
stability quantity against the divergence threshold of the rule on a 1-D quadratic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from igrlib.config import ConfigError
from igrlib.maths import losses
from igrlib.training import methods, micro

STEPS = 4
LR = 0.3


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _data():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 2)))
    y = jnp.asarray(rng.integers(0, 2, 8) * 2.0 - 1.0)
    params = {"w": jnp.asarray([0.3, -0.2]), "b": jnp.asarray(0.1)}
    return x, y, params


def _problem():
    """Logistic regression with 3 parameters in two leaves: E(θ) = mean softplus(−y(x·w + b))."""
    x, y, params = _data()

    def loss(p):
        return jnp.mean(jax.nn.softplus(-y * (x @ p["w"] + p["b"])))

    flat0, unravel = ravel_pytree(params)
    flat_loss = lambda t: loss(unravel(t))  # noqa: E731
    return params, loss, flat0, flat_loss


def _run(method, lr, hp, params, loss, steps=STEPS):
    """``steps`` updates of ``method`` the way the training program calls them."""
    grad = jax.grad(loss)
    tx = method.transform(lr, **hp)

    def step(p, state):
        updates, state = tx.update(grad(p), state, p, value_fn=loss, grad_fn=grad)
        return optax.apply_updates(p, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return ravel_pytree(params)[0]


def _reference(direction, flat0, lr, steps=STEPS):
    """θ ← θ − h·d(θ) for ``steps`` steps, d the rule's step direction from the textbook."""
    theta, direction = flat0, jax.jit(direction)
    for _ in range(steps):
        theta = theta - lr * direction(theta)
    return theta


def _unit(v):
    return v / jnp.linalg.norm(v)


# --------------------------------------------------------------------------------------------
# Each rule against its textbook recursion


def test_sgd_and_gd_are_gradient_descent():
    params, loss, flat0, flat_loss = _problem()
    g = jax.grad(flat_loss)
    expected = _reference(g, flat0, LR)
    for name in ("sgd", "gd"):
        np.testing.assert_allclose(_run(methods.get(name), LR, {}, params, loss), expected, rtol=1e-13)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_and_nesterov_textbook(nesterov):
    params, loss, flat0, flat_loss = _problem()
    beta = 0.7
    g = jax.grad(flat_loss)
    theta, v = flat0, jnp.zeros_like(flat0)
    for _ in range(STEPS):
        grad = g(theta)
        v = beta * v + grad
        theta = theta - LR * ((grad + beta * v) if nesterov else v)
    method = methods.get("nesterov" if nesterov else "momentum")
    np.testing.assert_allclose(_run(method, LR, {"beta": beta}, params, loss), theta, rtol=1e-13)


@pytest.mark.parametrize("penalty_method", ["hvp", "double_backprop"])
def test_egr_exact_products_match_dense_hessian(penalty_method):
    params, loss, flat0, flat_loss = _problem()
    mu = 0.2
    g, hess = jax.grad(flat_loss), jax.hessian(flat_loss)
    expected = _reference(lambda t: g(t) + 2 * mu * hess(t) @ g(t), flat0, LR)
    got = _run(methods.get("egr"), LR, {"mu": mu, "penalty_method": penalty_method}, params, loss)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_egr_finite_difference_error_is_first_order_in_radius():
    params, loss, flat0, flat_loss = _problem()
    mu = 0.2
    g = jax.grad(flat_loss)
    exact = flat0 - LR * (g(flat0) + 2 * mu * jax.hessian(flat_loss)(flat0) @ g(flat0))
    errors = []
    for eps in (1e-3, 5e-4):
        hp = {"mu": mu, "penalty_method": "finite_difference", "fd_radius": eps}
        errors.append(float(jnp.linalg.norm(_run(methods.get("egr"), LR, hp, params, loss, 1) - exact)))
    assert 0 < errors[0] < 1e-3 and 1.8 < errors[0] / errors[1] < 2.2  # error ∝ ε


@pytest.mark.parametrize("ascent", ["normalized", "unnormalized"])
def test_sam_two_step_definition(ascent):
    params, loss, flat0, flat_loss = _problem()
    rho = 0.1
    g = jax.grad(flat_loss)
    lift = _unit if ascent == "normalized" else (lambda v: v)
    expected = _reference(lambda t: g(t + rho * lift(g(t))), flat0, LR)
    got = _run(methods.get("sam"), LR, {"rho": rho, "ascent": ascent}, params, loss)
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_gnp_formula_and_its_limits():
    params, loss, flat0, flat_loss = _problem()
    gnp = methods.get("gnp")
    alpha, r = 0.8, 0.1
    g, hess = jax.grad(flat_loss), jax.hessian(flat_loss)
    expected = _reference(lambda t: (1 - alpha) * g(t) + alpha * g(t + r * _unit(g(t))), flat0, LR)
    np.testing.assert_allclose(_run(gnp, LR, {"alpha": alpha, "r": r}, params, loss), expected, rtol=1e-13)
    # α = 1, r = ρ is normalised SAM
    np.testing.assert_allclose(_run(gnp, LR, {"alpha": 1.0, "r": 0.05}, params, loss),
                               _run(methods.get("sam"), LR, {"rho": 0.05}, params, loss), rtol=1e-13)
    # small r: the gradient of E + λ‖∇E‖ (λ = αr), ∇E + λH∇E/‖∇E‖, to O(r)
    lam, r = 0.05, 1e-5
    exact = flat0 - LR * (g(flat0) + lam * hess(flat0) @ _unit(g(flat0)))
    got = _run(gnp, LR, {"alpha": lam / r, "r": r}, params, loss, 1)
    np.testing.assert_allclose(got, exact, atol=1e-6)


def test_adam_textbook():
    params, loss, flat0, flat_loss = _problem()
    b1, b2, eps = 0.8, 0.95, 1e-3
    g = jax.grad(flat_loss)
    theta, m, v = flat0, jnp.zeros_like(flat0), jnp.zeros_like(flat0)
    for t in range(1, STEPS + 1):
        grad = g(theta)
        m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
        theta = theta - LR * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)
    hp = {"b1": b1, "b2": b2, "eps": eps}
    np.testing.assert_allclose(_run(methods.get("adam"), LR, hp, params, loss), theta, rtol=1e-13)


# --------------------------------------------------------------------------------------------
# The explicit SGD variance penalty (micro-batches of the step's batch)


def _logistic_batch(n=14):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((n, 3)))
    y = jnp.asarray(rng.integers(0, 2, n) * 2.0 - 1.0)
    params = {"w": jnp.asarray([0.3, -0.2, 0.5]), "b": jnp.asarray(0.1)}

    def loss_on(p, xb, yb):
        return jnp.mean(jax.nn.softplus(-yb * (xb @ p["w"] + p["b"])))

    return x, y, params, loss_on


def _run_on_batch(method, lr, hp, params, loss_on, batch, steps=STEPS):
    """``steps`` updates of ``method`` with the program's extra arguments on one fixed batch."""
    tx = method.transform(lr, **hp)
    args = methods.update_args(loss_on, batch)
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(args["grad_fn"](params), state, params, **args)
        params = optax.apply_updates(params, updates)
    return ravel_pytree(params)[0]


def test_var_penalty_matches_an_explicit_loop_over_micro_batches():
    """Reference: step t permutes the batch with the rule's key for t, keeps K = ⌊14/4⌋ = 3
    micro-batches (2 examples left out), and ∇P = (2/K) Σ_k H_k (g_k − ḡ) from dense per-micro-batch
    Hessians (Σ_k (g_k − ḡ) = 0 removes the mean Hessian): no vmap, no double backprop."""
    x, y, params, loss_on = _logistic_batch()
    flat0, unravel = ravel_pytree(params)
    lam, b = 0.7, 4
    theta = flat0
    for t in range(STEPS):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(micro.PARTITION_SEED), t), 14))
        parts = [order[k * b:(k + 1) * b] for k in range(14 // b)]
        flat = lambda th, idx: loss_on(unravel(th), x[idx], y[idx])  # noqa: E731
        gs = [jax.grad(flat)(theta, idx) for idx in parts]
        hs = [jax.hessian(flat)(theta, idx) for idx in parts]
        mean = sum(gs) / len(gs)
        grad_p = 2 / len(gs) * sum(h @ (g - mean) for h, g in zip(hs, gs))
        theta = theta - LR * (jax.grad(flat)(theta, np.arange(14)) + lam / 4 * grad_p)
    got = _run_on_batch(methods.get("var_penalty"), LR, {"lam": lam, "micro_batch": b}, params, loss_on, (x, y))
    np.testing.assert_allclose(got, theta, rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(got - _run_on_batch(methods.get("gd"), LR, {}, params, loss_on, (x, y))) > 1e-4


def test_var_penalty_at_lambda_zero_is_gradient_descent():
    x, y, params, loss_on = _logistic_batch()
    plain = _run_on_batch(methods.get("gd"), LR, {}, params, loss_on, (x, y))
    zero = _run_on_batch(methods.get("var_penalty"), LR, {"lam": 0.0, "micro_batch": 4}, params, loss_on, (x, y))
    np.testing.assert_array_equal(zero, plain)


def test_var_penalty_variance_is_the_mean_squared_deviation():
    x, y, params, loss_on = _logistic_batch(12)
    xs, ys = x.reshape(3, 4, 3), y.reshape(3, 4)
    gs = np.stack([ravel_pytree(jax.grad(loss_on)(params, xs[k], ys[k]))[0] for k in range(3)])
    expected = np.mean(np.sum((gs - gs.mean(axis=0)) ** 2, axis=1))
    np.testing.assert_allclose(micro.variance(loss_on, params, xs, ys), expected, rtol=1e-13)


@pytest.mark.parametrize("given,match", [
    ({"micro_batch": "32"}, "micro_batch"),
    ({"micro_batch": True}, "micro_batch"),
    ({"micro_batch": 32.0}, "micro_batch"),
    ({"micro_batch": 33}, "micro_batch"),
    ({"lam": -0.1}, r"\[0, inf\)"),
    ({"lam": "0.1"}, "must be a number"),
])
def test_var_penalty_bad_options_are_config_errors(given, match):
    with pytest.raises(ConfigError, match=match):
        methods.get("var_penalty").hyperparams(given)


def test_var_penalty_integer_options_and_batch_check():
    method = methods.get("var_penalty")
    hp = method.hyperparams({"micro_batch": np.int64(16)})
    assert hp == {"lam": 0.1, "micro_batch": 16} and type(hp["micro_batch"]) is int
    method.check_batch(32, {"micro_batch": 16})  # two micro-batches: enough
    with pytest.raises(ConfigError, match="at least 64"):
        method.check_batch(63, {"micro_batch": 32})
    with pytest.raises(ConfigError, match="strings or integers"):
        methods.Method(name="x", rule="x", defaults={}, vmappable=("learning_rate",),
                       options={"size": (4, "8")}, batch="any", build=lambda learning_rate, size: None)


# --------------------------------------------------------------------------------------------
# Per-run hyperparameters live in the state: one vmapped program equals separate runs

#: Values for the transform that performs every update: far from both runs' values, so any use
#: of them instead of the state's would show.
PLACEHOLDER = {"learning_rate": 7.0, "beta": 0.1, "mu": 3.0, "fd_radius": 0.3, "rho": 2.0,
               "alpha": 0.05, "r": 0.9, "b1": 0.1, "b2": 0.2, "eps": 1.0}
CASES = [("sgd", {}), ("gd", {}), ("momentum", {}), ("nesterov", {}),
         ("egr", {"penalty_method": "hvp"}), ("egr", {"penalty_method": "finite_difference"}),
         ("sam", {"ascent": "normalized"}), ("sam", {"ascent": "unnormalized"}), ("gnp", {}),
         ("adam", {})]


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{'-'.join(o.values())}" for n, o in CASES])
def test_vmapped_runs_equal_separate_runs(name, options):
    params, loss, _, _ = _problem()
    method = methods.get(name)
    varied = [k for k in method.vmappable  # fd_radius may only differ from its default with FD
              if not (k == "fd_radius" and options.get("penalty_method") != "finite_difference")]
    base = {"learning_rate": LR, **method.defaults}
    runs = [{k: base[k] * scale for k in varied} for scale in (1.0, 0.5)]
    grad = jax.grad(loss)

    def init(values):
        values = dict(values)
        return method.transform(values.pop("learning_rate"), **values, **options).init(params)

    states = jax.vmap(init)({k: jnp.asarray([run[k] for run in runs]) for k in varied})
    placeholder = {k: PLACEHOLDER[k] for k in varied}
    tx = method.transform(placeholder.pop("learning_rate"), **placeholder, **options)

    @jax.vmap
    def step(p, state):
        updates, state = tx.update(grad(p), state, p, value_fn=loss, grad_fn=grad)
        return optax.apply_updates(p, updates), state

    batched = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf, leaf]), params)
    for _ in range(STEPS):
        batched, states = step(batched, states)
    for i, run in enumerate(runs):
        run = dict(run)
        alone = _run(method, run.pop("learning_rate"), {**run, **options}, params, loss)
        together = ravel_pytree(jax.tree_util.tree_map(lambda leaf: leaf[i], batched))[0]
        np.testing.assert_allclose(together, alone, rtol=1e-12, atol=1e-15)
    assert not np.allclose(_run(method, runs[0]["learning_rate"], options, params, loss),
                           _run(method, runs[1]["learning_rate"], options, params, loss))


# --------------------------------------------------------------------------------------------
# Validation


def test_registry_declares_every_rule():
    assert set(methods.METHODS) == {"sgd", "gd", "momentum", "nesterov", "egr", "sam", "gnp", "adam",
                                    "var_penalty"}
    assert methods.get("sgd").batch == "mini" and methods.get("gd").batch == "full"
    for method in methods.METHODS.values():
        assert method.rule and "learning_rate" in method.vmappable
        assert method.hyperparams({}) == {**method.defaults,
                                          **{k: v[0] for k, v in method.options.items()}}
    assert methods.get("egr").options["penalty_method"] == losses.PENALTY_METHODS


def test_get_unknown_names_the_valid_ones():
    with pytest.raises(ConfigError, match="sgd, gd, momentum"):
        methods.get("lbfgs")


@pytest.mark.parametrize("name,given,match", [
    ("momentum", {"beta": "0.9"}, "must be a number"),
    ("momentum", {"beta": True}, "must be a number"),
    ("momentum", {"beta": 1.0}, r"\[0, 1\)"),
    ("momentum", {"beta": float("nan")}, r"\[0, 1\)"),
    ("momentum", {"gamma": 0.9}, r"valid names are \['beta'\]"),
    ("momentum", {"learning_rate": 0.1}, "on its own"),
    ("egr", {"mu": -0.1}, r"\[0, inf\)"),
    ("egr", {"penalty_method": "exact"}, "hvp"),
    ("egr", {"fd_radius": 0.01}, "only used with penalty_method='finite_difference'"),
    ("sam", {"rho": 0}, r"\(0, inf\)"),
    ("sam", {"ascent": "adaptive"}, "normalized"),
    ("gnp", {"r": -1.0}, r"\(0, inf\)"),
    ("adam", {"eps": 0.0}, r"\(0, inf\)"),
    ("adam", {"b2": 1.5}, r"\[0, 1\)"),
])
def test_bad_hyperparameters_are_config_errors(name, given, match):
    with pytest.raises(ConfigError, match=match):
        methods.get(name).hyperparams(given)


def test_hyperparams_completes_with_floats_and_checks_transform_arguments():
    hp = methods.get("egr").hyperparams({"mu": 1, "penalty_method": "finite_difference",
                                         "fd_radius": np.float64(1e-4)})
    assert hp == {"mu": 1.0, "fd_radius": 1e-4, "penalty_method": "finite_difference"}
    assert all(type(hp[k]) is float for k in ("mu", "fd_radius"))
    methods.get("egr").transform(0.1, **methods.get("egr").hyperparams({}))  # round-trips
    for bad in ("0.1", -0.1, 0.0, True):
        with pytest.raises(ConfigError, match="learning_rate"):
            methods.get("sgd").transform(bad)
    with pytest.raises(ConfigError, match="must be a number"):
        methods.get("momentum").transform(0.1, beta="0.5")


# --------------------------------------------------------------------------------------------
# Stability: the predicted edge s(h, λ) = 2 against the rule on E = λθ²/2

LAM = 2.0
EDGE_STEPS = 3000


def _edge_h(method, hp):
    """The h with stability(h, λ) = 2, by bisection (s grows with h)."""
    lo, hi = 0.0, 10.0 / LAM
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if method.stability(mid, LAM, **hp) < 2 else (lo, mid)
    return (lo + hi) / 2


def _trajectory(method, h, hp):
    """|θ_n| along ``EDGE_STEPS`` steps of the rule on E = λθ²/2 from θ₀ = 1."""
    loss = lambda p: 0.5 * LAM * jnp.sum(p**2)  # noqa: E731
    grad = jax.grad(loss)
    tx = method.transform(h, **hp)
    params = jnp.ones(1)

    def step(carry, _):
        p, state = carry
        updates, state = tx.update(grad(p), state, p, value_fn=loss, grad_fn=grad)
        p = optax.apply_updates(p, updates)
        return (p, state), jnp.abs(p[0])

    _, path = jax.lax.scan(step, (params, tx.init(params)), None, length=EDGE_STEPS)
    return np.asarray(path)


LINEAR = [("sgd", {}), ("momentum", {"beta": 0.9}), ("nesterov", {"beta": 0.9}),
          ("nesterov", {"beta": 0.5}), ("egr", {"mu": 0.1}),
          ("sam", {"rho": 0.2, "ascent": "unnormalized"})]


@pytest.mark.parametrize("name,hp", LINEAR, ids=[f"{n}-{h}" for n, h in LINEAR])
def test_stability_edge_linear_rules(name, hp):
    method = methods.get(name)
    edge = _edge_h(method, method.hyperparams(hp))
    below, above = _trajectory(method, 0.99 * edge, hp), _trajectory(method, 1.01 * edge, hp)
    assert below[-1] < 1e-3 and above[-1] > 1e3


@pytest.mark.parametrize("name,hp,radius", [("sam", {"rho": 0.2}, 0.2),
                                            ("gnp", {"alpha": 0.5, "r": 0.4}, 0.2)])
def test_stability_edge_normalised_ascent_is_boundedness(name, hp, radius):
    """Normalised ascent never converges (the ascent step has length ρ at any ∇E ≠ 0), but it stays
    within max(|θ₀|, aρ/(2 − a)) + aρ below the edge and grows geometrically above it."""
    method = methods.get(name)
    edge = _edge_h(method, method.hyperparams(hp))
    assert edge == pytest.approx(2 / LAM)
    a = 0.99 * edge * LAM
    below, above = _trajectory(method, 0.99 * edge, hp), _trajectory(method, 1.01 * edge, hp)
    assert below.max() <= max(1.0, a * radius / (2 - a)) + a * radius + 1e-9
    assert above[-1] > 1e3


def test_stability_takes_arrays_inside_jit_and_adam_has_none():
    """Probes may compute s(h, λ) per run inside a jitted, vmapped program."""
    momentum = methods.get("momentum")
    h, lam, beta = jnp.asarray([0.1, 0.2]), jnp.asarray([10.0, 5.0]), jnp.asarray([0.9, 0.5])
    got = jax.jit(lambda h, lam, beta: momentum.stability(h, lam, beta=beta))(h, lam, beta)
    np.testing.assert_allclose(got, [1 / 1.9, 1 / 1.5], rtol=1e-14)
    assert methods.get("adam").stability(0.1, 10.0) is None
    assert {methods.get("sgd"): 1}[methods.get("sgd")] == 1  # hashable: usable as a cache key
