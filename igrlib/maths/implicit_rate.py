"""The implicit coefficient of gradient descent, measured from its iterates.

Backward error analysis (Barrett & Dherin 2021, Theorem 3.1) says that GD at rate ``h`` follows,
to first order in ``h``, the gradient flow of ``E_c = E + c‖∇E‖²`` with ``c = h/4`` (in the paper's
units ``λ·R_IG`` with ``R_IG = ‖∇E‖²/m``, ``λ = c·m = hm/4``). This module turns that prediction into
a measurement: given GD iterates, fit the ``c`` whose flow passes closest to them.

The model. Write ``F_c(θ) = −∇E_c(θ) = −(g + 2c·Hg)`` (``g = ∇E``, ``H = ∇²E``) and ``φᶜ_t`` for its
time-``t`` flow. Over ``k`` steps from ``θ_0`` the flow's Taylor series is

    φᶜ_{kh}(θ_0) − θ_0 = −kh·g + (k²h²/2)·Hg − 2c·kh·Hg + O(k³h³, c·k²h², c²),

while GD's is ``θ_k − θ_0 = −kh·g + (k(k−1)h²/2)·Hg + O(k³h³)``. The two agree to ``O(h²)`` for every
``k`` exactly when ``2c·kh = kh²/2``, i.e. ``c = h/4``: the same coefficient for every stretch length,
which is what makes it a property of the iteration and not of the horizon.

The estimator. For a stretch ``θ_{j}`` observed at times ``t_j = s_j·h`` (``s_j`` whole steps,
``s_0 = 0``), minimise the summed squared distance

    L(c) = Σ_j ‖θ_j − φᶜ_{t_j}(θ_0)‖²

by Gauss–Newton: with the deviation ``D_j(c) = θ_j − φᶜ_{t_j}(θ_0)`` and the sensitivity
``S_j(c) = ∂φᶜ_{t_j}(θ_0)/∂c``, which solves the variational equation

    S' = J_{F_c}(φᶜ_t)·S + ∂_c F_c(φᶜ_t) = J_{F_c}·S − 2H∇E,   S(0) = 0,

each step is ``c ← c + Σ_j⟨D_j, S_j⟩ / Σ_j‖S_j‖²``. The flow and ``S`` are integrated together
(float64, :func:`igrlib.maths.bea.flow`), started at ``c = 0`` (gradient flow). The first step alone
is the linear estimator ``ĉ₀ = ⟨D(0), S(0)⟩/‖S(0)‖²``; iterating removes its ``O(c²)`` bias.

What ``ĉ`` converges to. On a smooth problem over a fixed time ``T``, ``ĉ = h/4 + O(h²)``: the
first-order modified flow is ``O(h²)`` from GD (global error), which ``ĉ`` absorbs as ``O(h²)``. On
``E = κθ²/2`` in one dimension GD is exactly the flow of ``E_c`` at ``c* = (r/κ − 1)/(2κ)``, with
``r = −log(1 − hκ)/h`` (:func:`quadratic_implicit_coefficient`): ``c*/(h/4) = 1 + 2hκ/3 + (hκ)²/2 + …``,
which diverges as ``hκ → 1``; beyond it GD flips sign every step and no real flow passes through
its iterates.

When the estimate means nothing (the conditioning a reader needs):

* ``explained = 1 − L(ĉ)/L(0)``: the share of GD's departure from gradient flow that the fitted
  penalty accounts for. Near 1, GD really moves like the flow of ``E + ĉ‖∇E‖²``; far below 1 (past
  the edge of stability, where the iterates oscillate), ``ĉ`` is the best of bad fits.
* ``condition``: the condition number ``(1 + |cos|)/(1 − |cos|)`` of the 2×2 normal equations that
  would fit ``c`` together with a rescaling of time (a learning rate other than ``h``), where
  ``cos`` is the cosine between the stacked ``S`` and the time-rescaling sensitivity
  ``U_j = t_j·F_ĉ(φ^ĉ_{t_j})``. When ``∇E`` stays an eigenvector of ``H`` (a one-dimensional or
  isotropic quadratic, or GD confined to one eigendirection) ``Hg ∥ g``, the penalty only speeds the
  flow up along ``−∇E``, ``cos → 1`` and ``condition → ∞``: ``ĉ`` is then indistinguishable from a
  mis-stated learning rate and says nothing about a penalty's *direction*.
* ``gap``: ``√L(0)``, GD's distance from gradient flow over the stretch (units of θ); when it is
  near the flow integrator's tolerance (``bea.FLOW_RTOL``·‖θ‖) there is nothing to measure.

Units: ``c`` in units of ``h`` (parameter units per loss-gradient unit, times time); times ``t = s·h``.
Float64 only (:func:`igrlib.maths.bea.check_study` enforces it).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from igrlib.config import ConfigError, check_int, check_positive
from igrlib.maths import bea

#: Gauss–Newton steps of :func:`fit_implicit_coefficient` (with a residual left over, Gauss–Newton
#: converges linearly: about ten steps on a smooth problem); stop earlier once a step changes ``c``
#: by less than :data:`STEP_TOLERANCE` relative (the flows are integrated to about 1e-13
#: relative, so a smaller step is integration noise). A step that does not decrease the fit's
#: loss (beyond :data:`LOSS_NOISE` relative, the integration noise of a converged fit) is halved
#: up to :data:`MAX_HALVINGS` times, then the fit stops.
ITERATIONS = 30
STEP_TOLERANCE = 1e-9
LOSS_NOISE = 1e-9
MAX_HALVINGS = 30


def penalised_field(E: bea.Loss, theta: jax.Array, c: jax.Array) -> jax.Array:
    """``F_c(θ) = −∇(E + c‖∇E‖²) = −(∇E + 2c·H∇E)``, by one Hessian-vector product."""
    grad = jax.grad(E)
    g, hg = jax.jvp(grad, (theta,), (grad(theta),))
    return -(g + 2 * c * hg)


@partial(jax.jit, static_argnames=("E",))
def flow_and_sensitivity(E: bea.Loss, theta0: jax.Array, c: jax.Array,
                         ts: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``φᶜ_t(θ0)`` and ``S = ∂φᶜ_t(θ0)/∂c`` at the times ``ts`` (``ts[0] = 0``), each shape
    ``(len(ts), m)``: the flow of ``F_c`` and its variational equation ``S' = J_{F_c} S + ∂_c F_c``,
    integrated together (one ``jvp`` of ``F`` in ``(θ, c)`` along ``(S, 1)`` gives the right side)."""
    m = theta0.size

    def augmented(y):
        theta, sens = y[:m], y[m:]
        value, tangent = jax.jvp(lambda th, cc: penalised_field(E, th, cc), (theta, c),
                                 (sens, jnp.ones_like(c)))
        return jnp.concatenate([value, tangent])

    ys = bea.flow(augmented, jnp.concatenate([theta0, jnp.zeros_like(theta0)]), ts[-1], ts=ts)
    return ys[:, :m], ys[:, m:]


@partial(jax.jit, static_argnames=("E",))
def _time_rescaling(E: bea.Loss, path: jax.Array, c: jax.Array, ts: jax.Array) -> jax.Array:
    """``U_j = t_j·F_c(φᶜ_{t_j})``: the derivative of ``φᶜ_{(1+a)t_j}`` in ``a`` at ``a = 0``."""
    return ts[:, None] * jax.vmap(lambda theta: penalised_field(E, theta, c))(path)


@dataclasses.dataclass(frozen=True)
class ImplicitFit:
    """The fitted implicit coefficient of a stretch of GD iterates and how far to trust it.

    ``c``: the fitted coefficient of ``‖∇E‖²`` (units of h); ``h``: the step size; ``ratio``:
    ``c/(h/4)`` (1 is the first-order prediction); ``explained``, ``condition``, ``gap``: see the
    module docstring; ``residual``: ``√L(c)`` (units of θ); ``linear``: the one-step (linear)
    estimate ``ĉ₀``; ``iterations``: Gauss–Newton steps computed; ``converged``: whether the last
    step would move ``c`` by less than :data:`STEP_TOLERANCE` relative.
    """

    c: float
    h: float
    ratio: float
    explained: float
    condition: float
    gap: float
    residual: float
    linear: float
    iterations: int
    converged: bool

    def meaningful(self, min_explained: float = 0.9, max_condition: float = 1e6) -> bool:
        """Whether the fit accounts for at least ``min_explained`` of GD's departure from gradient
        flow and is not confounded with a change of learning rate (``condition`` at most
        ``max_condition``)."""
        return bool(self.converged and self.explained >= min_explained
                    and self.condition <= max_condition)


def fit_implicit_coefficient(E: bea.Loss, iterates, h: float, steps=None,
                             iterations: int = ITERATIONS) -> ImplicitFit:
    """Least-squares implicit coefficient ``ĉ`` of GD iterates (the module docstring's estimator).

    ``iterates``: GD iterates, shape ``(k + 1, m)``, float64, ``iterates[0]`` the start; ``steps``:
    the whole step number of each row (default ``0, 1, …, k``; must start at 0 and increase), so a
    long run can be sampled sparsely; ``h``: GD's step size. One compile per loss ``E`` and number
    of rows.
    """
    check_positive(h, "learning rate h")
    check_int(iterations, "iterations")
    iterates = np.asarray(iterates)
    if iterates.ndim != 2 or iterates.shape[0] < 2:
        raise ConfigError(f"iterates must have shape (k + 1, m) with k >= 1, got {iterates.shape}")
    theta0, _ = bea.check_study(iterates[0], [h])
    steps = np.arange(iterates.shape[0]) if steps is None else np.asarray(steps)
    if (steps.shape != (iterates.shape[0],) or not np.issubdtype(steps.dtype, np.integer)
            or steps[0] != 0 or np.any(np.diff(steps) <= 0)):
        raise ConfigError("steps must be increasing whole step numbers starting at 0, one per iterate")
    ts = jnp.asarray(steps * h, dtype=jnp.float64)
    observed = jnp.asarray(iterates)

    def deviation(c):
        path, sens = flow_and_sensitivity(E, theta0, jnp.asarray(c, dtype=jnp.float64), ts)
        dev = np.asarray(observed - path)
        return dev, np.asarray(sens), path, float(np.vdot(dev, dev))

    c, linear, converged, taken = 0.0, np.nan, False, 0
    dev, sens, path, loss = deviation(0.0)
    loss0 = loss
    for taken in range(1, iterations + 1):
        step = float(np.vdot(dev, sens) / np.vdot(sens, sens))
        if taken == 1:
            linear = step
        if abs(step) <= STEP_TOLERANCE * abs(c):
            converged = True
            break
        # Gauss–Newton step, halved until L decreases: past the edge of stability the full step
        # can reach a c < 0 whose flow (an anti-penalty) blows up
        for _ in range(MAX_HALVINGS):
            trial = deviation(c + step)
            if np.isfinite(trial[3]) and trial[3] <= loss * (1 + LOSS_NOISE):
                break
            step /= 2
        else:
            break
        c += step
        dev, sens, path, loss = trial
    rescale = np.asarray(_time_rescaling(E, path, jnp.asarray(c, dtype=jnp.float64), ts))
    cos = abs(float(np.vdot(sens, rescale))) / float(np.linalg.norm(sens) * np.linalg.norm(rescale))
    return ImplicitFit(
        c=c, h=float(h), ratio=c / (h / 4), explained=1 - loss / loss0 if loss0 > 0 else np.nan,
        condition=(1 + cos) / (1 - cos) if cos < 1 else np.inf, gap=float(np.sqrt(loss0)),
        residual=float(np.sqrt(loss)), linear=linear, iterations=taken, converged=converged)


def coefficient_study(E: bea.Loss, theta0, T: float, ns, samples: int = 8) -> pd.DataFrame:
    """``ĉ`` at the rates ``h = T/n`` for ``n`` in ``ns``: GD for ``n`` steps from ``θ0`` (time ``T``),
    fitted at ``samples + 1`` equally spaced checkpoints (so one compile serves every rate; each
    ``n`` must be a multiple of ``samples``).

    A tidy table, one row per rate: ``h``, ``n``, ``c``, ``ratio`` (``ĉ/(h/4)``), ``explained``,
    ``condition``, and ``error = |ĉ − h/4|`` with ``expected = 2`` (its order in ``h``), ready for
    :func:`igrlib.maths.order_fits.fitted_slopes`.
    """
    hs = bea.horizon_rates(T, ns)
    theta0, _ = bea.check_study(theta0, hs)
    check_int(samples, "samples")
    ns = np.asarray(ns)
    if np.any(ns % samples):
        raise ConfigError(f"every n must be a multiple of samples={samples}, got {ns.tolist()}")
    rows = []
    for h, n in zip(hs, ns):
        steps = np.arange(0, n + 1, n // samples)
        path = _gd_at(E, theta0, h, steps)
        fit = fit_implicit_coefficient(E, path, h, steps)
        rows.append({"h": h, "n": int(n), "c": fit.c, "ratio": fit.ratio, "explained": fit.explained,
                     "condition": fit.condition, "error": abs(fit.c - h / 4), "expected": 2})
    return pd.DataFrame(rows)


def edge_study(E: bea.Loss, theta0, zs, steps: int) -> pd.DataFrame:
    """``ĉ`` at the rates ``h = z/λ_max(θ0)``, ``z`` in ``zs`` (``0 < z < 2``), each fitted to every
    iterate of ``steps`` GD steps (every one: sampling a period-2 oscillation at an even stride
    would hide it): how the measured coefficient departs from ``h/4`` as ``h·λ_max → 2``. With
    ``steps`` equal to :func:`coefficient_study`'s ``samples`` both share one compiled flow.

    Columns ``z``, ``h``, ``c``, ``ratio`` (``ĉ/(h/4)``), ``explained``, ``condition``, ``converged``.
    """
    zs = np.asarray(zs, dtype=np.float64)
    if zs.ndim != 1 or zs.size == 0 or np.any(zs <= 0) or np.any(zs >= 2):
        raise ConfigError(f"zs = h·λ_max must be a 1-D array in (0, 2), got {zs!r}")
    check_int(steps, "steps")
    theta0, _ = bea.check_study(theta0, [1.0])
    lam = bea.sharpness(E, theta0)
    if not lam > 0:
        raise ConfigError(f"λ_max(H(θ0)) = {lam:.3g} is not positive: start nearer a minimum")
    rows = []
    for z in zs:
        h = float(z / lam)
        fit = fit_implicit_coefficient(E, _gd_at(E, theta0, h, np.arange(steps + 1)), h)
        rows.append({"z": z, "h": h, "c": fit.c, "ratio": fit.ratio, "explained": fit.explained,
                     "condition": fit.condition, "converged": fit.converged})
    return pd.DataFrame(rows)


def _gd_at(E: bea.Loss, theta0: jax.Array, h: float, steps: np.ndarray) -> np.ndarray:
    """GD iterates ``θ_s`` for the step numbers ``steps`` (one compile per ``E``, any ``h``, ``steps``)."""
    return np.asarray(bea.gd_finals(E, theta0, jnp.full(steps.shape, h), jnp.asarray(steps)))


def quadratic_implicit_coefficient(h, kappa: float):
    """``c*`` such that GD at rate ``h`` on ``E = κθ²/2`` (one dimension) is exactly the flow of
    ``E + c*‖∇E‖² = κ(1 + 2c*κ)θ²/2``: ``c* = (r/κ − 1)/(2κ)`` with ``r = −log(1 − hκ)/h``
    (:func:`igrlib.maths.bea.quadratic_exact_rate`); ``h/4 + h²κ/6 + …``, NaN for ``hκ ≥ 1``."""
    check_positive(kappa, "kappa")
    return (bea.quadratic_exact_rate(h, kappa) / kappa - 1) / (2 * kappa)


@dataclasses.dataclass(frozen=True)
class GradientMatch:
    """The gradient-matching rate of one point and how far to trust it.

    ``c``: the coefficient of ``‖∇E‖²`` that makes ``∇(E + c‖∇E‖²)`` as small as possible there
    (units of h); ``cosine``: ``⟨g, H g⟩/(‖g‖‖Hg‖)``; ``residual``: ``‖g + 2c·Hg‖/‖g‖ = √(1 − cos²)``,
    the share of the gradient that no choice of ``c`` cancels; ``rayleigh``: ``gᵀHg/‖g‖²`` (units
    of λ), the curvature along the gradient.
    """

    c: float
    cosine: float
    residual: float
    rayleigh: float


def gradient_matching_rate(E: bea.Loss, theta) -> GradientMatch:
    """``ĉ = −⟨∇E, ∇R⟩/‖∇R‖²`` with ``R = ‖∇E‖²`` (``∇R = 2H∇E``), i.e. ``−gᵀHg/(2‖Hg‖²)``: the
    least-squares ``c`` for ``∇E + c∇R = 0``, the stationarity condition of the modified loss
    ``E + c‖∇E‖²``. In R_IG units (``R_IG = ‖∇E‖²/m``) the rate is ``λ̂ = ĉ·m``.

    It estimates the implicit coefficient only where GD sits near a stationary point of a modified
    loss (``residual`` near 0); elsewhere it is a property of the point, not of the iteration. When
    ``g`` lies along one eigenvector of ``H`` with eigenvalue ``λ``, ``ĉ = −1/(2λ)`` exactly (cosine
    ±1): at the edge of stability, ``λ = 2/h``, that is ``−h/4``, the first-order rate with the
    opposite sign. Float64 only; one gradient and one Hessian-vector product.
    """
    theta, _ = bea.check_study(theta, [1.0])
    grad = jax.grad(E)
    g, hg = jax.jvp(grad, (theta,), (grad(theta),))
    g, hg = np.asarray(g), np.asarray(hg)
    ghg, hg2, g2 = float(g @ hg), float(hg @ hg), float(g @ g)
    if not (hg2 > 0 and g2 > 0):
        raise ConfigError("∇E or H∇E vanishes at θ: no gradient-matching rate")
    cosine = ghg / np.sqrt(hg2 * g2)
    return GradientMatch(c=-ghg / (2 * hg2), cosine=cosine,
                         residual=float(np.sqrt(max(0.0, 1 - cosine**2))), rayleigh=ghg / g2)
