"""Curvature of the full-training-set loss by Hessian-vector products.

Notation: ``E(θ) = (1/B) Σ_b L(θ, batch_b)`` the mean of the per-batch mean losses over ``B``
equal-size batches (so ``E`` is the mean loss over every example kept), ``θ ∈ R^m``,
``H = ∇²E(θ)``. Nothing here forms ``H``: every quantity is built from products ``H v``, computed
forward-over-reverse (``jax.jvp`` of ``jax.grad``) one batch at a time, so the memory is that of
one batch whatever the data set size.

Calling convention shared with :mod:`igrlib.maths.robustness` and :mod:`igrlib.maths.landscape`:

* ``loss_fn(params, batch) -> scalar``: the mean loss over one batch ``(x, y)``; a jittable pure
  function of a parameter pytree;
* ``batches = (xb, yb)``: arrays whose leading axis indexes batches, shapes ``(B, batch_size, ...)``
  (see :func:`stack_batches`);
* functions that draw random numbers take a ``jax.random`` key.

``loss_fn`` is a static argument of the compiled functions: passing the same function object
again reuses the compilation, and arrays it closes over are compiled in as constants, so data
should travel in ``batches``.

Estimators (units: loss per parameter², the units of ``H``):

* :func:`top_eigenvalues`: extreme eigenvalues by Lanczos with full reorthogonalisation
  (``matfree.decomp.tridiag_sym``), the book's one sharpness estimator (it reaches the top
  eigenvalue in far fewer products than PyHessian's power iteration, see the Performance page);
* :func:`hessian_trace`: Hutchinson's estimator ``tr H ≈ (1/n) Σ_i v_iᵀ H v_i`` with Rademacher
  ``v_i`` (``matfree.stochtrace``), with its standard error;
* :func:`spectral_density`: stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from matfree import decomp, stochtrace

from igrlib.maths import loops
from igrlib.maths.models import num_params
from igrlib.config import ConfigError, check_choice, check_int, check_positive

Params = Any
Batch = tuple[jax.Array, jax.Array]
LossFn = Callable[[Params, Batch], jax.Array]
WHICH: tuple[str, ...] = ("largest", "smallest", "both")


def check_batches(batches: Any) -> int:
    """Return the number of batches ``B``; raise :class:`ConfigError` unless ``batches`` is a pair
    ``(xb, yb)`` of arrays with the same leading (batch-index) length ``B ≥ 1``, optionally followed
    by a third element: a pytree of per-batch context whose leaves also lead with ``B`` (e.g.
    batch-norm statistics, see :func:`with_context`)."""
    if not isinstance(batches, (tuple, list)) or len(batches) not in (2, 3):
        raise ConfigError("batches must be a pair (xb, yb) of arrays shaped (n_batches, batch_size, ...)"
                          ", optionally with a third element of per-batch context")
    xb, yb = batches[:2]
    if np.ndim(xb) < 2 or np.ndim(yb) < 2:
        raise ConfigError(
            f"batches arrays need a batch-index axis and a batch axis, got shapes "
            f"{np.shape(xb)} and {np.shape(yb)}; use stack_batches(x, y, batch_size)"
        )
    if np.shape(xb)[:2] != np.shape(yb)[:2] or np.shape(xb)[0] < 1:
        raise ConfigError(
            f"xb and yb must share (n_batches, batch_size) ≥ 1, got {np.shape(xb)[:2]} and {np.shape(yb)[:2]}"
        )
    n_batches = int(np.shape(xb)[0])
    if len(batches) == 3:
        leads = {np.shape(leaf)[:1] for leaf in jax.tree.leaves(batches[2])}
        if leads - {(n_batches,)}:
            raise ConfigError(f"every leaf of the batch context must lead with n_batches={n_batches}, "
                              f"got leading shapes {sorted(leads)}")
    return n_batches


def with_context(batches: Batch, context: Any) -> tuple[jax.Array, jax.Array, Any]:
    """``(xb, yb, context repeated B times)``: batches whose loss also reads ``context``.

    Passing fixed model state (batch-norm running statistics) this way, instead of closing a loss
    function over it, keeps the loss function the same Python object for every network of one
    architecture, so the jitted curvature functions compile once, not once per network.
    """
    n_batches = check_batches(batches)
    tiled = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_batches, *np.shape(a))), context)
    return (batches[0], batches[1], tiled)


def stack_batches(x: jax.Array, y: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Reshape examples ``x: (N, ...)``, ``y: (N, ...)`` into ``(B, batch_size, ...)`` batches.

    ``B = N // batch_size``; the last ``N mod batch_size`` examples are dropped (in order, no
    shuffling), so every batch has the same size and the mean over batches is the mean over the
    ``B·batch_size`` examples kept. Use ``batch_size`` dividing ``N`` to keep them all.
    """
    if np.shape(x)[:1] != np.shape(y)[:1]:
        raise ConfigError(f"x and y must have the same number of examples, got {np.shape(x)[0]} and {np.shape(y)[0]}")
    if not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= np.shape(x)[0]:
        raise ConfigError(f"batch_size must be an integer in [1, {np.shape(x)[0]}], got {batch_size!r}")
    n_batches = np.shape(x)[0] // batch_size
    keep = n_batches * batch_size
    return (
        jnp.reshape(x[:keep], (n_batches, batch_size, *np.shape(x)[1:])),
        jnp.reshape(y[:keep], (n_batches, batch_size, *np.shape(y)[1:])),
    )


def batch_mean(fn: Callable[[Batch], Any], batches: Batch) -> Any:
    """``(1/B) Σ_b fn(batch_b)`` for a pytree-valued ``fn``, accumulated by ``lax.scan`` so that only
    one batch's intermediates are alive at a time."""
    n_batches = check_batches(batches)
    first = jax.tree.map(lambda a: a[0], batches)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first))

    def step(total, batch):
        return jax.tree.map(jnp.add, total, fn(batch)), None

    total, _ = loops.scan(step, zeros, batches)
    return jax.tree.map(lambda t: t / n_batches, total)


@partial(jax.jit, static_argnums=0)
def full_loss(loss_fn: LossFn, params: Params, batches: Batch) -> jax.Array:
    """``E(θ) = (1/B) Σ_b loss_fn(θ, batch_b)``, the mean loss over all batches (loss units)."""
    return batch_mean(lambda batch: loss_fn(params, batch), batches)


@partial(jax.jit, static_argnums=0)
def full_grad(loss_fn: LossFn, params: Params, batches: Batch) -> Params:
    """``∇E(θ) = (1/B) Σ_b ∇_θ loss_fn(θ, batch_b)``, a pytree like ``params`` (loss/param)."""
    return batch_mean(lambda batch: jax.grad(loss_fn)(params, batch), batches)


@partial(jax.jit, static_argnums=0)
def hvp(loss_fn: LossFn, params: Params, batches: Batch, v: Params) -> Params:
    """``H v = ∇²E(θ) v``, forward-over-reverse per batch, ``(1/B) Σ_b ∂_t ∇L_b(θ + t v)|_{t=0}``.

    ``v`` is a pytree like ``params``; the cost is about that of two gradient evaluations.
    """
    def batch_hvp(batch: Batch) -> Params:
        return jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (v,))[1]

    return batch_mean(batch_hvp, batches)


def _flat_hvp(loss_fn: LossFn, params: Params, batches: Batch) -> Callable[[jax.Array], jax.Array]:
    """``v ↦ H v`` on flat vectors of length ``m`` (ordered as ``ravel_pytree(params)``)."""
    unravel = ravel_pytree(params)[1]
    return lambda v: ravel_pytree(hvp(loss_fn, params, batches, unravel(v)))[0]


class Eigenpairs(NamedTuple):
    """Approximate eigenpairs of ``H``.

    ``eigenvalues`` ascending (loss/param²); ``eigenvectors`` a pytree like ``params`` whose leaves
    carry a leading axis matching ``eigenvalues``, each of unit norm; ``residual_norms`` the
    residuals ``‖H u − λ u‖`` (a converged pair has a residual far below ``|λ|``);
    ``num_hvps`` the number of Hessian-vector products spent.
    """

    eigenvalues: np.ndarray
    eigenvectors: Params
    residual_norms: np.ndarray
    num_hvps: int

    @property
    def largest(self) -> float:
        """The largest eigenvalue found."""
        return float(self.eigenvalues[-1])

    @property
    def smallest(self) -> float:
        """The smallest (most negative) eigenvalue found."""
        return float(self.eigenvalues[0])


@partial(jax.jit, static_argnums=(0, 4))
def _lanczos(loss_fn, params, batches, key, num_iters):
    flat = ravel_pytree(params)[0]
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    # Never differentiated here, so the plain forward pass of matfree suffices.
    tridiag = decomp.tridiag_sym(num_iters, reortho="full", custom_vjp=False)
    basis, tridiagonal, residual, _ = tridiag(_flat_hvp(loss_fn, params, batches), v0)
    ritz_values, s = jnp.linalg.eigh(tridiagonal)
    # Lanczos relation H Q = Q T + r e_kᵀ gives ‖H Q s − θ Q s‖ = ‖r‖·|s_k| for each Ritz pair.
    residual_norms = jnp.linalg.norm(residual) * jnp.abs(s[-1, :])
    return ritz_values, s.T @ basis, residual_norms


def _lanczos_on_host(loss_fn, params, batches, key, num_iters):
    """:func:`_lanczos` with the iteration in Python: ``w = H q_j``, ``α_j = q_jᵀ w``, ``w`` made
    orthogonal to the whole basis (twice, for stability), ``β_j = ‖w‖``, ``q_{j+1} = w/β_j``."""
    flat = ravel_pytree(params)[0]
    matvec = _flat_hvp(loss_fn, params, batches)
    q = jax.random.normal(key, flat.shape, flat.dtype)
    basis = [q / jnp.linalg.norm(q)]
    alphas, betas = [], []
    for j in range(num_iters):
        w = matvec(basis[-1])
        alphas.append(jnp.dot(basis[-1], w))
        stacked = jnp.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        if j < num_iters - 1:
            betas.append(jnp.linalg.norm(w))
            basis.append(w / betas[-1])
    off = jnp.asarray(betas, flat.dtype)
    tridiagonal = jnp.diag(jnp.asarray(alphas)) + jnp.diag(off, 1) + jnp.diag(off, -1)
    ritz_values, s = jnp.linalg.eigh(tridiagonal)
    residual_norms = jnp.linalg.norm(w) * jnp.abs(s[-1, :])
    return ritz_values, s.T @ jnp.stack(basis), residual_norms


def top_eigenvalues(
    loss_fn: LossFn,
    params: Params,
    batches: Batch,
    key: jax.Array,
    k: int = 1,
    num_iters: int = 20,
    which: str = "largest",
    on_host: bool = False,
) -> Eigenpairs:
    """Extreme eigenvalues of ``H = ∇²E(θ)`` by ``num_iters`` Lanczos steps with full
    reorthogonalisation, from a Gaussian starting vector drawn with ``key``.

    Lanczos builds an orthonormal Krylov basis ``Q`` of ``span{v, Hv, …, H^{n-1}v}`` and the
    tridiagonal ``T = Qᵀ H Q``; the eigenvalues of ``T`` (Ritz values) approach the extreme
    eigenvalues of ``H`` from inside, the largest ones much faster than power iteration does.
    ``which`` selects the ``k`` largest, the ``k`` smallest (for a non-convex net the most negative
    curvature), or both (``2k`` values). Returns :class:`Eigenpairs` with ``num_hvps = num_iters``.
    Memory: the basis holds ``num_iters × m`` numbers.

    ``on_host=True`` runs the same iteration from Python, one jitted HVP per step, instead of as
    one XLA loop (matfree): for convolutional networks on CPU, where a convolution inside an XLA
    loop body runs several times slower (jax-ml/jax#12868).
    """
    check_choice(which, WHICH, "which")
    check_batches(batches)
    m = num_params(params)
    check_int(num_iters, "num_iters", 1, m)
    check_int(k, "k", 1, num_iters // 2 if which == "both" else num_iters)
    lanczos = _lanczos_on_host if on_host else _lanczos
    values, vectors, residuals = lanczos(loss_fn, params, batches, key, num_iters)
    index = {
        "largest": np.arange(num_iters - k, num_iters),
        "smallest": np.arange(k),
        "both": np.concatenate([np.arange(k), np.arange(num_iters - k, num_iters)]),
    }[which]
    unravel = ravel_pytree(params)[1]
    return Eigenpairs(
        np.asarray(values)[index],
        jax.vmap(unravel)(vectors[index]),
        np.asarray(residuals)[index],
        num_iters,
    )


class TraceEstimate(NamedTuple):
    """Hutchinson estimate ``trace`` of ``tr H`` (loss/param²), its standard error ``stderr``, the
    per-probe values ``samples`` (``v_iᵀ H v_i``) and ``num_hvps`` (one per probe)."""

    trace: float
    stderr: float
    samples: np.ndarray
    num_hvps: int


def _rademacher_probe(params: Params) -> Callable[[jax.Array], Params]:
    """``key ↦ v`` with independent ±1 entries, a pytree like ``params`` (matfree's sampler)."""
    sampler = stochtrace.sampler_signs(params, num=1)
    return lambda key: jax.tree.map(lambda a: a[0], sampler(key))


@partial(jax.jit, static_argnums=(0, 4, 5))
def _hutchinson(loss_fn, params, batches, key, num_samples, sample_batch):
    integrand = stochtrace.monte_carlo_trace()
    probe = _rademacher_probe(params)

    def sample(probe_key):
        return integrand(lambda v: hvp(loss_fn, params, batches, v), probe(probe_key))

    keys = jax.random.split(key, num_samples)
    if sample_batch is not None and sample_batch >= num_samples:
        # one vmapped batch, no loop around it (a loop slows convolutions on CPU, jax-ml/jax#12868)
        return jax.vmap(sample)(keys)
    return lax.map(sample, keys, batch_size=sample_batch)


def hessian_trace(
    loss_fn: LossFn,
    params: Params,
    batches: Batch,
    key: jax.Array,
    num_samples: int = 100,
    sample_batch: int | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate of ``tr H``: ``(1/n) Σ_i v_iᵀ H v_i`` over ``n = num_samples``
    Rademacher probes ``v_i ∈ {±1}^m`` (probe ``i`` drawn from ``jax.random.split(key, n)[i]``).

    Unbiased, with variance ``2 Σ_{j≠l} H_jl² / n``; the standard error reported is
    ``std(samples, ddof=1)/√n``. ``sample_batch`` probes are evaluated together by ``vmap``
    (``None``: one at a time, the least memory).
    """
    check_batches(batches)
    check_int(num_samples, "num_samples", 2)
    if sample_batch is not None:
        check_int(sample_batch, "sample_batch", 1)
    samples = np.asarray(_hutchinson(loss_fn, params, batches, key, num_samples, sample_batch))
    return TraceEstimate(
        float(samples.mean()),
        float(samples.std(ddof=1) / np.sqrt(num_samples)),
        samples,
        num_samples,
    )


class SpectralDensity(NamedTuple):
    """Stochastic-Lanczos-quadrature estimate of the eigenvalue density of ``H``.

    ``grid`` eigenvalue abscissae (loss/param²) and ``density`` on it (per unit eigenvalue,
    integrating to 1; multiply by ``m`` for an eigenvalue count); ``nodes`` and ``weights``
    ``(num_samples, num_iters)``: the Gauss quadrature rule of each probe before broadening;
    ``width`` the Gaussian broadening standard deviation; ``num_hvps`` the products spent.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    width: float
    num_hvps: int


@partial(jax.jit, static_argnums=(0, 4, 5))
def _slq(loss_fn, params, batches, key, num_samples, num_iters):
    tridiag = decomp.tridiag_sym(num_iters, reortho="full", custom_vjp=False)
    probe = _rademacher_probe(params)
    matvec = _flat_hvp(loss_fn, params, batches)

    def quadrature(probe_key):
        _, tridiagonal, _, _ = tridiag(matvec, ravel_pytree(probe(probe_key))[0])
        nodes, s = jnp.linalg.eigh(tridiagonal)
        return nodes, s[0, :] ** 2

    return lax.map(quadrature, jax.random.split(key, num_samples))


def spectral_density(
    loss_fn: LossFn,
    params: Params,
    batches: Batch,
    key: jax.Array,
    num_iters: int = 30,
    num_samples: int = 4,
    num_points: int = 512,
    width: float | None = None,
) -> SpectralDensity:
    """Eigenvalue density ``φ(t) = (1/m) Σ_j δ(t − λ_j)`` of ``H`` by stochastic Lanczos quadrature.

    For each of ``num_samples`` Rademacher probes ``v`` (drawn as in :func:`hessian_trace`, so the
    same ``key`` gives the same probes), ``num_iters`` Lanczos steps from ``v`` give
    ``T = S diag(θ) Sᵀ``; the Gauss rule with nodes ``θ_j`` and weights ``w_j = S_0j²``
    (``Σ_j w_j = 1``) satisfies ``Σ_j w_j f(θ_j) ≈ vᵀ f(H) v / m``. The estimate is
    ``φ(t) ≈ (1/n) Σ_probes Σ_j w_j N(t; θ_j, width²)``, evaluated on ``num_points`` equispaced
    points covering the nodes ± 5 widths. ``width`` defaults to 1% of the node range (our
    choice; 1 if all nodes coincide).
    Its first moment ``Σ_j w_j θ_j = vᵀHv/m`` is exactly the Hutchinson sample of the same probe
    divided by ``m``.
    """
    check_batches(batches)
    check_int(num_iters, "num_iters", 1, num_params(params))
    check_int(num_samples, "num_samples", 1)
    check_int(num_points, "num_points", 2)
    if width is not None:
        check_positive(width, "width")
    nodes, weights = (np.asarray(a) for a in _slq(loss_fn, params, batches, key, num_samples, num_iters))
    low, high = float(nodes.min()), float(nodes.max())
    width = float(width) if width is not None else 0.01 * (high - low) or 1.0
    grid = np.linspace(low - 5 * width, high + 5 * width, num_points)
    gauss = np.exp(-0.5 * ((grid[:, None, None] - nodes) / width) ** 2) / (width * np.sqrt(2 * np.pi))
    density = (gauss * weights).sum(axis=-1).mean(axis=-1)
    return SpectralDensity(grid, density, nodes, weights, width, num_samples * num_iters)
