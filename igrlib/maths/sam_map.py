"""Sharpness-aware minimisation (SAM) and explicit gradient regularization (EGR) to first order.

Notation: ``g = ∇E(θ)``, ``H = ∇²E(θ)``, step size ``h``, SAM radius ``ρ`` (parameter units for the
normalised ascent, parameter units per loss-gradient unit for the unnormalised one), EGR
coefficient ``μ`` (units of ``h``).

SAM (Foret et al. 2021) steps ``θ ← θ − h·∇E(θ + ρ·d)`` with the ascent direction ``d = g/‖g‖``
(normalised) or ``d = g`` (unnormalised). Taylor's theorem at θ gives

    ∇E(θ + ρd) = g + ρ·H d + (ρ²/2)·∇³E[d, d] + O(ρ³),

so to first order in ρ

* normalised:   ``g + ρ·Hg/‖g‖ = ∇(E + ρ‖∇E‖)``    (since ``∇‖∇E‖ = Hg/‖g‖``),
* unnormalised: ``g + ρ·Hg     = ∇(E + (ρ/2)‖∇E‖²)``.

EGR steps ``θ ← θ − h·∇(E + μ‖∇E‖²) = θ − h·(g + 2μ·Hg)`` (exactly). Matching the two:

* unnormalised SAM at ρ is EGR at ``μ = ρ/2``, a constant map;
* normalised SAM at ρ is EGR at ``μ = ρ/(2‖g‖)``, a *state-dependent* map: the same ρ acts as a
  stronger gradient-norm penalty the smaller the gradient, and blows up at a stationary point
  (where SAM's step is no longer small in ρ: the ascent still moves by ρ). Equivalently SAM
  penalises ``ρ‖∇E‖`` (Zhao, Zhang & Hu 2022's gradient-norm penalty with ``αr = ρ``), not ``‖∇E‖²``.

In both forms the one-step difference between SAM and EGR at the mapped μ is
``h·(ρ²/2)·‖∇³E[d, d]‖ + O(hρ³)``: second order in ρ. Gradient descent adds its own implicit
``(h/4)‖∇E‖²`` to either (Barrett & Dherin 2021, Theorem 3.1), so, to first order in ``h`` and ``ρ``,
SAM at step ``h`` descends ``E + (h/4 + μ(ρ))‖∇E‖²``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from igrlib.config import ConfigError, check_choice, check_positive

#: SAM's ascent directions, as :mod:`igrlib.training.methods` names them.
ASCENTS: tuple[str, ...] = ("normalized", "unnormalized")


def egr_mu_for_sam(rho: float, ascent: str, grad_norm: float | None = None) -> float:
    """``μ`` of the EGR step that equals SAM's at radius ``ρ`` to first order in ρ:
    ``ρ/(2‖∇E‖)`` for the normalised ascent (``grad_norm = ‖∇E(θ)‖`` required, > 0), ``ρ/2`` for
    the unnormalised one (``grad_norm`` must then be omitted: the map does not depend on it)."""
    check_positive(rho, "rho")
    check_choice(ascent, ASCENTS, "ascent")
    if ascent == "unnormalized":
        if grad_norm is not None:
            raise ConfigError("the unnormalised map mu = rho/2 does not use grad_norm; omit it")
        return rho / 2
    if grad_norm is None:
        raise ConfigError("the normalised map mu = rho/(2‖∇E‖) needs grad_norm = ‖∇E(θ)‖")
    check_positive(grad_norm, "grad_norm (SAM's normalised map is undefined at a stationary point)")
    return rho / (2 * grad_norm)


def sam_rho_for_egr(mu: float, ascent: str, grad_norm: float | None = None) -> float:
    """The inverse of :func:`egr_mu_for_sam`: ``ρ = 2μ‖∇E‖`` (normalised) or ``ρ = 2μ``."""
    check_positive(mu, "mu")
    check_choice(ascent, ASCENTS, "ascent")
    if ascent == "unnormalized":
        if grad_norm is not None:
            raise ConfigError("the unnormalised map rho = 2 mu does not use grad_norm; omit it")
        return 2 * mu
    if grad_norm is None:
        raise ConfigError("the normalised map rho = 2 mu ‖∇E‖ needs grad_norm = ‖∇E(θ)‖")
    check_positive(grad_norm, "grad_norm")
    return 2 * mu * float(grad_norm)


def mapped_mu(E: Callable[[jax.Array], jax.Array], theta: jax.Array, rho: float, ascent: str) -> float:
    """:func:`egr_mu_for_sam` at the state θ of a loss ``E`` of a flat parameter vector."""
    if ascent == "unnormalized":
        return egr_mu_for_sam(rho, ascent)
    return egr_mu_for_sam(rho, ascent, float(jnp.linalg.norm(jax.grad(E)(theta))))


def second_order_gap(E: Callable[[jax.Array], jax.Array], theta: jax.Array, h: float, rho: float, ascent: str) -> float:
    """The leading one-step difference ``h·(ρ²/2)·‖∇³E[d, d]‖`` between SAM at ρ and EGR at the
    mapped μ (units of θ), with ``∇³E[d, d] = d²/ds² ∇E(θ + s·d)|₀`` by nested ``jvp``."""
    check_positive(h, "learning rate h")
    check_positive(rho, "rho")
    check_choice(ascent, ASCENTS, "ascent")
    grad = jax.grad(E)
    g = grad(theta)
    d = g / jnp.linalg.norm(g) if ascent == "normalized" else g
    along = lambda t: jax.jvp(grad, (t,), (d,))[1]  # noqa: E731  t ↦ H(t) d
    third = jax.jvp(along, (theta,), (d,))[1]
    return float(h * rho**2 / 2 * jnp.linalg.norm(third))
