"""Curvature estimators against the dense Hessian of a small float64 MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from igrlib.maths import curvature
from igrlib.config import ConfigError

N_EXAMPLES, BATCH_SIZE = 32, 8  # 4 batches


def mlp_loss(params, batch):
    """Mean squared error of a one-hidden-layer tanh MLP, 4 → 12 → 3 (99 parameters)."""
    x, y = batch
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return 0.5 * jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def problem():
    """Parameters, data, batches and the dense loss, gradient and Hessian over all examples."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        params = {
            "w1": jnp.asarray(rng.standard_normal((4, 12)) / 2),
            "b1": jnp.asarray(0.1 * rng.standard_normal(12)),
            "w2": jnp.asarray(rng.standard_normal((12, 3)) / 3),
            "b2": jnp.zeros(3),
        }
        x = jnp.asarray(rng.standard_normal((N_EXAMPLES, 4)))
        y = jnp.asarray(rng.standard_normal((N_EXAMPLES, 3)))
        flat, unravel = ravel_pytree(params)

        @jax.jit
        def dense(flat):
            def loss(f):
                return mlp_loss(unravel(f), (x, y))

            return loss(flat), jax.grad(loss)(flat), jax.hessian(loss)(flat)

        loss, grad, hessian = (np.asarray(a) for a in dense(flat))
        return {
            "params": params,
            "batches": curvature.stack_batches(x, y, BATCH_SIZE),
            "loss": loss,
            "grad": grad,
            "hessian": hessian,
            "eigenvalues": np.linalg.eigvalsh(hessian),
        }


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def test_stack_batches_shapes_and_remainder():
    x, y = jnp.arange(22.0).reshape(11, 2), jnp.arange(11)
    xb, yb = curvature.stack_batches(x, y, 4)
    assert xb.shape == (2, 4, 2) and yb.shape == (2, 4)
    np.testing.assert_array_equal(yb, [[0, 1, 2, 3], [4, 5, 6, 7]])  # examples 8-10 dropped
    for bad in (0, 12, 2.5):
        with pytest.raises(ConfigError):
            curvature.stack_batches(x, y, bad)
    with pytest.raises(ConfigError):
        curvature.stack_batches(x, y[:10], 2)
    with pytest.raises(ConfigError):
        curvature.full_loss(mlp_loss, {}, (x, y))  # not batched


def test_full_loss_and_grad_match_dense(problem):
    p, batches = problem["params"], problem["batches"]
    np.testing.assert_allclose(curvature.full_loss(mlp_loss, p, batches), problem["loss"], rtol=1e-13)
    np.testing.assert_allclose(flat(curvature.full_grad(mlp_loss, p, batches)), problem["grad"], rtol=0, atol=1e-14)


def test_hvp_matches_dense(problem):
    p = problem["params"]
    unravel = ravel_pytree(p)[1]
    v = np.random.default_rng(0).standard_normal(problem["grad"].size)
    hv = flat(curvature.hvp(mlp_loss, p, problem["batches"], unravel(jnp.asarray(v))))
    np.testing.assert_allclose(hv, problem["hessian"] @ v, rtol=0, atol=1e-10)


def test_lanczos_extreme_eigenpairs(problem):
    p, H, exact = problem["params"], problem["hessian"], problem["eigenvalues"]
    assert exact[0] < 0 < exact[-1]  # an indefinite Hessian: both ends are meaningful
    result = curvature.top_eigenvalues(
        mlp_loss, p, problem["batches"], jax.random.key(1), k=2, num_iters=40, which="both"
    )
    assert result.num_hvps == 40
    expected = np.concatenate([exact[:2], exact[-2:]])
    rel_err = np.abs(result.eigenvalues - expected) / np.abs(expected)
    assert np.all(rel_err < 1e-6), f"relative errors {rel_err} after {result.num_hvps} HVPs"
    assert result.largest == result.eigenvalues[-1] and result.smallest == result.eigenvalues[0]
    vectors = jax.vmap(lambda t: ravel_pytree(t)[0])(result.eigenvectors)
    for value, vector, residual in zip(result.eigenvalues, np.asarray(vectors), result.residual_norms):
        np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-10)
        true_residual = np.linalg.norm(H @ vector - value * vector)
        np.testing.assert_allclose(residual, true_residual, rtol=1e-3, atol=1e-12)
        assert true_residual < 1e-3 * abs(value)


def test_lanczos_which_selects_ends(problem):
    p, batches, key = problem["params"], problem["batches"], jax.random.key(1)
    both = curvature.top_eigenvalues(mlp_loss, p, batches, key, k=2, num_iters=40, which="both")
    top = curvature.top_eigenvalues(mlp_loss, p, batches, key, k=2, num_iters=40)
    bottom = curvature.top_eigenvalues(mlp_loss, p, batches, key, k=1, num_iters=40, which="smallest")
    np.testing.assert_array_equal(top.eigenvalues, both.eigenvalues[2:])
    np.testing.assert_array_equal(bottom.eigenvalues, both.eigenvalues[:1])
    assert top.eigenvectors["w1"].shape == (2, 4, 12)
    for bad in ({"k": 3, "which": "both"}, {"which": "middle"}, {"num_iters": 100}, {"num_iters": 0}):
        with pytest.raises(ConfigError):
            curvature.top_eigenvalues(mlp_loss, p, batches, key, **{"num_iters": 4, **bad})


def test_hutchinson_trace(problem):
    H = problem["hessian"]
    exact = np.trace(H)
    # Var(vᵀHv) = 2 Σ_{j≠l} H_jl² for Rademacher v.
    sample_std = np.sqrt(2 * (np.sum(H**2) - np.sum(np.diag(H) ** 2)))
    estimates = {
        n: curvature.hessian_trace(mlp_loss, problem["params"], problem["batches"], jax.random.key(2), num_samples=n)
        for n in (20, 320)
    }
    for n, est in estimates.items():
        assert est.num_hvps == n and est.samples.shape == (n,)
        assert abs(est.trace - exact) < 4 * est.stderr, (n, est.trace, exact, est.stderr)
    assert 0.8 < estimates[320].stderr / (sample_std / np.sqrt(320)) < 1.25
    assert estimates[320].stderr < 0.5 * estimates[20].stderr  # ∝ 1/√n: 0.25 expected


def test_spectral_density_quadrature(problem):
    p, batches, exact = problem["params"], problem["batches"], problem["eigenvalues"]
    m, key = exact.size, jax.random.key(2)
    slq = curvature.spectral_density(mlp_loss, p, batches, key, num_iters=m, num_samples=20)
    assert slq.num_hvps == 20 * m and slq.nodes.shape == slq.weights.shape == (20, m)
    # A full-dimensional Krylov space recovers every eigenvalue as a node.
    np.testing.assert_allclose(np.sort(slq.nodes, axis=1), np.broadcast_to(exact, (20, m)), rtol=0, atol=1e-10)
    np.testing.assert_allclose(slq.weights.sum(axis=1), 1.0, rtol=1e-12)
    # Σ_j w_j θ_j = vᵀHv/m: the Hutchinson sample of the same probe, divided by m.
    hutchinson = curvature.hessian_trace(mlp_loss, p, batches, key, num_samples=20)
    np.testing.assert_allclose(m * np.sum(slq.weights * slq.nodes, axis=1), hutchinson.samples, rtol=1e-10)
    np.testing.assert_allclose(np.trapezoid(slq.density, slq.grid), 1.0, atol=1e-3)


def scaled_loss(params, batch):
    """``s · mlp_loss``, with the scale ``s`` read from the batches' context (like batch-norm state)."""
    return batch[2]["scale"] * mlp_loss(params, batch[:2])


def test_context_rides_with_the_batches_without_recompiling(problem):
    p, batches, exact = problem["params"], problem["batches"], problem["eigenvalues"]
    key = jax.random.key(1)
    before = curvature._lanczos._cache_size()
    for scale in (1.0, 3.0):
        context = {"scale": jnp.asarray(scale)}
        result = curvature.top_eigenvalues(scaled_loss, p, curvature.with_context(batches, context),
                                           key, num_iters=40)
        np.testing.assert_allclose(result.largest, scale * exact[-1], rtol=1e-6)
    # a second context is a new argument value, not a new program
    assert curvature._lanczos._cache_size() == before + 1
    with pytest.raises(ConfigError, match="lead with n_batches"):
        curvature.check_batches((*batches, {"scale": jnp.ones(3)}))


def test_lanczos_on_host_is_the_same_iteration(problem):
    p, batches, exact = problem["params"], problem["batches"], problem["eigenvalues"]
    key = jax.random.key(1)
    device = curvature.top_eigenvalues(mlp_loss, p, batches, key, k=2, num_iters=40, which="both")
    host = curvature.top_eigenvalues(mlp_loss, p, batches, key, k=2, num_iters=40, which="both",
                                     on_host=True)
    np.testing.assert_allclose(host.eigenvalues, device.eigenvalues, rtol=1e-9)
    np.testing.assert_allclose(host.eigenvalues, np.concatenate([exact[:2], exact[-2:]]), rtol=1e-6)
    np.testing.assert_allclose(host.residual_norms, device.residual_norms, rtol=1e-3, atol=1e-10)
    short = curvature.top_eigenvalues(mlp_loss, p, batches, key, num_iters=6, on_host=True)
    np.testing.assert_allclose(
        short.largest, curvature.top_eigenvalues(mlp_loss, p, batches, key, num_iters=6).largest, rtol=1e-9)


def test_hutchinson_probes_in_one_vmapped_batch_match_one_at_a_time(problem):
    p, batches, key = problem["params"], problem["batches"], jax.random.key(3)
    looped = curvature.hessian_trace(mlp_loss, p, batches, key, num_samples=5)
    batched = curvature.hessian_trace(mlp_loss, p, batches, key, num_samples=5, sample_batch=5)
    np.testing.assert_allclose(batched.samples, looped.samples, rtol=1e-10)
