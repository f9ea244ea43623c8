"""Low-dimensional slices of the loss landscape along filter-normalised directions.

Li, Xu, Taylor, Studer & Goldstein (2018), "Visualizing the loss landscape of neural nets":
a random direction ``d`` is rescaled filter by filter to the norm of the weights it moves, so
that slices of networks with different weight scales are comparable. Here a *filter* is one
output unit, which in Haiku is the LAST axis of a weight tensor (``Linear`` ``w`` is
``(in, out)``, ``Conv2D`` ``w`` is ``(h, w, in, out)``). The module itself is model-agnostic:
it only assumes that layout.

Conventions as in :mod:`igrlib.maths.curvature`: ``loss_fn(params, batch)``, ``batches = (xb, yb)``
with a leading batch-index axis, explicit ``jax.random`` keys.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from igrlib.config import ConfigError, check_choice
from igrlib.maths.curvature import Batch, LossFn, Params, check_batches, full_loss

#: Treatment of tensors with at most one axis (biases, normalisation scales and offsets).
BIAS_MODES: tuple[str, ...] = ("zero", "tensor")


def _check_direction(direction: Params, params: Params, name: str) -> None:
    same = jax.tree.structure(direction) == jax.tree.structure(params) and all(
        jnp.shape(d) == jnp.shape(p) for d, p in zip(jax.tree.leaves(direction), jax.tree.leaves(params))
    )
    if not same:
        raise ConfigError(f"{name} must be a pytree with the structure and leaf shapes of params")


@partial(jax.jit, static_argnames="bias_mode")
def filter_normalize(direction: Params, params: Params, bias_mode: str = "zero") -> Params:
    """Rescale ``direction`` filter by filter to the norms of ``params``.

    For a tensor with ≥ 2 axes, each output-unit slice becomes
    ``d[..., j] ← d[..., j] · ‖θ[..., j]‖ / ‖d[..., j]‖`` (norms over all axes but the last).
    Tensors with ≤ 1 axis are set to zero with ``bias_mode="zero"`` (Li et al.'s choice, and
    ours by default: biases then stay fixed along the slice), or rescaled as a whole,
    ``d ← d·‖θ‖/‖d‖``, with ``bias_mode="tensor"``. A zero slice of ``d`` stays zero.
    """
    check_choice(bias_mode, BIAS_MODES, "bias_mode")
    _check_direction(direction, params, "direction")

    def rescale(d: jax.Array, p: jax.Array) -> jax.Array:
        if jnp.ndim(p) <= 1 and bias_mode == "zero":
            return jnp.zeros_like(d)
        axes = tuple(range(jnp.ndim(p) - 1)) if jnp.ndim(p) >= 2 else None
        d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
        p_norm = jnp.sqrt(jnp.sum(jnp.square(p), axis=axes, keepdims=True))
        return d * p_norm / jnp.where(d_norm > 0, d_norm, 1)

    return jax.tree.map(rescale, direction, params)


@partial(jax.jit, static_argnames="bias_mode")
def random_filter_direction(params: Params, key: jax.Array, bias_mode: str = "zero") -> Params:
    """A Gaussian direction ``d = unravel(N(0, I_m))`` (drawn with ``key`` over the flattened
    parameters) passed through :func:`filter_normalize`."""
    flat, unravel = ravel_pytree(params)
    return filter_normalize(unravel(jax.random.normal(key, flat.shape, flat.dtype)), params, bias_mode)


def _check_coordinates(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} must be a non-empty 1-D sequence of finite numbers, got {values!r}")
    return array


@partial(jax.jit, static_argnums=(0, 5))
def _plane(loss_fn, params, batches, directions, coefficients, grid_batch):
    def at(c):
        moved = jax.tree.map(lambda p, *ds: p + sum(ci * d for ci, d in zip(c, ds)), params, *directions)
        return full_loss(loss_fn, moved, batches)

    return lax.map(at, coefficients, batch_size=grid_batch)


def slice_1d(
    loss_fn: LossFn,
    params: Params,
    batches: Batch,
    direction: Params,
    alphas: Any,
    grid_batch: int | None = None,
) -> np.ndarray:
    """``E(θ + α_i d)`` for each ``α_i`` in ``alphas``: the full-batch loss along a line.

    Returns a numpy array shaped like ``alphas``. ``grid_batch`` points are evaluated together by
    ``vmap`` (``None``: one at a time, the least memory).
    """
    check_batches(batches)
    _check_direction(direction, params, "direction")
    grid = _check_coordinates(alphas, "alphas")
    dtype = jnp.result_type(*jax.tree.leaves(params))
    coefficients = jnp.asarray(grid[:, None], dtype)
    return np.asarray(_plane(loss_fn, params, batches, (direction,), coefficients, grid_batch))


def slice_2d(
    loss_fn: LossFn,
    params: Params,
    batches: Batch,
    d1: Params,
    d2: Params,
    alphas: Any,
    betas: Any,
    grid_batch: int | None = None,
) -> np.ndarray:
    """``Z[i, j] = E(θ + α_i d1 + β_j d2)``: the full-batch loss on a plane.

    Returns a numpy array of shape ``(len(alphas), len(betas))`` (``indexing="ij"``: for a
    contour plot use ``plt.contour(alphas, betas, Z.T)``). ``grid_batch`` as in :func:`slice_1d`.
    """
    check_batches(batches)
    _check_direction(d1, params, "d1")
    _check_direction(d2, params, "d2")
    a = _check_coordinates(alphas, "alphas")
    b = _check_coordinates(betas, "betas")
    dtype = jnp.result_type(*jax.tree.leaves(params))
    mesh = np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2)
    values = _plane(loss_fn, params, batches, (d1, d2), jnp.asarray(mesh, dtype), grid_batch)
    return np.asarray(values).reshape(a.size, b.size)
