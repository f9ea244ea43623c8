"""Explicit gradient regularization (EGR) for any JAX training loop (Barrett & Dherin 2021, Section 5).

EGR trains on the penalised loss

    E_μ(θ) = E(θ) + μ‖∇E(θ)‖²,      ∇E_μ = ∇E + 2μ·H∇E      (H = ∇²E),

which costs one Hessian-gradient product ``H∇E`` per step on top of the gradient; the product is
formed by one of :data:`igrlib.maths.losses.PENALTY_METHODS` (``"hvp"`` forward-over-reverse,
``"double_backprop"`` reverse-over-reverse, both exact; ``"finite_difference"``, one extra
gradient at a look-ahead point, error O(ε)).

Form and units. The book writes EGR as ``μ‖∇E‖²`` everywhere (μ in parameter units per
loss-gradient unit, like a learning rate). In the paper's units ``R_IG = ‖∇E‖²/m`` the same penalty
is ``μ'·R_IG`` with ``μ' = μ·m``. Gradient descent at learning rate h implicitly adds
``(h/4)‖∇E‖²`` (:func:`igrlib.maths.losses.modified_loss`), so EGR at μ is the IGR of a learning rate
``4μ``, and EGR at μ trained with step h has, to first order in h and μ, the total coefficient
``h/4 + μ``: the regularization rate ``λ_equiv = (h + 4μ)·m/4`` (:func:`lambda_equiv`).

Two entry points, one computation (:func:`igrlib.maths.losses.penalized_value_and_grad`):

* :func:`egr_value_and_grad` is a drop-in replacement for ``jax.value_and_grad``. It is the
  default we recommend: the penalty is a property of the loss, so the wrapper sits where the loss
  is, sees its auxiliary outputs (batch-norm statistics come from the one forward pass at θ), and
  its gradient goes to any optax optimizer unchanged::

      grad_fn = egr_value_and_grad(loss_fn, mu=0.01, has_aux=True)
      (loss, aux), grads = grad_fn(params, batch)
      updates, opt_state = tx.update(grads, opt_state, params)   # any optax `tx`

* :func:`egr_transform` is an ``optax.GradientTransformationExtraArgs`` for loops already built
  around an optax chain. Optax transforms see gradients, not the loss, so the loss enters as the
  extra argument ``value_fn`` (optax's own convention for loss-aware transforms, e.g. its line
  searches), and the transform must come first, where the incoming updates are still ``∇E``::

      tx = optax.chain(egr_transform(mu=0.01), optax.sgd(0.01))
      grads = jax.grad(lambda p: loss(p, batch))(params)
      updates, opt_state = tx.update(grads, opt_state, params,
                                     value_fn=lambda p: loss(p, batch))

  Its cost equals the wrapper's (both recompute ``∇E`` inside the product: the product needs
  ``∇E`` as its direction before it can run), but it cannot return auxiliary outputs such as
  batch-norm statistics and relies on being first in the chain; prefer the wrapper when writing
  a new loop.

Cost: :func:`step_cost` times the wrapper, per method, against a plain ``jax.value_and_grad``
on the same batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

from igrlib.maths import losses
from igrlib.config import ConfigError, check_choice
from igrlib.training.timing import interleaved_times

Params = Any


def _check_mu(mu: float | jax.Array) -> None:
    """μ must be a finite number ≥ 0; a traced value (μ vmapped or an argument of a jitted
    function) cannot be inspected and is accepted as is."""
    if isinstance(mu, jax.core.Tracer):
        return
    try:
        ok = math.isfinite(float(mu)) and float(mu) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"mu must be a finite number >= 0, got {mu!r}")


def egr_value_and_grad(
    loss_fn: Callable[..., Any],
    mu: float | jax.Array,
    method: str = "hvp",
    *,
    has_aux: bool = False,
    fd_radius: float = losses.FD_RADIUS,
) -> Callable[..., tuple[Any, Params]]:
    """``jax.value_and_grad`` of ``E_μ(θ) = E(θ) + μ‖∇E(θ)‖²`` for ``loss_fn(θ, *args)``.

    Returns ``(θ, *args) -> (E_μ, ∇E_μ)``, or ``((E_μ, aux), ∇E_μ)`` with ``has_aux=True`` (then
    ``loss_fn`` returns ``(E, aux)``), where ``∇E_μ = ∇E + 2μ·H∇E`` and ``H∇E`` is formed by
    ``method`` (see the module docstring; ``fd_radius`` is ε of ``"finite_difference"``, in
    parameter units). The value is the penalised loss, so the pair is exactly what
    ``jax.value_and_grad`` of ``E_μ`` would return; ``aux`` comes from the single forward pass
    at θ, so batch-norm running statistics in it are updated once per call.
    """
    _check_mu(mu)
    check_choice(method, losses.PENALTY_METHODS, "penalty method")
    with_aux = loss_fn if has_aux else (lambda params, *args: (loss_fn(params, *args), None))
    penalised = losses.penalized_value_and_grad(with_aux, mu, method, fd_radius)

    def value_and_grad(params: Params, *args: Any) -> tuple[Any, Params]:
        (value, aux), grad, total = penalised(params, *args)
        value = value + mu * losses.sq_norm(grad)
        return ((value, aux) if has_aux else value), total

    return value_and_grad


def egr_transform(
    mu: float | jax.Array, method: str = "hvp", *, fd_radius: float = losses.FD_RADIUS
) -> optax.GradientTransformationExtraArgs:
    """An optax transformation mapping ``∇E`` to ``∇E_μ = ∇E + 2μ·H∇E`` (stateless).

    ``update(updates, state, params, *, value_fn, **extra_args)``: ``updates`` must be the raw
    gradient ``∇E(params)`` of the scalar ``value_fn(params) = E`` (so the transform goes first in
    an ``optax.chain``); other extra arguments are ignored (they belong to other transforms of the
    chain). ``method`` and ``fd_radius`` as in :func:`egr_value_and_grad`.
    """
    _check_mu(mu)
    check_choice(method, losses.PENALTY_METHODS, "penalty method")

    def init(params: Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates: Params, state: optax.EmptyState, params: Params | None = None, *,
               value_fn: Callable[[Params], jax.Array], **extra_args: Any):
        del extra_args
        if params is None:
            raise ConfigError("egr_transform needs params: call update(grads, state, params, value_fn=...)")
        hg = losses.hessian_grad_product(jax.grad(value_fn), params, updates, method, fd_radius)
        return jax.tree_util.tree_map(lambda g, v: g + 2 * mu * v, updates, hg), state

    return optax.GradientTransformationExtraArgs(init, update)


def lambda_equiv(h: float, mu: float, m: int) -> float:
    """``λ_equiv = (h + 4μ)·m/4``: the R_IG rate of step-h (S)GD on ``E + μ‖∇E‖²``, to first order
    (the implicit ``(h/4)‖∇E‖²`` plus the explicit ``μ‖∇E‖²``); ``λ = h·m/4`` when μ = 0."""
    return (h + 4 * mu) * m / 4


def step_cost(
    loss_fn: Callable[..., tuple[jax.Array, Any]],
    params: Params,
    args: Sequence[Any],
    mu: float = 0.01,
    methods: Sequence[str] = losses.PENALTY_METHODS,
    repeats: int = 5,
) -> dict[str, float]:
    """Seconds per gradient of a plain step and of an EGR step for each penalty method.

    ``loss_fn(θ, *args) -> (E, aux)``. Each function is jitted and compiled first (not timed);
    then the plain gradient and every method are called in turn, ``repeats`` rounds, and each
    one's median time is returned under its method name, the plain one under ``"plain"``.
    Interleaving the rounds makes the ratios fair on a machine whose load changes while it runs.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a positive integer, got {repeats!r}")
    for method in methods:
        check_choice(method, losses.PENALTY_METHODS, "penalty method")
    fns = {"plain": jax.jit(jax.value_and_grad(loss_fn, has_aux=True))}
    fns.update({m: jax.jit(egr_value_and_grad(loss_fn, mu, m, has_aux=True)) for m in methods})
    for fn in fns.values():
        jax.block_until_ready(fn(params, *args))
    times = interleaved_times({name: lambda _, fn=fn: fn(params, *args) for name, fn in fns.items()}, repeats)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}
