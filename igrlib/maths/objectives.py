"""The training objective of a model and its evaluation over whole data splits.

``E(θ) = (1/N) Σ_n ℓ(f_θ(x_n), y_n)`` with ``ℓ`` the softmax cross-entropy in nats. Two modes:

* training mode (batch norm uses the batch's statistics and returns updated running statistics):
  :func:`loss_fn`, what a training step differentiates;
* evaluation mode (batch norm uses the running statistics, so ``E`` is a fixed function of θ):
  :func:`split_eval_fn` (loss and accuracy) and :func:`full_batch_grad_fn` (``E`` and ``∇E``),
  over a whole :class:`Split` in chunks, so memory does not grow with the split.

Splits are passed to jitted functions as arguments, never closed over: a closed-over array becomes
an XLA constant and compile time grows with the data set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from igrlib.maths import loops, losses
from igrlib.maths.models import Model

#: Rows per chunk when a whole split is evaluated.
EVAL_CHUNK = 5000


def loss_fn(model: Model, is_training: bool = True) -> Callable[..., tuple[jax.Array, Any]]:
    """``(θ, state, x, y) -> (E, (new_state, logits))``: the mean cross-entropy (nats) of ``model``
    on the batch ``(x, y)``, in training mode (batch statistics) or evaluation mode."""

    def loss(params, state, x, y):
        logits, new_state = model.apply(params, state, x, is_training)
        return losses.cross_entropy(logits, y), (new_state, logits)

    return loss


class Split(NamedTuple):
    """A data split padded to whole chunks: ``x`` (n_chunks, chunk, ...), ``y`` and weights ``w``
    (1 for real rows, 0 for padding) of shape (n_chunks, chunk), and ``n`` the real row count."""

    x: jax.Array
    y: jax.Array
    w: jax.Array
    n: jax.Array


def split(x: np.ndarray, y: np.ndarray, chunk: int = EVAL_CHUNK) -> Split:
    """Pad (x, y) to a multiple of ``chunk`` rows and reshape into a :class:`Split`."""
    n = len(x)
    if n == 0:
        raise ValueError("cannot evaluate over an empty split")
    chunk = min(chunk, n)
    n_chunks = math.ceil(n / chunk)
    pad = n_chunks * chunk - n
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    yp = np.concatenate([y, np.zeros(pad, y.dtype)]) if pad else y
    return Split(
        jnp.asarray(xp).reshape((n_chunks, chunk) + x.shape[1:]),
        jnp.asarray(yp).reshape(n_chunks, chunk),
        jnp.asarray(w).reshape(n_chunks, chunk),
        jnp.asarray(float(n), jnp.float32),
    )


def _weighted_nll_sum(model: Model, params, state, xb, yb, wb) -> tuple[jax.Array, jax.Array]:
    """``(Σ_n w_n ℓ_n, logits)`` over one chunk in evaluation mode."""
    logits, _ = model.apply(params, state, xb, False)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, yb) * wb), logits


def split_eval_fn(model: Model) -> Callable[[Any, Any, Split], tuple[jax.Array, jax.Array]]:
    """``(θ, state, split) -> (loss, accuracy)``: mean cross-entropy (nats) and accuracy (in
    [0, 1]) over a whole :class:`Split` in evaluation mode."""

    def evaluate(params, state, data: Split):
        def body(acc, batch):
            xb, yb, wb = batch
            nll, logits = _weighted_nll_sum(model, params, state, xb, yb, wb)
            hit = (jnp.argmax(logits, -1) == yb).astype(jnp.float32)
            return (acc[0] + nll, acc[1] + jnp.sum(hit * wb)), None

        (loss_sum, hit_sum), _ = loops.scan(body, (0.0, 0.0), (data.x, data.y, data.w))
        return loss_sum / data.n, hit_sum / data.n

    return evaluate


def full_batch_grad_fn(model: Model) -> Callable[[Any, Any, Split], tuple[jax.Array, Any]]:
    """``(θ, state, split) -> (E, ∇E)`` of the mean cross-entropy over a whole :class:`Split`,
    evaluation mode, accumulated over chunks. R_IG is ``losses.r_ig(∇E)`` of the result."""

    def value_and_grad(params, state, data: Split):
        def chunk_loss(p, xb, yb, wb):
            return _weighted_nll_sum(model, p, state, xb, yb, wb)[0] / data.n

        def body(acc, batch):
            v, g = jax.value_and_grad(chunk_loss)(params, *batch)
            return (acc[0] + v, jax.tree_util.tree_map(jnp.add, acc[1], g)), None

        zero = (0.0, jax.tree_util.tree_map(jnp.zeros_like, params))
        (value, grad), _ = loops.scan(body, zero, (data.x, data.y, data.w))
        return value, grad

    return value_and_grad
