"""Section 4: Hessian-vector products to reach the top Hessian eigenvalue, Lanczos vs power iteration.

Setting: a width-``width`` MLP trained briefly by igrlib on an MNIST subset, ``H = ∇²E`` of the
mean cross-entropy over the whole subset (:mod:`igrlib.maths.curvature`, one HVP = one pass of
forward-over-reverse over every batch).

* Reference ``λ_ref``: the top Ritz value after ``ref_iters`` Lanczos steps; its residual
  ``‖Hu − λu‖`` bounds its error and is reported.
* Lanczos after ``k`` steps from the same start vector gives the top eigenvalue of the leading
  ``k×k`` block of the reference run's tridiagonal matrix, so one run yields the whole curve.
* Power iteration (the method of PyHessian) is run step by step, recording the Rayleigh quotient
  ``vᵀHv`` after each product, until its relative error ``|λ_k − λ_ref| / |λ_ref|`` is at most
  ``rtol`` or ``power_max`` products are spent.

``k_method`` is the first product count whose relative error is ≤ ``rtol``. Also reported: where
PyHessian's stopping rule (relative change of ``λ_k`` between two products ≤ ``rtol``, the rule
of :func:`power_iteration`) would stop, and the true error there (None if it would not stop
before the error reaches ``rtol``). Two implementations are then run from the same key and
compared with the curves (``implementation_check``): igrlib's
:func:`~igrlib.maths.curvature.top_eigenvalues` (Lanczos with ``k_lanczos`` steps) and this
module's :func:`power_iteration`, the PyHessian reference, with its first ``check_iters``
products. Wall time to ``rtol`` is ``k × t_hvp`` with ``t_hvp`` the median time of one product
(both methods spend nearly all their time in products: Lanczos' reorthogonalisation costs
``O(k²m)`` flops, negligible next to a product's ``O(N·m)``).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from matfree import decomp

from igrlib.io import data as data_mod
from igrlib.maths import curvature, losses
from igrlib.training.config import TrainConfig
from igrlib.training.program import train


def first_below(errors: np.ndarray, rtol: float) -> int | None:
    """The 1-based index of the first error ≤ ``rtol`` (a product count), or None."""
    hits = np.flatnonzero(np.asarray(errors) <= rtol)
    return int(hits[0]) + 1 if hits.size else None


class PowerResult(NamedTuple):
    """Power iteration's estimate ``λ`` (loss/param²), the products spent, and the residual
    ``‖Hv − λv‖`` of the last vector multiplied."""

    value: float
    num_hvps: int
    residual: float


@partial(jax.jit, static_argnums=0)
def _power(loss_fn, params, batches, key, max_iters, rtol):
    flat, unravel = ravel_pytree(params)

    def matvec(v):
        return ravel_pytree(curvature.hvp(loss_fn, params, batches, unravel(v)))[0]

    v = jax.random.normal(key, flat.shape, flat.dtype)
    v = v / jnp.linalg.norm(v)

    def not_converged(state):
        i, _, value, previous, _ = state
        return (i < max_iters) & ((i < 2) | (jnp.abs(value - previous) > rtol * jnp.abs(value)))

    def step(state):
        i, v, value, _, _ = state
        w = matvec(v)
        rayleigh = jnp.vdot(v, w)
        return i + 1, w / jnp.linalg.norm(w), rayleigh, value, jnp.linalg.norm(w - rayleigh * v)

    zero = jnp.zeros((), flat.dtype)
    init = (jnp.asarray(0), v, zero, zero, zero)
    i, _, value, _, residual = jax.lax.while_loop(not_converged, step, init)
    return i, value, residual


def power_iteration(loss_fn, params, batches, key: jax.Array, max_iters: int = 100,
                    rtol: float = 1e-3) -> PowerResult:
    """The dominant eigenvalue of ``H = ∇²E`` by power iteration, as PyHessian computes the top
    eigenvalue: the reference this section compares Lanczos with.

    From a Gaussian ``v`` drawn with ``key`` (the start vector of igrlib's Lanczos with the same
    key), normalised, iterate ``w = Hv``, ``λ_k = vᵀw`` (the Rayleigh quotient), ``v ← w/‖w‖``.
    Stopping rule (PyHessian's): stop after product ``k ≥ 2`` once
    ``|λ_k − λ_{k−1}| ≤ rtol·|λ_k|``, or after ``max_iters`` products. It converges to the
    eigenvalue of largest modulus, the top one unless the most negative eigenvalue is larger in
    modulus; the rule stops on a slow change, not on a small error, which this section measures.
    ``loss_fn(params, batch)`` and ``batches`` follow :mod:`igrlib.maths.curvature`.
    """
    if not (isinstance(max_iters, int) and max_iters >= 1 and rtol > 0):
        raise ValueError(f"need max_iters >= 1 and rtol > 0, got {max_iters!r} and {rtol!r}")
    i, value, residual = _power(loss_fn, params, batches, key, max_iters, rtol)
    return PowerResult(float(value), int(i), float(residual))


def _trained(width: int, n_train: int, n_test: int, epochs: int, eval_every: int,
             learning_rate: float, batch_size: int):
    data = data_mod.load("mnist", n_train=n_train, n_test=n_test)
    cfg = TrainConfig(width=width, n_train=n_train, n_test=n_test, epochs=epochs,
                      eval_every=eval_every, learning_rate=learning_rate, batch_size=batch_size,
                      selection="test")
    result = train(cfg, data, progress=False)
    model = cfg.build_model()

    def loss_fn(params, batch):
        return losses.cross_entropy(model.apply(params, {}, batch[0], False)[0], batch[1])

    return data, loss_fn, jax.tree.map(jnp.asarray, result.params), result.history["train_acc"][-1]


def run(width: int, n_train: int, hvp_batch: int, train_epochs: int, learning_rate: float,
        ref_iters: int, power_max: int, rtol: float = 1e-3, seed: int = 0, batch_size: int = 512,
        n_test: int = 1000, eval_every: int | None = None, check_iters: int = 10) -> dict[str, Any]:
    """The whole section; see the module docstring. The network is trained by
    :func:`igrlib.training.program.train` for ``train_epochs`` epochs (evaluated every ``eval_every``,
    default only at the end, on ``n_test`` test examples). :func:`power_iteration` is checked
    against the curve over its first ``check_iters`` products."""
    data, loss_fn, params, train_acc = _trained(width, n_train, n_test, train_epochs,
                                                eval_every or train_epochs, learning_rate, batch_size)
    batches = curvature.stack_batches(jnp.asarray(data.x_train), jnp.asarray(data.y_train), hvp_batch)
    flat, unravel = ravel_pytree(params)
    key = jax.random.key(seed)

    # params and data are arguments of the compiled functions, not constants closed over
    def matvec(params, batches, v):
        return ravel_pytree(curvature.hvp(loss_fn, params, batches, unravel(v)))[0]

    @jax.jit
    def reference(params, batches, v0):
        tridiag = decomp.tridiag_sym(ref_iters, reortho="full", custom_vjp=False)
        _, tridiagonal, residual, _ = tridiag(lambda v: matvec(params, batches, v), v0)
        values, s = jnp.linalg.eigh(tridiagonal)
        return tridiagonal, values[-1], jnp.linalg.norm(residual) * jnp.abs(s[-1, -1])

    @jax.jit
    def power_step(params, batches, v):
        w = matvec(params, batches, v)
        return w / jnp.linalg.norm(w), jnp.vdot(v, w)

    # the start vector top_eigenvalues and power_iteration draw from `key`
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    tridiagonal, lam_ref, residual_ref = jax.device_get(reference(params, batches, v0))
    lanczos_curve = np.array([np.linalg.eigvalsh(tridiagonal[:k, :k])[-1] for k in range(1, ref_iters + 1)])
    lanczos_err = np.abs(lanczos_curve - lam_ref) / abs(lam_ref)

    v = v0 / jnp.linalg.norm(v0)
    jax.block_until_ready(power_step(params, batches, v))  # compile
    power_curve, hvp_s = [], []
    while len(power_curve) < power_max:
        start = time.perf_counter()
        v, value = jax.block_until_ready(power_step(params, batches, v))
        hvp_s.append(time.perf_counter() - start)
        power_curve.append(float(value))
        if abs(power_curve[-1] - lam_ref) <= rtol * abs(lam_ref):
            break
    power_err = np.abs(np.asarray(power_curve) - lam_ref) / abs(lam_ref)
    k_lanczos, k_power = first_below(lanczos_err, rtol), first_below(power_err, rtol)
    # PyHessian's stopping rule, |λ_k − λ_{k−1}| ≤ rtol·|λ_k|, as power_iteration applies it
    changes = np.abs(np.diff(power_curve)) / np.abs(np.asarray(power_curve[1:]))
    stop = first_below(changes, rtol)
    t_hvp = float(np.median(hvp_s))

    check: dict[str, Any] = {}
    if k_lanczos is not None:
        top = curvature.top_eigenvalues(loss_fn, params, batches, key, num_iters=k_lanczos)
        check["lanczos"] = {"value": top.largest, "curve": float(lanczos_curve[k_lanczos - 1]),
                            "num_hvps": top.num_hvps}
    # the first products suffice to show that the curve is power_iteration's; a tolerance far
    # below float32 resolution makes it spend exactly that many, unless λ stops changing
    k_check = min(len(power_curve), check_iters)
    power = power_iteration(loss_fn, params, batches, key, max_iters=k_check, rtol=1e-12)
    check["power"] = {"value": power.value, "curve": power_curve[k_check - 1],
                      "num_hvps": power.num_hvps}
    return {
        "settings": {"width": width, "n_train": n_train, "hvp_batch": hvp_batch,
                     "train_epochs": train_epochs, "learning_rate": learning_rate,
                     "ref_iters": ref_iters, "power_max": power_max, "rtol": rtol, "seed": seed,
                     "check_iters": check_iters,
                     "dataset": data.label},
        "num_params": int(flat.size),
        "train_acc": float(train_acc),
        "lambda_ref": float(lam_ref),
        "lambda_ref_residual": float(residual_ref),
        "lanczos_rel_error": lanczos_err.tolist(),
        "power_rel_error": power_err.tolist(),
        "hvps": {"lanczos": k_lanczos, "power": k_power},
        # power iteration not there within power_max products: the ratio is an upper bound
        "hvp_ratio": None if k_lanczos is None else k_lanczos / (k_power or power_max),
        "hvp_ratio_is_upper_bound": k_power is None,
        "power_stopping_rule": None if stop is None else {"hvps": stop + 1,
                                                           "rel_error": float(power_err[stop])},
        "hvp_s": t_hvp,
        "wall_s": {"lanczos": None if k_lanczos is None else k_lanczos * t_hvp,
                   "power": None if k_power is None else k_power * t_hvp},
        "implementation_check": check,
    }
