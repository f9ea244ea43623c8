"""The explicit SGD variance penalty: gradient descent plus the mini-batch-variance term of SGD's
modified loss, computed from micro-batches of the step's own batch.

Shuffled SGD at learning rate h over M mini-batches Ê_1..Ê_M follows, on average over shuffles,
the flow of ``E + (h/4)‖∇E‖² + (h/4M) Σ_k ‖∇Ê_k − ∇E‖²`` (Smith, Dherin, Barrett & De, ICLR 2021);
full-batch GD at h follows that of ``E + (h/4)‖∇E‖²``. The rule here is descent at h on

    ``E_B(θ) + (λ/4)·P(θ)``,   ``P(θ) = (1/K) Σ_k ‖∇Ê_k(θ) − ∇Ē(θ)‖²``,

with ``E_B`` the mean loss of the step's batch B (a mini-batch, or the whole training split for
full batch), ``Ê_k`` the mean losses of the ``K = ⌊|B|/b⌋`` micro-batches of size ``b`` cut from a
random permutation of B (the ``|B| − Kb`` remaining examples are left out of P, not of E_B) and
``∇Ē = (1/K) Σ_k ∇Ê_k`` their mean gradient. Units: P in loss²/θ² (nats² per parameter unit²),
λ a learning rate (parameter units per loss-gradient unit, like h), so (λ/4)P is a loss. Full-batch
GD at h with this penalty at λ = h and b = SGD's batch size has, to first order in h (the penalty
itself adds O(hλ) terms to GD's modified loss), the modified loss of SGD at h with batch b.

Why a fresh partition every step: SGD's variance term is an average over the partitions of one
epoch's shuffle, and a fixed partition would regularize towards one of them. The permutation's key
is ``fold_in(key(PARTITION_SEED), t)`` with ``t`` the step count kept in the rule's state: a run is
reproducible from its config alone and the state carries one integer, not a key; the cost is that
runs of a vmapped group see the same partition sequence (they differ by initialisation and, with
mini-batches, by data order), and partitions of different steps are independent draws.

Cost: the K micro-batch gradients are ONE ``jax.vmap(jax.grad(·))`` over the reshaped batch (the
arithmetic of one gradient of B, done as K small products), and ∇P differentiates through it
(double backprop). Small products run far below a CPU's peak, so a step costs several plain
steps on the same batch; the SGD/momentum chapter measures how many (``sgd_momentum.COST``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from igrlib.maths import bea_sgd

Params = Any
#: Seed of the partition keys (see the module docstring).
PARTITION_SEED = 20_210_504


class PenaltyState(NamedTuple):
    """The step count t (int32) that keys step t's partition, and the inner SGD state."""

    count: jax.Array
    sgd: optax.OptState


def micro_batches(batch: tuple[jax.Array, jax.Array], micro_batch: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(xs, ys)`` of shapes ``(K, b, ...)``: the first ``Kb`` examples of a ``key``-permutation of
    ``batch``, ``K = ⌊|B|/b⌋`` (static: it follows from the batch's shape)."""
    x, y = batch
    k = x.shape[0] // micro_batch
    order = jax.random.permutation(key, x.shape[0])[: k * micro_batch]
    return (x[order].reshape(k, micro_batch, *x.shape[1:]), y[order].reshape(k, micro_batch, *y.shape[1:]))


def variance(loss_on: Callable[[Params, jax.Array, jax.Array], jax.Array], params: Params,
             xs: jax.Array, ys: jax.Array) -> jax.Array:
    """``P(θ) = (1/K) Σ_k ‖∇Ê_k(θ) − ∇Ē(θ)‖²`` over stacked micro-batches ``xs``: (K, b, ...),
    with ``Ê_k = loss_on(θ, xs[k], ys[k])``: :func:`igrlib.maths.bea_sgd.variance_regularizer`,
    the term the chapter's expansion derives, on the network's parameters."""
    return bea_sgd.variance_regularizer(lambda p, batch: loss_on(p, *batch), (xs, ys))(params)


def variance_penalty(learning_rate: Any, lam: Any, micro_batch: int) -> optax.GradientTransformationExtraArgs:
    """θ ← θ − h·(∇E_B + (λ/4)·∇P) (module docstring), from the program's ``grads = ∇E_B`` and
    its extra arguments ``loss_on(p, x, y)`` (mean loss of p on (x, y), batch-norm state fixed at
    the step's) and ``batch = (x_B, y_B)``. ``micro_batch`` b is static (it fixes shapes). The
    rule has no stability quantity: the penalty's curvature is not a function of h and λ_max."""
    sgd = optax.sgd(learning_rate)

    def init(params: Params) -> PenaltyState:
        return PenaltyState(jnp.zeros([], jnp.int32), sgd.init(params))

    def update(updates: Params, state: PenaltyState, params: Params | None = None, *,
               loss_on: Callable[..., jax.Array], batch: tuple[jax.Array, jax.Array], **extra: Any):
        del extra  # value_fn, grad_fn
        key = jax.random.fold_in(jax.random.key(PARTITION_SEED), state.count)
        xs, ys = micro_batches(batch, micro_batch, key)
        penalty = jax.grad(lambda p: variance(loss_on, p, xs, ys))(params)
        total = jax.tree_util.tree_map(lambda g, p: g + lam / 4 * p, updates, penalty)
        out, sgd_state = sgd.update(total, state.sgd, params)
        return out, PenaltyState(state.count + 1, sgd_state)

    return optax.GradientTransformationExtraArgs(init, update)
