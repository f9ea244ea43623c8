"""Flatness measured from outside: robustness to parameter noise and the slope of the loss surface.

Prediction 2.4 of the paper: optima found with larger learning rates stay accurate when their
parameters are perturbed, ``θ + δ`` with ``δ ~ N(0, σ² I)``. Prediction 2.2: they sit where the
loss surface is shallower. The paper leaves the σ grid and the exact slope definition open; this
module measures both with stated formulas (see :func:`gaussian_perturbation`, :func:`loss_slope`).

Conventions as in :mod:`igrlib.maths.curvature`: ``loss_fn(params, batch)``, ``batches = (xb, yb)``
with a leading batch-index axis, explicit ``jax.random`` keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from igrlib.config import ConfigError, check_choice, check_int, check_positive
from igrlib.maths.curvature import Batch, LossFn, Params, batch_mean, check_batches, full_loss

NOISE_MODES: tuple[str, ...] = ("absolute", "relative")


@partial(jax.jit, static_argnames="mode")
def gaussian_perturbation(params: Params, key: jax.Array, sigma: float | jax.Array, mode: str = "absolute") -> Params:
    """``θ + δ`` with independent Gaussian noise on every parameter.

    * ``mode="absolute"``: ``δ ~ N(0, σ² I)``, the paper's perturbation; σ in parameter units.
    * ``mode="relative"``: per parameter tensor ``t`` with ``n_t`` entries,
      ``δ_t ~ N(0, σ² ‖θ_t‖²/n_t · I)``, i.e. the noise standard deviation is σ times the
      root-mean-square of that tensor (σ dimensionless). A tensor of zeros (e.g. biases at
      initialisation) gets no noise.

    The standard-normal draw is ``ε = unravel(N(0, I_m))`` drawn with ``key`` over the flattened
    parameters (``jax.flatten_util.ravel_pytree`` order), so the same key gives the same ``ε`` for
    every σ (``δ_t = scale_t·ε_t``) and ``σ = 0`` returns ``params`` exactly. Jittable and
    vmappable in ``key`` and ``sigma``.
    """
    check_choice(mode, NOISE_MODES, "mode")
    flat, unravel = ravel_pytree(params)
    noise = unravel(jax.random.normal(key, flat.shape, flat.dtype))

    def perturb(leaf: jax.Array, eps: jax.Array) -> jax.Array:
        scale = sigma if mode == "absolute" else sigma * jnp.sqrt(jnp.mean(jnp.square(leaf)))
        return leaf + scale * eps

    return jax.tree.map(perturb, params, noise)


def _check_grid(values: Any, name: str, nonnegative: bool = False) -> np.ndarray:
    """Return ``values`` as a finite, non-empty 1-D float array, or raise :class:`ConfigError`."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} must be a non-empty 1-D sequence of finite numbers, got {values!r}")
    if nonnegative and np.any(array < 0):
        raise ConfigError(f"{name} must be ≥ 0, got {values!r}")
    return array


@partial(jax.jit, static_argnums=(0, 1, 2))
def _noisy_metrics(eval_fn, mode, draw_batch, params, keys, sigmas, args):
    """``{metric: array (len(sigmas), len(keys))}`` of metrics at every (σ, draw)."""
    def at_sigma(sigma):
        def one(draw_key):
            return eval_fn(gaussian_perturbation(params, draw_key, sigma, mode), *args)

        return lax.map(one, keys, batch_size=draw_batch)

    return lax.map(at_sigma, sigmas)


def noise_robustness(
    eval_fn: Callable[..., Mapping[str, jax.Array]],
    params: Params,
    key: jax.Array,
    sigmas: Sequence[float],
    num_draws: int,
    mode: str = "absolute",
    draw_batch: int | None = None,
    args: tuple = (),
) -> dict[str, np.ndarray]:
    """Metrics of noisy copies of ``params``: mean, spread and standard error over draws per σ.

    For each ``σ`` in ``sigmas`` and draw ``d < num_draws``, evaluates
    ``eval_fn(gaussian_perturbation(params, k_d, σ, mode))`` with ``k_d =
    jax.random.split(key, num_draws)[d]``: the same noise directions for every σ (common random
    numbers, so curves over σ are smooth and their differences precise). ``eval_fn`` maps a
    parameter pytree to a dict of scalar metrics (e.g. ``{"test_acc": …, "test_loss": …}``) and
    must be jittable; ``eval_fn(params, *args)`` is called, so data passed in ``args`` is an
    argument of the compiled program (not a constant) and one ``eval_fn`` object compiles once
    for every call; draws are evaluated ``draw_batch`` at a time by ``vmap`` (``None``: all
    together), σ values one after the other. ``σ = 0`` rows are ``eval_fn(params)`` itself, with
    zero spread.

    Returns a tidy table, one row per (σ, metric), as a dict of equal-length 1-D numpy arrays
    (``pandas.DataFrame(result)``): ``sigma``, ``metric``, ``mean`` (over draws), ``std``
    (``ddof=1``), ``stderr`` (``std/√num_draws``), ``num_draws``.
    """
    sigma_grid = _check_grid(sigmas, "sigmas", nonnegative=True)
    check_int(num_draws, "num_draws", 2)
    check_choice(mode, NOISE_MODES, "mode")
    if draw_batch is not None:
        check_int(draw_batch, "draw_batch", 1)
    clean = {name: np.asarray(value) for name, value in eval_fn(params, *args).items()}
    if not clean or any(value.ndim != 0 for value in clean.values()):
        raise ConfigError(f"eval_fn must return a non-empty dict of scalars, got shapes "
                          f"{ {name: value.shape for name, value in clean.items()} }")

    noisy = sigma_grid[sigma_grid > 0]
    values = {}
    if noisy.size:
        dtype = jnp.result_type(*jax.tree.leaves(params))
        keys = jax.random.split(key, num_draws)
        batch = draw_batch or num_draws
        values = _noisy_metrics(eval_fn, mode, batch, params, keys, jnp.asarray(noisy, dtype),
                                tuple(args))
        values = {name: np.asarray(v) for name, v in values.items()}

    rows: dict[str, list] = {c: [] for c in ("sigma", "metric", "mean", "std", "stderr", "num_draws")}
    position = np.cumsum(sigma_grid > 0) - 1
    for i, sigma in enumerate(sigma_grid):
        for name, value in clean.items():
            if sigma > 0:
                draws = values[name][position[i]]
                mean, std = float(draws.mean()), float(draws.std(ddof=1))
            else:
                # The noise is identically zero at σ = 0: the clean evaluation is exact and cheaper.
                mean, std = float(value), 0.0
            rows["sigma"].append(float(sigma))
            rows["metric"].append(name)
            rows["mean"].append(mean)
            rows["std"].append(std)
            rows["stderr"].append(std / np.sqrt(num_draws))
            rows["num_draws"].append(num_draws)
    return {column: np.asarray(entries) for column, entries in rows.items()}


@jax.jit
def random_unit_direction(params: Params, key: jax.Array) -> Params:
    """A direction ``u`` uniform on the unit sphere of ``R^m``: ``g/‖g‖``, ``g ~ N(0, I_m)``,
    returned as a pytree like ``params`` (the norm is taken over all ``m`` parameters)."""
    flat, unravel = ravel_pytree(params)
    g = jax.random.normal(key, flat.shape, flat.dtype)
    return unravel(g / jnp.linalg.norm(g))


class Slope(NamedTuple):
    """Loss-surface slope at ``θ`` (loss per parameter-space distance).

    ``grad_norm`` = ``‖∇E(θ)‖``; ``slopes[i] = |E(θ + r u_i) − E(θ)| / r``; ``mean_abs_slope`` their
    mean and ``stderr`` its standard error (``std(ddof=1)/√n``); ``radius`` = ``r``.
    """

    grad_norm: float
    mean_abs_slope: float
    stderr: float
    slopes: np.ndarray
    radius: float


@partial(jax.jit, static_argnums=(0, 5))
def _slopes(loss_fn, params, batches, keys, radius, direction_batch):
    loss, grad = batch_mean(lambda batch: jax.value_and_grad(loss_fn)(params, batch), batches)

    def slope(direction_key):
        moved = jax.tree.map(lambda p, u: p + radius * u, params, random_unit_direction(params, direction_key))
        return jnp.abs(full_loss(loss_fn, moved, batches) - loss) / radius

    grad_norm = jnp.linalg.norm(ravel_pytree(grad)[0])
    return grad_norm, lax.map(slope, keys, batch_size=direction_batch)


def loss_slope(
    loss_fn: LossFn,
    params: Params,
    batches: Batch,
    key: jax.Array,
    radius: float,
    num_directions: int,
    direction_batch: int | None = None,
) -> Slope:
    """Slope of the full-batch loss ``E`` at ``θ``, two ways.

    * ``grad_norm = ‖∇E(θ)‖``, the steepest slope;
    * ``mean_abs_slope = (1/n) Σ_i |E(θ + r u_i) − E(θ)| / r`` over ``n = num_directions``
      directions ``u_i = random_unit_direction(params, jax.random.split(key, n)[i])``, uniform
      on the unit sphere: the typical rise over a finite step of length ``r = radius``. For small
      ``r`` each term is ``|∇E·u_i| + O(r)``, whose mean over the sphere is
      ``‖∇E‖·Γ(m/2)/(√π Γ((m+1)/2)) ≈ ‖∇E‖·√(2/(πm))``; at finite ``r`` it also feels curvature
      (``≈ r uᵀHu/2`` at a minimum). In float32, choose ``r`` so that the change in ``E`` is far
      above the rounding error of ``E``.

    ``direction_batch`` directions are evaluated together by ``vmap`` (``None``: one at a time).
    """
    check_batches(batches)
    check_positive(radius, "radius")
    check_int(num_directions, "num_directions", 2)
    if direction_batch is not None:
        check_int(direction_batch, "direction_batch", 1)
    keys = jax.random.split(key, num_directions)
    grad_norm, slopes = _slopes(loss_fn, params, batches, keys, radius, direction_batch)
    slopes = np.asarray(slopes)
    return Slope(
        float(grad_norm),
        float(slopes.mean()),
        float(slopes.std(ddof=1) / np.sqrt(num_directions)),
        slopes,
        float(radius),
    )
