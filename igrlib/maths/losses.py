"""Losses, the implicit gradient regularizer, and the gradient of a gradient-norm penalty.

Notation (Barrett & Dherin 2021, Section 3): ``E(θ)`` the mean training loss, ``g = ∇E``, ``H = ∇²E``, ``m`` the
number of parameters, ``h`` the learning rate.

* ``R_IG(θ) = ‖∇E(θ)‖² / m`` and ``λ = h·m/4``, so the modified loss of gradient descent is
  ``Ẽ = E + λ·R_IG = E + (h/4)‖∇E‖²``;
* explicit gradient regularization (EGR) penalises ``E + μ‖∇E‖²``; it equals the IGR of a
  learning rate ``h = 4μ``.

Both are ``E + c‖∇E‖²`` with gradient ``∇E + 2c·H∇E``. The product ``H∇E`` is computed by one of
:data:`PENALTY_METHODS`, chosen by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from igrlib.config import check_choice, check_positive
from igrlib.maths.models import num_params

Params = Any
PENALTY_METHODS: tuple[str, ...] = ("hvp", "double_backprop", "finite_difference")
#: Default look-ahead radius ε of the finite-difference method, in parameter-space units.
FD_RADIUS = 1e-3


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy ``−(1/N) Σ_n log softmax(logits_n)[y_n]`` in nats."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows whose arg-max logit equals the label (in [0, 1])."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def sq_norm(tree: Params) -> jax.Array:
    """``‖v‖²``: the sum of squares of every leaf of a pytree."""
    return sum(jnp.vdot(leaf, leaf).real for leaf in jax.tree_util.tree_leaves(tree))


def r_ig(grad: Params) -> jax.Array:
    """``R_IG = ‖∇E‖² / m``, the mean squared partial derivative of the loss (loss²/param²)."""
    return sq_norm(grad) / num_params(grad)


def igr_lambda(h: float, m: int) -> float:
    """``λ = h·m/4``, the implicit regularization rate of gradient descent at learning rate h."""
    return h * m / 4


def penalty_coefficient_igr(h: float) -> float:
    """``c = h/4``: GD at rate h follows the flow of ``E + c‖∇E‖²`` to first order in h."""
    check_positive(h, "learning rate")
    return h / 4


def modified_loss(loss_fn: Callable[..., jax.Array], h: float) -> Callable[..., jax.Array]:
    """``Ẽ(θ) = E(θ) + (h/4)‖∇E(θ)‖²`` for a scalar ``loss_fn(θ, *args)`` (the IGR modified loss)."""
    return gradient_penalty_loss(loss_fn, penalty_coefficient_igr(h))


def egr_loss(loss_fn: Callable[..., jax.Array], mu: float) -> Callable[..., jax.Array]:
    """``E_μ(θ) = E(θ) + μ‖∇E(θ)‖²`` for a scalar ``loss_fn(θ, *args)`` (explicit regularization)."""
    check_positive(mu, "mu")
    return gradient_penalty_loss(loss_fn, mu)


def gradient_penalty_loss(loss_fn: Callable[..., jax.Array], coef: float) -> Callable[..., jax.Array]:
    """``θ ↦ E(θ) + c‖∇E(θ)‖²`` for a scalar ``loss_fn(θ, *args)``."""
    grad_fn = jax.grad(loss_fn)

    def penalised(params: Params, *args: Any) -> jax.Array:
        return loss_fn(params, *args) + coef * sq_norm(grad_fn(params, *args))

    return penalised


def _axpy(a: jax.Array | float, x: Params, y: Params) -> Params:
    return jax.tree_util.tree_map(lambda xi, yi: a * xi + yi, x, y)


def hessian_grad_product(
    grad_fn: Callable[[Params], Params],
    params: Params,
    grad: Params,
    method: str = "hvp",
    fd_radius: float = FD_RADIUS,
) -> Params:
    """``H·∇E`` at ``params``, where ``grad_fn(θ) = ∇E(θ)`` and ``grad = grad_fn(params)``.

    * ``"hvp"``: forward-over-reverse, ``jvp(∇E, (θ,), (g,))`` (exact, one extra pass pair);
    * ``"double_backprop"``: reverse-over-reverse, ``∇_θ ½‖∇E(θ)‖²`` (exact);
    * ``"finite_difference"``: the look-ahead ``‖g‖·[∇E(θ + ε g/‖g‖) − ∇E(θ)]/ε``, one extra
      gradient (ε in parameter-space units, ``fd_radius``). Its error is O(ε) only for smooth
      losses: on ReLU networks the gradient jumps where units switch, and the look-ahead does
      not converge to H∇E as ε → 0 (it is a different, smoothed penalty). The experiments use
      ``"hvp"``.
    """
    check_choice(method, PENALTY_METHODS, "penalty method")
    if method == "hvp":
        return jax.jvp(grad_fn, (params,), (grad,))[1]
    if method == "double_backprop":
        return jax.grad(lambda p: 0.5 * sq_norm(grad_fn(p)))(params)
    norm = jnp.sqrt(sq_norm(grad))
    safe = jnp.where(norm > 0, norm, 1.0)
    ahead = grad_fn(_axpy(fd_radius / safe, grad, params))
    return jax.tree_util.tree_map(lambda ga, g: (ga - g) * (safe / fd_radius), ahead, grad)


def penalized_value_and_grad(
    loss_fn: Callable[..., tuple[jax.Array, Any]],
    coef: float | jax.Array,
    method: str = "hvp",
    fd_radius: float = FD_RADIUS,
) -> Callable[..., tuple[tuple[jax.Array, Any], Params, Params]]:
    """Gradient of ``E + c‖∇E‖²`` for ``loss_fn(θ, *args) -> (E, aux)``.

    Returns a function ``(θ, *args) -> ((E, aux), ∇E, ∇E + 2c·H∇E)``. ``aux`` (e.g. updated
    batch-norm statistics) comes from the single forward pass at θ only: the extra passes that
    form ``H∇E`` discard theirs, so running statistics are updated once per step.
    """
    check_choice(method, PENALTY_METHODS, "penalty method")
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

    def fn(params: Params, *args: Any):
        (value, aux), grad = value_and_grad(params, *args)
        grad_only = lambda p: jax.grad(loss_fn, has_aux=True)(p, *args)[0]  # noqa: E731
        hg = hessian_grad_product(grad_only, params, grad, method, fd_radius)
        return (value, aux), grad, _axpy(2 * coef, hg, grad)

    return fn
