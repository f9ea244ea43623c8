"""Probes against direct computation: a network small enough for a dense Hessian."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from igrlib.io import data
from igrlib.maths import losses, models, objectives
from igrlib.training import probes


@pytest.fixture(scope="module")
def tiny():
    """A 1-hidden-layer tanh MLP of width 3 (2,395 parameters) at its initialisation, 128 images."""
    ds = data.load("mnist", n_train=128, n_test=10)
    model = models.mlp(3, depth=1, activation="tanh")
    params, state = model.init(jax.random.key(0), jnp.asarray(ds.x_train[:2]))
    return ds, model, params, state


def dense_hessian(model, params, state, x, y):
    flat, unravel = ravel_pytree(params)
    loss = objectives.loss_fn(model, is_training=False)
    return jax.hessian(lambda f: loss(unravel(f), state, x, y)[0])(flat)


def test_probes_equal_dense_computation(tiny):
    ds, model, params, state = tiny
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    H = np.asarray(dense_hessian(model, params, state, x, y), np.float64)
    eigs = np.linalg.eigvalsh((H + H.T) / 2)
    found = probes.measure(model, params, state, probes.ProbeData(ds.x_train, ds.y_train, 128),
                           jax.random.key(1), probes.PROBES, lanczos_iters=30, trace_samples=200)
    grad = jax.grad(lambda p: objectives.loss_fn(model, False)(p, state, x, y)[0])(params)
    assert found["r_ig"] == pytest.approx(float(losses.r_ig(grad)), rel=1e-4)
    assert found["lambda_max"] == pytest.approx(eigs[-1], rel=1e-3)
    # Hutchinson: unbiased, so within 4 standard errors of the exact trace
    assert abs(found["hessian_trace"] - np.trace(H)) < 4 * found["hessian_trace_se"]
    flat = ravel_pytree(params)[0]
    assert found["param_norm"] == pytest.approx(float(jnp.linalg.norm(flat)), rel=1e-5)


def test_curvature_subset_is_the_first_examples_in_whole_batches():
    ds = data.load("mnist", n_train=1000, n_test=10)
    pd_ = probes.ProbeData(ds.x_train, ds.y_train, 700)
    xb, yb = pd_.curvature
    assert xb.shape[:2] == (1, 512)  # 700 → one whole batch of 512
    np.testing.assert_array_equal(np.asarray(yb[0]), ds.y_train[:512])


def _minibatch_grads(model, params, state, x, y, batch):
    loss = objectives.loss_fn(model, is_training=False)
    grad = jax.jit(lambda xb, yb: ravel_pytree(jax.grad(lambda p: loss(p, state, xb, yb)[0])(params))[0])
    return [np.asarray(grad(x[i:i + batch], y[i:i + batch]), np.float64)
            for i in range(0, len(x) - len(x) % batch, batch)]


def test_grad_variance_equals_direct_float64_computation(tiny):
    """(1/(M m)) Σ_k ‖g_k − ∇E‖², ∇E over the whole split: against the per-batch gradients in
    float64; on a subset that is the whole split (∇E = mean g_k) it equals the identity
    (1/M) Σ‖g_k‖² − ‖∇E‖², over m."""
    ds, model, params, state = tiny
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    m = sum(np.size(a) for a in jax.tree.leaves(params))
    full = _minibatch_grads(model, params, state, x, y, len(x))[0]
    # a subset of 3 mini-batches of 20 (the first 60 examples) against ∇E of all 128
    found = probes.measure(model, params, state, probes.ProbeData(ds.x_train, ds.y_train, 70, batch_size=20),
                           jax.random.key(0), ("grad_variance",), 2, 2)
    gs = _minibatch_grads(model, params, state, x[:60], y[:60], 20)
    want = np.mean([np.sum((g - full) ** 2) for g in gs]) / m
    assert found["grad_variance"] == pytest.approx(want, rel=1e-4)
    # the whole split as 4 mini-batches of 32
    found = probes.measure(model, params, state, probes.ProbeData(ds.x_train, ds.y_train, 128, batch_size=32),
                           jax.random.key(0), ("grad_variance", "r_ig"), 2, 2)
    gs = _minibatch_grads(model, params, state, x, y, 32)
    identity = (np.mean([g @ g for g in gs]) - np.mean(gs, axis=0) @ np.mean(gs, axis=0)) / m
    assert found["grad_variance"] == pytest.approx(identity, rel=1e-3)
    assert found["grad_variance"] > 0


def test_grad_variance_is_zero_for_full_batch_and_one_batch_at_least(tiny):
    ds, model, params, state = tiny
    full = probes.measure(model, params, state, probes.ProbeData(ds.x_train, ds.y_train, 64),
                          jax.random.key(0), ("grad_variance",), 2, 2)
    assert full["grad_variance"] == 0.0
    # a probe subset smaller than the batch still gives one whole mini-batch
    assert probes.ProbeData(ds.x_train, ds.y_train, 16, batch_size=50).minibatches[0].shape[:2] == (1, 50)
