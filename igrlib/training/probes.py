"""Probes: quantities measured along a training trajectory, every few evaluations.

Each probe is a function of one network (θ, batch-norm state) and the training data, all in
evaluation mode (batch-norm running statistics), so that it is a fixed function of θ:

* ``r_ig``: ``R_IG = ‖∇E‖²/m`` with ``E`` the mean cross-entropy (nats) over the whole training
  split (its value ``E`` is the evaluation's ``train_loss`` at the same step);
* ``lambda_max``: the top eigenvalue of ``H = ∇²E`` on the first ``probe_examples`` training
  examples, by ``probe_lanczos_iters`` Lanczos steps (:func:`igrlib.maths.curvature.top_eigenvalues`,
  the book's one sharpness estimator); the program adds ``h·λ_max`` and the update rule's
  stability quantity (:meth:`igrlib.training.methods.Method.stability`, whose value 2 is the
  linear-stability edge);
* ``trace``: Hutchinson's ``tr H`` on the same examples with ``probe_trace_samples`` Rademacher
  probes, and its standard error;
* ``param_norm``: ``‖θ‖`` (Euclidean norm of every trainable parameter);
* ``grad_variance``: the mini-batch variance term of SGD's modified loss, in R_IG's
  normalisation, ``V = (1/(M m)) Σ_k ‖∇Ê_k − ∇E‖²``: ``∇E`` over the whole training split (as for
  ``r_ig``), ``Ê_k`` the mean loss of the k-th of ``M`` consecutive mini-batches of the run's
  batch size ``B`` cut from the first ``max(probe_examples, B)`` training examples (the
  remainder dropped), ``m`` the parameter count. Each term is the squared deviation of one
  mini-batch gradient from the full one, so when the subset's batches are like random draws
  (the training subset is in a fixed random order) ``V`` estimates ``E_B‖∇E_B − ∇E‖²/m``, and
  shuffled SGD at rate h follows ``E + (hm/4)(R_IG + V)`` on average over shuffles. It is 0 for
  full-batch training (M = 1 and the batch is the training split).

Units: loss in nats, ``R_IG`` and ``V`` in nats²/parameter², eigenvalues and traces in
nats/parameter².
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from igrlib.maths import curvature, losses, objectives
from igrlib.maths.models import Model, num_params

PROBES: tuple[str, ...] = ("r_ig", "lambda_max", "trace", "param_norm", "grad_variance")
#: Examples per batch of the curvature subset.
CURVATURE_BATCH = 512


class ProbeData:
    """What the probes read, built once per group: the training split in chunks, the fixed
    curvature subset (its first ``examples`` training examples) in batches, and for
    ``grad_variance`` the run's mini-batches of that subset (``batch_size`` None: full-batch
    training, no mini-batches)."""

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray, examples: int,
                 batch_size: int | None = None):
        self.train = objectives.split(x_train, y_train)
        n = min(examples, len(x_train))
        batch = min(CURVATURE_BATCH, n)
        n -= n % batch
        self.curvature = curvature.stack_batches(jnp.asarray(x_train[:n]), jnp.asarray(y_train[:n]), batch)
        self.minibatches = None
        if batch_size is not None and batch_size < len(x_train):
            # at least one whole mini-batch, however small the probe subset
            n = min(max(examples, batch_size), len(x_train))
            n -= n % batch_size
            self.minibatches = curvature.stack_batches(jnp.asarray(x_train[:n]), jnp.asarray(y_train[:n]),
                                                       batch_size)


@functools.lru_cache(maxsize=32)
def _functions(model: Model):
    """The jitted pieces of one architecture (cached: compiled once per process)."""
    grad_fn = jax.jit(objectives.full_batch_grad_fn(model))
    batch_loss = objectives.loss_fn(model, is_training=False)

    def theta_loss(params, batch):
        # batch = (x, y, state): the state rides along as per-batch context (see curvature.with_context)
        return batch_loss(params, batch[2], batch[0], batch[1])[0]

    norm = jax.jit(lambda p: jnp.sqrt(losses.sq_norm(p)))
    return grad_fn, theta_loss, norm


@functools.lru_cache(maxsize=32)
def _variance_fn(model: Model):
    """``(θ, state, xs, ys, ∇E) -> (1/(M m)) Σ_k ‖∇Ê_k − ∇E‖²`` over stacked mini-batches
    ``xs``: (M, B, ...) (one gradient at a time: memory does not grow with M)."""
    batch_loss = objectives.loss_fn(model, is_training=False)

    def variance(params, state, xs, ys, full_grad):
        def deviation(batch):
            g = jax.grad(lambda p: batch_loss(p, state, batch[0], batch[1])[0])(params)
            return losses.sq_norm(jax.tree_util.tree_map(jnp.subtract, g, full_grad))

        return jnp.mean(jax.lax.map(deviation, (xs, ys))) / num_params(params)

    return jax.jit(variance)


def measure(model: Model, params: Any, state: Any, data: ProbeData, key: jax.Array,
            probes: tuple[str, ...], lanczos_iters: int, trace_samples: int,
            on_host: bool = False) -> dict[str, float]:
    """The ``probes`` of one network, as ``{name: value}`` (``hessian_trace`` and
    ``hessian_trace_se`` for ``trace``). ``on_host`` takes Lanczos steps and Hutchinson probes
    from Python (faster for convolutional networks on CPU, see :mod:`igrlib.maths.loops`)."""
    grad_fn, theta_loss, norm = _functions(model)
    out: dict[str, float] = {}
    if "r_ig" in probes or "grad_variance" in probes:
        _, grad = grad_fn(params, state, data.train)
        if "r_ig" in probes:
            out["r_ig"] = float(losses.r_ig(grad))
        if "grad_variance" in probes:
            out["grad_variance"] = 0.0 if data.minibatches is None else float(
                _variance_fn(model)(params, state, *data.minibatches, grad))
    if "param_norm" in probes:
        out["param_norm"] = float(norm(params))
    if "lambda_max" in probes or "trace" in probes:
        batches = curvature.with_context(data.curvature, state)
        k_eig, k_trace = jax.random.split(key)
        if "lambda_max" in probes:
            iters = min(lanczos_iters, sum(np.size(a) for a in jax.tree.leaves(params)))
            out["lambda_max"] = curvature.top_eigenvalues(theta_loss, params, batches, k_eig,
                                                          num_iters=iters, on_host=on_host).largest
        if "trace" in probes:
            trace = curvature.hessian_trace(theta_loss, params, batches, k_trace, trace_samples,
                                            sample_batch=trace_samples if on_host else None)
            out["hessian_trace"], out["hessian_trace_se"] = trace.trace, trace.stderr
    return out
