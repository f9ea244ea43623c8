"""Backward error analysis of gradient descent with heavy-ball or Nesterov momentum.

Normalisation (the one of PyTorch's and optax's ``sgd(momentum=β)``): learning rate ``h``,
momentum ``β ∈ [0, 1)``, velocity buffer ``v``,

    heavy ball:  v_{n+1} = β v_n + ∇E(θ_n),                 θ_{n+1} = θ_n − h v_{n+1},
    Nesterov:    v_{n+1} = β v_n + ∇E(θ_n − h β v_n),       θ_{n+1} = θ_n − h v_{n+1}.

Since ``v_n = (θ_{n−1} − θ_n)/h``, both are two-step methods,
``θ_{n+1} − θ_n − β(θ_n − θ_{n−1}) = −h ∇E(θ_n + ν β (θ_n − θ_{n−1}))`` with ``ν = 0`` (heavy
ball) or ``ν = 1`` (Nesterov). Step ``n`` sits at time ``t = n·h``. Matching a smooth ``θ(t)``
to second order in ``h`` (``θ(t±h) = θ ± hθ' + (h²/2)θ'' + O(h³)``) gives the modified equation

    θ' = −(1/(1−β)) ∇Ẽ,    Ẽ = E + h c(β)/(4(1−β)²) ‖∇E‖²,
    c(β) = 1 + β (heavy ball),   c(β) = 1 − β + 2β² (Nesterov),

with local error ``O(h³)`` against ``O(h²)`` for the plain gradient flow of ``E/(1−β)``. In the
time ``s = t/(1−β)`` and at the effective rate ``h_eff = h/(1−β)`` (GD at ``h_eff`` makes the same
progress per step), the flow is ``dθ/ds = −∇[E + (h_eff/4)·(c(β)/(1−β))·‖∇E‖²]``: the
regularizer of GD at ``h_eff`` times ``(1+β)/(1−β)`` for heavy ball (the factor of Ghosh et al.,
ICLR 2023) and ``(1−β+2β²)/(1−β)`` for Nesterov.

The expansion holds on the slow manifold ``v ≈ −θ'``; a buffer started elsewhere (``v_0 = 0``)
relaxes within ``O(1/(1−β))`` steps and leaves the iterates on the modified flow from a shifted
start ``θ_0 + h β ∇E(θ_0)/(1−β)² + O(h²)`` (both methods). Error studies need float64.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from igrlib.config import ConfigError, check_choice, check_number, check_positive
from igrlib.maths import bea

#: Momentum methods: the weight ν of the look-ahead in ``∇E(θ_n − ν h β v_n)``.
METHODS: dict[str, float] = {"heavy_ball": 0.0, "nesterov": 1.0}
#: Orders of the modified field: 0 = gradient flow of ``E/(1−β)``, 1 = that of ``Ẽ/(1−β)``.
ORDERS: tuple[int, ...] = (0, 1)


def regularizer_coefficient(beta: float, method: str) -> float:
    """``c(β)``: ``1 + β`` (heavy ball) or ``1 − β + 2β²`` (Nesterov), so that the modified loss
    is ``E + h c(β)/(4(1−β)²) ‖∇E‖²``."""
    _check_beta(beta)
    check_choice(method, METHODS, "method")
    return _coefficient(beta, METHODS[method])


def _coefficient(beta, nu):
    return 1 + beta - 2 * nu * beta * (1 - beta)


def regularizer_factor(beta: float, method: str) -> float:
    """``c(β)/(1−β)``: the momentum regularizer over GD's at the same effective rate
    ``h/(1−β)`` (heavy ball: ``(1+β)/(1−β)``)."""
    return regularizer_coefficient(beta, method) / (1 - beta)


def momentum_modified_loss(E: bea.Loss, h: float, beta: float, method: str) -> bea.Loss:
    """``Ẽ(θ) = E(θ) + h c(β)/(4(1−β)²) ‖∇E(θ)‖²`` (units of E)."""
    lam = h * regularizer_coefficient(beta, method) / (4 * (1 - beta) ** 2)
    grad = jax.grad(E)
    return lambda theta: E(theta) + lam * jnp.sum(grad(theta) ** 2)


def momentum_modified_field(E: bea.Loss, h: float, beta: float, method: str,
                            order: int = 1) -> bea.Field:
    """``−∇E/(1−β)`` (order 0) or ``−∇Ẽ/(1−β)`` (order 1), the field the iterates follow in time
    ``t = n·h`` to local error ``O(h²)`` or ``O(h³)``."""
    check_choice(order, ORDERS, "order")
    _check_beta(beta)
    check_choice(method, METHODS, "method")
    return _field(E, h, beta, METHODS[method], float(order))


def _field(E, h, beta, nu, weight) -> bea.Field:
    """``−(∇E + weight·h c(β)/(2(1−β)²) H∇E)/(1−β)``; traced arguments, one program for all."""
    grad = jax.grad(E)
    lam = weight * h * _coefficient(beta, nu) / (4 * (1 - beta) ** 2)

    def field(theta):
        g = grad(theta)
        hg = jax.jvp(grad, (theta,), (g,))[1]  # ∇‖∇E‖² = 2Hg
        return -(g + 2 * lam * hg) / (1 - beta)

    return field


# --- iterates -------------------------------------------------------------------------------------


def momentum_step(E: bea.Loss, theta: jax.Array, v: jax.Array, h, beta, nu) -> tuple[jax.Array, jax.Array]:
    """``(θ_{n+1}, v_{n+1})`` from ``(θ_n, v_n)``; ``nu`` is 0 (heavy ball) or 1 (Nesterov)."""
    v_new = beta * v + jax.grad(E)(theta - nu * h * beta * v)
    return theta - h * v_new, v_new


@partial(jax.jit, static_argnames=("E",))
def _finals(E, theta0s, v0s, hs, beta, nu, ns) -> jax.Array:
    def one(theta0, v0, h, n):
        body = lambda _, state: momentum_step(E, *state, h, beta, nu)  # noqa: E731
        return jax.lax.fori_loop(0, n, body, (theta0, v0))[0]

    return jax.vmap(one)(theta0s, v0s, hs, ns)


@partial(jax.jit, static_argnames=("E",))
def _flow_ends(E, theta0s, hs, beta, nu, weights, t1s) -> jax.Array:
    def one(theta0, h, weight, t1):
        field = _field(E, h, beta, nu, weight)
        # the flow of t1·field over [0, 1] is the flow of field over [0, t1]; t1 < 0 runs back
        return bea.flow(lambda theta: t1 * field(theta), theta0, 1.0)

    return jax.vmap(one)(theta0s, hs, weights, t1s)


def momentum_final(E: bea.Loss, theta0: jax.Array, v0: jax.Array, h: float, beta: float,
                   method: str, n: int) -> jax.Array:
    """``θ_n`` after ``n`` steps of the momentum ``method`` from ``(θ0, v0)``."""
    _check_beta(beta)
    check_choice(method, METHODS, "method")
    check_positive(h, "learning rate h")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"number of steps must be an integer >= 0, got {n!r}")
    theta0 = jnp.asarray(theta0)
    return _finals(E, theta0[None], jnp.asarray(v0, theta0.dtype)[None], jnp.asarray([h], theta0.dtype),
                   beta, METHODS[method], jnp.asarray([n]))[0]


def consistent_velocity(E: bea.Loss, theta0: jax.Array, hs, beta: float, method: str,
                        order: int) -> np.ndarray:
    """``v_0 = (θ(−h) − θ0)/h`` for each ``h`` in ``hs``, with ``θ(t)`` the flow of the order-``order``
    modified field through ``θ0``: the buffer that puts the iterates on that flow, shape
    ``(len(hs), m)``. (``θ(−h)`` is found by running the flow backwards for time ``h``.)"""
    theta0, hs = _check_study(theta0, hs, beta, method, order)
    back = _ends(E, np.broadcast_to(theta0, (hs.size, theta0.size)), hs, beta, method, order, -hs)
    return (back - np.asarray(theta0)) / hs[:, None]


def initial_layer_shift(E: bea.Loss, theta0: jax.Array, h: float, beta: float) -> jax.Array:
    """``h β ∇E(θ0)/(1−β)²``: where the modified flow followed by iterates started with ``v_0 = 0``
    effectively starts, relative to ``θ0`` (units of θ; accurate to ``O(h²)``, both methods)."""
    _check_beta(beta)
    return h * beta * jax.grad(E)(jnp.asarray(theta0)) / (1 - beta) ** 2


def _ends(E, theta0s, hs, beta, method, order, t1s) -> np.ndarray:
    dtype = jnp.float64
    return np.asarray(_flow_ends(E, jnp.asarray(theta0s, dtype), jnp.asarray(hs, dtype),
                                 jnp.asarray(beta, dtype), jnp.asarray(METHODS[method], dtype),
                                 jnp.full(np.shape(hs), float(order), dtype), jnp.asarray(t1s, dtype)))


def _iterates(E, theta0s, v0s, hs, beta, method, ns) -> np.ndarray:
    dtype = jnp.float64
    return np.asarray(_finals(E, jnp.asarray(theta0s, dtype), jnp.asarray(v0s, dtype),
                              jnp.asarray(hs, dtype), jnp.asarray(beta, dtype),
                              jnp.asarray(METHODS[method], dtype), jnp.asarray(ns)))


# --- error study ----------------------------------------------------------------------------------

#: Comparisons of :func:`error_study`: (kind, start of the buffer, start of the flow) -> expected
#: order of the error for modified-field orders 0 and 1.
COMPARISONS: dict[tuple[str, str, str], tuple[int, int]] = {
    ("local", "consistent v₀", "θ₀"): (2, 3),
    ("global", "consistent v₀", "θ₀"): (1, 2),
    ("global", "v₀ = 0", "θ₀"): (1, 1),
    ("global", "v₀ = 0", "shifted θ₀"): (1, 2),
}


def error_study(E: bea.Loss, theta0: jax.Array, T: float, ns, beta: float,
                method: str) -> pd.DataFrame:
    """Errors of the momentum ``method`` against the flows of its modified fields, at ``h = T/n``.

    A tidy table with columns ``kind`` (``local``: one step; ``global``: ``n`` steps to time ``T``),
    ``v0`` (``consistent v₀``: :func:`consistent_velocity` of the flow compared with; ``v₀ = 0``),
    ``flow start`` (``θ₀``, or ``shifted θ₀`` = θ₀ + :func:`initial_layer_shift`), ``order``
    (0: gradient flow of ``E/(1−β)``; 1: modified flow), ``expected`` (order in ``h`` of the error
    by the theory), ``h``, ``n`` and ``error`` (Euclidean distance, units of θ).
    """
    hs = bea.horizon_rates(T, ns)
    ns = np.asarray(ns, dtype=np.int64)
    rows = []
    for order in ORDERS:
        theta0_, _ = _check_study(theta0, hs, beta, method, order)
        starts = np.broadcast_to(np.asarray(theta0_), (hs.size, theta0_.size))
        v_consistent = consistent_velocity(E, theta0_, hs, beta, method, order)
        shifted = starts + np.stack([np.asarray(initial_layer_shift(E, theta0_, h, beta)) for h in hs])
        for (kind, v0, start), expected in COMPARISONS.items():
            steps = np.ones_like(ns) if kind == "local" else ns
            v0s = v_consistent if v0 == "consistent v₀" else np.zeros_like(starts)
            flow_starts = starts if start == "θ₀" else shifted
            got = _iterates(E, starts, v0s, hs, beta, method, steps)
            want = _ends(E, flow_starts, hs, beta, method, order, steps * hs)
            errors = np.linalg.norm(got - want, axis=1)
            rows += [{"kind": kind, "v0": v0, "flow start": start, "order": order,
                      "expected": expected[order], "h": h, "n": n, "error": e}
                     for h, n, e in zip(hs, steps, errors)]
    return pd.DataFrame(rows)


def _check_beta(beta) -> None:
    if not 0 <= check_number(beta, "momentum β") < 1:
        raise ConfigError(f"momentum β must be a number in [0, 1), got {beta!r}")


def _check_study(theta0, hs, beta, method, order) -> tuple[jax.Array, np.ndarray]:
    _check_beta(beta)
    check_choice(method, METHODS, "method")
    check_choice(order, ORDERS, "order")
    return bea.check_study(theta0, hs)
