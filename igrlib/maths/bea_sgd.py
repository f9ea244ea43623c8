"""Backward error analysis of SGD with random shuffling (Smith, Dherin, Barrett & De, ICLR 2021).

Notation: ``M`` mini-batches, the ``k``-th mini-batch loss ``Ê_k(θ) = batch_loss(θ, batches[k])``
(``batches``: a pytree whose leaves all have leading axis ``M``), the full loss
``E = (1/M) Σ_k Ê_k``, ``g_k = ∇Ê_k``, ``H_k = ∇²Ê_k``, ``g = ∇E``, ``H = ∇²E`` and the learning
rate ``h`` in units of time. One epoch visits every mini-batch once, in an order ``σ``:

    θ_{j+1} = θ_j − h ∇Ê_{σ(j)}(θ_j),   j = 0, …, M − 1,

so it lasts time ``M·h``. To second order in ``h`` one epoch ends at

    θ_M = θ_0 − M h g + h² Σ_{i<j} H_{σ(j)} g_{σ(i)} + O(h³)        (everything at θ_0),

and since each mini-batch precedes each other one in half of the ``M!`` orders, the mean over
orders is ``θ_0 − M h g + (h²/2)(M² H g − Σ_k H_k g_k) + O(h³)``. That is the time-``Mh`` flow of
``θ' = −∇Ẽ_SGD`` to ``O(h³)``, with the modified loss

    Ẽ_SGD = E + (h/4M) Σ_k ‖∇Ê_k‖² = E + (h/4)‖∇E‖² + (h/4M) Σ_k ‖∇Ê_k − ∇E‖²:

GD's implicit regularizer plus the variance of the mini-batch gradients. A single order ``σ``
differs from the mean by ``h²(Σ_{i<j} H_{σ(j)} g_{σ(i)} − mean)``, which is ``O(h²)``: as far from
the mean as gradient flow is.

Error studies need float64 (``with jax.enable_x64(True):``); they raise
:class:`~igrlib.config.ConfigError` otherwise. Programs are compiled once per ``batch_loss``
(a static argument: pass the same function object to reuse them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from igrlib.config import ConfigError, check_choice
from igrlib.maths import bea

BatchLoss = Callable[[jax.Array, Any], jax.Array]
#: The flows an epoch is compared with, as weights ``(a, b)`` of the field
#: ``−∇[E + a (h/4)‖∇E‖² + b (h/4)·variance]``: gradient flow of E, of GD's modified loss
#: ``E + (h/4)‖∇E‖²`` (no variance term), and of ``Ẽ_SGD``.
FLOWS: dict[str, tuple[float, float]] = {
    "gradient flow of E": (0.0, 0.0),
    "flow of GD's Ẽ": (1.0, 0.0),
    "flow of Ẽ_SGD": (1.0, 1.0),
}
#: Largest number of mini-batches whose M! orders are enumerated (7! = 5040 epochs per rate).
MAX_BATCHES = 7


def num_batches(batches: Any) -> int:
    """``M``, the common leading axis of every leaf of ``batches``; :class:`ConfigError` if the
    leaves disagree or there are none."""
    leaves = jax.tree_util.tree_leaves(batches)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if not leaves or len(sizes) != 1 or None in sizes or sizes == {0}:
        raise ConfigError(f"batches must be a pytree of arrays sharing a leading axis M >= 1, "
                          f"got leading sizes {sorted(map(str, sizes))}")
    return int(sizes.pop())


def batch_losses(batch_loss: BatchLoss, batches: Any) -> Callable[[jax.Array], jax.Array]:
    """``θ ↦ (Ê_1(θ), …, Ê_M(θ))``, all mini-batch losses at once (vmapped over batches)."""
    return lambda theta: jax.vmap(batch_loss, in_axes=(None, 0))(theta, batches)


def mean_loss(batch_loss: BatchLoss, batches: Any) -> bea.Loss:
    """``E(θ) = (1/M) Σ_k Ê_k(θ)``: the full-batch loss when the mini-batches have equal size."""
    losses = batch_losses(batch_loss, batches)
    return lambda theta: jnp.mean(losses(theta))


def variance_regularizer(batch_loss: BatchLoss, batches: Any) -> bea.Loss:
    """``(1/M) Σ_k ‖∇Ê_k − ∇E‖²``: the mean squared deviation of the mini-batch gradients from
    their mean, the full gradient (units of loss²/θ²). θ may be any pytree (the training rule
    ``var_penalty`` takes it on a network's parameters); the M gradients are one ``vmap`` of
    ``grad``, the work of one gradient of all M batches, and the result is differentiable."""

    def variance(theta):
        grads = jax.vmap(jax.grad(batch_loss), in_axes=(None, 0))(theta, batches)
        squares = jax.tree_util.tree_map(lambda g: jnp.sum((g - g.mean(axis=0)) ** 2), grads)
        return sum(jax.tree_util.tree_leaves(squares)) / num_batches(batches)

    return variance


def sgd_modified_loss(batch_loss: BatchLoss, batches: Any, h: float | jax.Array) -> bea.Loss:
    """``Ẽ_SGD(θ) = E + (h/4M) Σ_k ‖∇Ê_k‖²``, equivalently ``E + (h/4)‖∇E‖²`` plus ``h/4`` times
    :func:`variance_regularizer`."""
    E = mean_loss(batch_loss, batches)
    grads = jax.jacrev(batch_losses(batch_loss, batches))
    return lambda theta: E(theta) + h / 4 * jnp.mean(jnp.sum(grads(theta) ** 2, axis=1))


def sgd_modified_field(batch_loss: BatchLoss, batches: Any, h: float | jax.Array,
                       flow: str = "flow of Ẽ_SGD") -> bea.Field:
    """The field ``−∇[E + a (h/4)‖∇E‖² + b (h/4)·variance]`` of one of :data:`FLOWS`; the mean
    epoch follows the time-``Mh`` flow of ``−∇Ẽ_SGD`` to local error ``O(h³)``, the other two to
    ``O(h²)`` (when the mini-batch gradients differ)."""
    check_choice(flow, FLOWS, "flow")
    return _weighted_field(batch_loss, batches, h, *FLOWS[flow])


def _weighted_field(batch_loss, batches, h, a, b) -> bea.Field:
    """``−∇[E + a (h/4)‖∇E‖² + b (h/4)·variance]``; traced weights serve every flow in one program."""
    E = mean_loss(batch_loss, batches)
    variance = variance_regularizer(batch_loss, batches)
    grad_E, grad_var = jax.grad(E), jax.grad(variance)

    def field(theta):
        g = grad_E(theta)
        hg = jax.jvp(grad_E, (theta,), (g,))[1]  # ∇(‖∇E‖²/4) = Hg/2
        return -g - a * h * hg / 2 - b * h * grad_var(theta) / 4

    return field


# --- epochs ---------------------------------------------------------------------------------------


def permutations(M: int) -> np.ndarray:
    """All ``M!`` orders of ``M`` mini-batches, shape ``(M!, M)``, lexicographic."""
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or not 1 <= M <= MAX_BATCHES:
        raise ConfigError(f"M must be an integer in [1, {MAX_BATCHES}] to enumerate its M! "
                          f"orders, got {M!r}")
    return np.array(list(itertools.permutations(range(M))), dtype=np.int64)


def epoch(batch_loss: BatchLoss, batches: Any, theta0: jax.Array, h: float | jax.Array,
          order: jax.Array) -> jax.Array:
    """``θ_M``: one epoch of SGD from ``θ0`` visiting the mini-batches in ``order`` (indices)."""
    def step(theta, k):
        batch = jax.tree_util.tree_map(lambda leaf: leaf[k], batches)
        return theta - h * jax.grad(batch_loss)(theta, batch), None

    return jax.lax.scan(step, theta0, order)[0]


@partial(jax.jit, static_argnames=("batch_loss",))
def _all_epochs(batch_loss, batches, theta0, hs, orders) -> jax.Array:
    one = lambda h, order: epoch(batch_loss, batches, theta0, h, order)  # noqa: E731
    return jax.vmap(lambda h: jax.vmap(lambda o: one(h, o))(orders))(hs)


def epoch_iterates(batch_loss: BatchLoss, batches: Any, theta0: jax.Array, hs) -> np.ndarray:
    """``θ_M`` after one epoch from ``θ0`` for every rate in ``hs`` and every one of the ``M!``
    orders of :func:`permutations`, shape ``(len(hs), M!, m)``; its mean over axis 1 is the exact
    mean iterate of one shuffled epoch."""
    theta0, hs = bea.check_study(theta0, hs)
    orders = permutations(num_batches(batches))
    return np.asarray(_all_epochs(batch_loss, batches, theta0, jnp.asarray(hs), jnp.asarray(orders)))


@partial(jax.jit, static_argnames=("batch_loss",))
def _flows(batch_loss, batches, theta0, hs, a, b, t1s) -> jax.Array:
    def one(h, t1):
        field = _weighted_field(batch_loss, batches, h, a, b)
        # the flow of t1·field over [0, 1] is the flow of field over [0, t1]
        return bea.flow(lambda theta: t1 * field(theta), theta0, 1.0)

    return jax.vmap(one)(hs, t1s)


def modified_flow_ends(batch_loss: BatchLoss, batches: Any, theta0: jax.Array, hs,
                       flow: str) -> np.ndarray:
    """``θ(M h)`` of the field of ``flow`` (:func:`sgd_modified_field`) from ``θ0`` for each
    rate in ``hs``, shape ``(len(hs), m)``: where one epoch should end."""
    check_choice(flow, FLOWS, "flow")
    theta0, hs = bea.check_study(theta0, hs)
    M = num_batches(batches)
    dtype = theta0.dtype
    a, b = (jnp.asarray(w, dtype=dtype) for w in FLOWS[flow])
    return np.asarray(_flows(batch_loss, batches, theta0, jnp.asarray(hs, dtype=dtype), a, b,
                             jnp.asarray(M * hs, dtype=dtype)))


#: The comparisons of :func:`epoch_study` and their expected orders in h (one epoch, local).
EPOCH_COMPARISONS: dict[tuple[str, str], int] = {
    ("mean iterate", "gradient flow of E"): 2,
    ("mean iterate", "flow of GD's Ẽ"): 2,
    ("mean iterate", "flow of Ẽ_SGD"): 3,
    ("single order (largest)", "mean iterate"): 2,
    ("single order (largest)", "flow of Ẽ_SGD"): 2,
}


def epoch_study(batch_loss: BatchLoss, batches: Any, theta0: jax.Array, hs) -> pd.DataFrame:
    """One epoch of shuffled SGD from ``θ0`` at each rate in ``hs``, against the flows.

    A tidy table with columns ``iterate`` (the exact mean over the ``M!`` orders, or the single
    order farthest from the reference), ``reference`` (a flow of :data:`FLOWS` over time ``Mh``, or
    the mean iterate), ``expected`` (the order of :data:`EPOCH_COMPARISONS`), ``h`` and ``error``
    (Euclidean distance, units of θ).
    """
    iterates = epoch_iterates(batch_loss, batches, theta0, hs)
    hs = np.asarray(hs, dtype=np.float64)
    references = {name: modified_flow_ends(batch_loss, batches, theta0, hs, name) for name in FLOWS}
    references["mean iterate"] = iterates.mean(axis=1)
    rows = []
    for (iterate, reference), expected in EPOCH_COMPARISONS.items():
        ref = references[reference]
        if iterate == "mean iterate":
            errors = np.linalg.norm(references["mean iterate"] - ref, axis=1)
        else:
            errors = np.linalg.norm(iterates - ref[:, None], axis=2).max(axis=1)
        rows += [{"iterate": iterate, "reference": reference, "expected": expected, "h": h,
                  "error": e} for h, e in zip(hs, errors)]
    return pd.DataFrame(rows)

