"""Measurements of a trained network at its selected checkpoint (the predictions of Barrett & Dherin 2021, Figures 2 and 3).

:func:`measure` turns one network (model, parameters, state) and its data into the numbers the
paper's Figures 2 and 3 plot:

* ``train_loss_full`` ``E`` (nats) and ``r_ig = ‖∇E‖²/m`` over the whole training split, and
  ``grad_norm = ‖∇E‖``;
* ``lambda_max``/``lambda_min``: extreme Hessian eigenvalues (Lanczos) and ``hessian_trace``
  (Hutchinson, with ``hessian_trace_se``) of the loss over ``curvature_examples`` training examples;
* ``mean_abs_slope``: mean ``|E(θ + r u) − E(θ)|/r`` over random unit directions ``u``;
* robustness: test accuracy and loss under Gaussian parameter noise over a σ grid;
* 1-D and 2-D loss slices along filter-normalised random directions.

Every loss here is in evaluation mode (batch-norm running statistics), so ``E`` is a fixed
function of θ.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from igrlib.maths import curvature, landscape, losses, robustness
from igrlib.config import ConfigError, check_choice, check_positive
from igrlib.io.data import Dataset
from igrlib.maths.models import Model, num_params
from igrlib.maths.objectives import full_batch_grad_fn, loss_fn, split, split_eval_fn


@dataclass(frozen=True)
class MeasureConfig:
    """What to measure and how precisely; part of a run's config (so of its record id)."""

    curvature_examples: int = 2048
    curvature_batch: int = 512
    lanczos_iters: int = 20
    trace_samples: int = 20
    slope_radius: float = 0.05
    slope_directions: int = 10
    sigmas: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
    noise_mode: str = "relative"
    noise_draws: int = 5
    slice_radius: float = 1.0
    slice_points_1d: int = 21
    slice_points_2d: int = 11
    slices: bool = True
    #: Lanczos steps from Python and all Hutchinson probes in one vmapped batch, instead of XLA
    #: loops: several times faster for convolutional networks on CPU (jax-ml/jax#12868), at the
    #: cost of memory for ``trace_samples`` probes at once.
    avoid_xla_loops: bool = False

    def __post_init__(self) -> None:
        for name in ("curvature_examples", "curvature_batch", "lanczos_iters", "trace_samples",
                     "slope_directions", "noise_draws", "slice_points_1d", "slice_points_2d"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ConfigError(f"{name} must be an integer >= 2, got {value!r}")
        if self.curvature_examples % self.curvature_batch:
            raise ConfigError("curvature_examples must be a multiple of curvature_batch")
        if not isinstance(self.avoid_xla_loops, bool):
            raise ConfigError(f"avoid_xla_loops must be True or False, got {self.avoid_xla_loops!r}")
        check_positive(self.slope_radius, "slope_radius")
        check_positive(self.slice_radius, "slice_radius")
        check_choice(self.noise_mode, robustness.NOISE_MODES, "noise mode")
        sigmas = tuple(float(s) for s in self.sigmas)
        if not sigmas or min(sigmas) < 0:
            raise ConfigError(f"sigmas must be a non-empty list of values >= 0, got {self.sigmas!r}")
        object.__setattr__(self, "sigmas", sigmas)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sigmas"] = list(self.sigmas)
        return out


@functools.lru_cache(maxsize=32)
def _fns(model: Model):
    """Jittable loss/eval functions of one model, built once so their compilations are reused."""

    eval_loss = loss_fn(model, is_training=False)

    def batch_loss(params_and_state, batch):
        params, state = params_and_state
        return eval_loss(params, state, batch[0], batch[1])[0]

    eval_split = split_eval_fn(model)
    grad_fn = jax.jit(full_batch_grad_fn(model))

    def eval_fn(params, state, test_split):
        loss, acc = eval_split(params, state, test_split)
        return {"test_loss": loss, "test_acc": acc}

    return batch_loss, eval_fn, grad_fn


def measure(model: Model, params: Any, state: Any, data: Dataset, config: MeasureConfig,
            key: jax.Array) -> tuple[dict[str, float], dict[str, Any]]:
    """All measurements of one network; returns ``(metrics, extra)`` (scalars, and tables)."""
    batch_loss, eval_fn, grad_fn = _fns(model)
    k_eig, k_trace, k_slope, k_noise, k_d1, k_d2 = jax.random.split(key, 6)
    train_split, test_split = split(data.x_train, data.y_train), split(data.x_test, data.y_test)

    value, grad = grad_fn(params, state, train_split)
    m = num_params(params)
    metrics: dict[str, float] = {
        "num_params": m,
        "train_loss_full": float(value),
        "r_ig": float(losses.r_ig(grad)),
        "grad_norm": float(jnp.sqrt(losses.sq_norm(grad))),
    }

    n = min(config.curvature_examples, len(data.x_train))
    n -= n % config.curvature_batch
    batches = curvature.stack_batches(jnp.asarray(data.x_train[:n]), jnp.asarray(data.y_train[:n]),
                                      config.curvature_batch)
    # Curvature is taken in θ only: the state rides along fixed, as per-batch context.
    loss_theta = _theta_loss(batch_loss)
    batches = curvature.with_context(batches, state)
    eig = curvature.top_eigenvalues(loss_theta, params, batches, k_eig,
                                    num_iters=min(config.lanczos_iters, m), which="both",
                                    on_host=config.avoid_xla_loops)
    trace = curvature.hessian_trace(loss_theta, params, batches, k_trace, config.trace_samples,
                                    sample_batch=config.trace_samples if config.avoid_xla_loops else None)
    slope = robustness.loss_slope(loss_theta, params, batches, k_slope, config.slope_radius,
                                  config.slope_directions)
    metrics.update(
        lambda_max=eig.largest, lambda_min=eig.smallest,
        hessian_trace=trace.trace, hessian_trace_se=trace.stderr,
        mean_abs_slope=float(slope.mean_abs_slope),
        curvature_hvps=int(eig.num_hvps + trace.num_hvps),
    )

    noise = robustness.noise_robustness(eval_fn, params, k_noise, config.sigmas, config.noise_draws,
                                        config.noise_mode, args=(state, test_split))
    extra: dict[str, Any] = {"robustness": {k: v.tolist() for k, v in noise.items()}}
    if config.slices:
        d1 = landscape.random_filter_direction(params, k_d1)
        d2 = landscape.random_filter_direction(params, k_d2)
        a1 = np.linspace(-config.slice_radius, config.slice_radius, config.slice_points_1d)
        a2 = np.linspace(-config.slice_radius, config.slice_radius, config.slice_points_2d)
        extra["slice_1d"] = {"alpha": a1.tolist(),
                             "loss": landscape.slice_1d(loss_theta, params, batches, d1, a1).tolist()}
        extra["slice_2d"] = {"alpha": a2.tolist(),
                             "loss": landscape.slice_2d(loss_theta, params, batches, d1, d2, a2, a2).tolist()}
    return metrics, extra


@functools.lru_cache(maxsize=64)
def _theta_loss(batch_loss):
    """``θ, (x, y, state) -> E``: one function object per model, so nothing recompiles per run."""
    return lambda p, b: batch_loss((p, b[2]), b[:2])
