"""Backward error analysis of gradient descent (Barrett & Dherin 2021, Section 3 and Theorem 3.1).

Notation: a loss ``E(θ)`` of a flat parameter vector ``θ ∈ R^m``, ``g = ∇E``, ``H = ∇²E``, the
learning rate (step size) ``h`` in units of time, so GD step ``n`` sits at time ``t = n·h``.

Gradient descent ``θ_{n+1} = θ_n + h f(θ_n)`` with ``f = −∇E`` is explicit Euler on gradient
flow ``θ' = f(θ)``. Backward error analysis looks for a *modified* field

    θ' = f + h f₁ + h² f₂ + …

whose exact time-``h`` flow reproduces one GD step to higher order in ``h``. Matching Taylor terms
(Hairer, Lubich & Wanner 2006, §IX.1) gives

    f₁ = −½ f′f = −½ H g = −¼ ∇‖g‖²,
    f₂ = ⅓ f′f′f + ¹⁄₁₂ f″(f, f) = −∇[(1/12) gᵀHg] − (1/6) H²g,

so to first order GD follows the gradient flow of ``Ẽ = E + (h/4)‖∇E‖²``, while the second-order
term ``H²g`` is in general not a gradient. The *order* of a field below is how many terms beyond
``f`` it keeps: 0 (gradient flow), 1 or 2. Its one-step (local) error is ``O(h^{order+2})`` and its
error after ``n = T/h`` steps (global) is ``O(h^{order+1})``.

Everything here is pure JAX: derivatives by ``grad``/``jvp`` (Hessian-vector products, never dense
Hessians), flows by diffrax. Error studies need float64: call them inside
``with jax.enable_x64(True):`` (or with the global ``jax_enable_x64`` flag set); they raise
:class:`~igrlib.config.ConfigError` otherwise. Everything that integrates a flow is compiled once
per loss ``E`` (a static argument: pass the same function object to reuse the program).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from igrlib.config import ConfigError, check_choice, check_positive
from igrlib.maths import curvature

Params = Any
Loss = Callable[[jax.Array], jax.Array]
Field = Callable[[jax.Array], jax.Array]

#: Orders of the modified field: 0 = gradient flow, 1 = IGR modified loss, 2 = with ``h² f₂``.
ORDERS: tuple[int, ...] = (0, 1, 2)
#: Relative and absolute tolerance of the adaptive flow integrator (float64 units of θ).
FLOW_RTOL = 1e-13
FLOW_ATOL = 1e-13
#: Step budget of one adaptive flow solve.
FLOW_MAX_STEPS = 100_000


# --- gradient descent ---------------------------------------------------------------------------


def gd_step(E: Loss, theta: jax.Array, h: float | jax.Array) -> jax.Array:
    """One gradient-descent step ``θ − h ∇E(θ)``."""
    return theta - h * jax.grad(E)(theta)


def gd_trajectory(E: Loss, theta0: jax.Array, h: float | jax.Array, n: int) -> jax.Array:
    """The iterates ``θ_0, …, θ_n`` of GD at rate ``h``, shape ``(n + 1, m)`` (one ``lax.scan``,
    compiled once per loss ``E`` and ``n``)."""
    _check_steps(n)
    return _gd_trajectory(E, jnp.asarray(theta0), h, n)


@partial(jax.jit, static_argnames=("E", "n"))
def _gd_trajectory(E: Loss, theta0: jax.Array, h: jax.Array, n: int) -> jax.Array:
    def step(theta, _):
        new = gd_step(E, theta, h)
        return new, new

    _, path = jax.lax.scan(step, theta0, None, length=n)
    return jnp.concatenate([theta0[None], path])


@partial(jax.jit, static_argnames=("E",))
def gd_final(E: Loss, theta0: jax.Array, h: float | jax.Array, n: int | jax.Array) -> jax.Array:
    """``θ_n`` after ``n`` GD steps; ``n`` is traced, so one compile per loss ``E`` serves every
    ``n`` and ``h``."""
    return jax.lax.fori_loop(0, n, lambda _, theta: gd_step(E, theta, h), jnp.asarray(theta0))


def flat_loss(
    loss_fn: Callable[[Params], jax.Array], params: Params
) -> tuple[Loss, jax.Array, Callable[[jax.Array], Params]]:
    """View a loss of a parameter pytree as a loss of one flat vector.

    Returns ``(E, θ0, unravel)`` with ``E(θ) = loss_fn(unravel(θ))`` and ``θ0`` the flattened
    ``params``, so the functions of this module apply to any network in full parameter space.
    """
    theta0, unravel = ravel_pytree(params)
    return (lambda theta: loss_fn(unravel(theta))), theta0, unravel


# --- vector fields ------------------------------------------------------------------------------


def gradient_flow_field(E: Loss) -> Field:
    """``f(θ) = −∇E(θ)``, the field of gradient flow."""
    grad = jax.grad(E)
    return lambda theta: -grad(theta)


def first_order_term(E: Loss) -> Field:
    """``f₁ = −½ f′f = −½ H∇E``, by one Hessian-vector product."""
    f = gradient_flow_field(E)

    def f1(theta):
        return -0.5 * jax.jvp(f, (theta,), (f(theta),))[1]

    return f1


def second_order_term(E: Loss) -> Field:
    """``f₂ = ⅓ f′f′f + ¹⁄₁₂ f″(f, f)`` with ``f = −∇E``, by nested ``jvp``.

    ``f′v`` is ``jvp(f, θ, v)`` and ``f″(v, v) = d²/ds² f(θ + s v)|₀`` is a ``jvp`` of that
    ``jvp``; no Hessian is formed.
    """
    f = gradient_flow_field(E)

    def f2(theta):
        v = f(theta)
        directional = lambda t: jax.jvp(f, (t,), (v,))[1]  # noqa: E731  t ↦ f′(t) v
        fpf, fppff = jax.jvp(directional, (theta,), (v,))
        fpfpf = jax.jvp(f, (theta,), (fpf,))[1]
        return fpfpf / 3 + fppff / 12

    return f2


def second_order_term_gradient_form(E: Loss) -> Field:
    """``−∇[(1/12) gᵀHg] − (1/6) H²g`` (derived in the book's backward-error-analysis chapter): equal to :func:`second_order_term`.

    Kept separately so the identity can be checked; the gradient part uses reverse mode over
    one Hessian-vector product, ``H²g`` two Hessian-vector products.
    """
    grad = jax.grad(E)

    def hvp(theta, v):
        return jax.jvp(grad, (theta,), (v,))[1]

    def curvature_along_gradient(theta):
        g = grad(theta)
        return jnp.vdot(g, hvp(theta, g))

    def f2(theta):
        g = grad(theta)
        h2g = hvp(theta, hvp(theta, g))
        return -jax.grad(curvature_along_gradient)(theta) / 12 - h2g / 6

    return f2


def modified_field(E: Loss, h: float | jax.Array, order: int = 1) -> Field:
    """The modified field of GD at rate ``h`` truncated at ``order``.

    * 0: ``f = −∇E`` (gradient flow);
    * 1: ``f + h f₁ = −∇[E + (h/4)‖∇E‖²] = −(I + (h/2) H)∇E``;
    * 2: ``f + h f₁ + h² f₂``.
    """
    check_choice(order, ORDERS, "order")
    terms = [gradient_flow_field(E), first_order_term(E), second_order_term(E)][: order + 1]

    def field(theta):
        out = terms[0](theta)
        for k, term in enumerate(terms[1:], start=1):
            out = out + h**k * term(theta)
        return out

    return field


def _traced_order_field(E: Loss, h: jax.Array, order: jax.Array) -> Field:
    """:func:`modified_field` with a traced ``order``: every term is computed and the unused ones
    get weight 0, so one compiled error study serves all orders."""
    terms = (first_order_term(E), second_order_term(E))
    f = gradient_flow_field(E)

    def field(theta):
        out = f(theta)
        for k, term in enumerate(terms, start=1):
            out = out + jnp.where(order >= k, h**k, 0.0) * term(theta)
        return out

    return field


# --- flows ---------------------------------------------------------------------------------------


def flow(
    field: Field,
    theta0: jax.Array,
    t1: float | jax.Array,
    ts: jax.Array | None = None,
    rtol: float = FLOW_RTOL,
    atol: float = FLOW_ATOL,
) -> jax.Array:
    """The exact flow ``θ(t)`` of ``θ' = field(θ)``, ``θ(0) = θ0``, by adaptive Dopri8 (diffrax).

    Returns ``θ(t1)`` (shape ``(m,)``), or ``θ(ts)`` (shape ``(len(ts), m)``, each ``ts ≤ t1``)
    when ``ts`` is given. With float64 and the default tolerances the integration error is about
    1e-13 relative, far below the discretisation errors it is used to measure. A solve that fails
    (the field blows up, or more than ``FLOW_MAX_STEPS`` steps) returns NaN instead of raising, so
    one bad rate in a vmapped sweep does not lose the others.
    """
    term = diffrax.ODETerm(lambda t, y, args: field(y))
    saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=jnp.asarray(ts))
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Dopri8(),
        t0=0.0,
        t1=t1,
        dt0=None,
        y0=jnp.asarray(theta0),
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=FLOW_MAX_STEPS,
        throw=False,
    )
    ys = jnp.where(sol.result == diffrax.RESULTS.successful, sol.ys, jnp.nan)
    return ys[0] if ts is None else ys


#: Times, as fractions of a flow's end time, at which every batched flow is saved: 0 and 1500
#: log-spaced fractions from 1e-7 to 1, fine enough to draw a path that starts violently.
FLOW_FRACTIONS = np.concatenate([[0.0], np.geomspace(1e-7, 1.0, 1500)])
#: Batched flows run in chunks of this many rows: one compiled program per loss serves them all.
_CHUNK = 32


@partial(jax.jit, static_argnames=("E",))
def _flow_chunk(E: Loss, theta0s, hs, orders, t1s) -> jax.Array:
    def one(theta0, h, order, t1):
        field = _traced_order_field(E, h, order)
        # the flow of t1·field over [0, 1] is the flow of field over [0, t1]
        return flow(lambda theta: t1 * field(theta), theta0, 1.0, ts=FLOW_FRACTIONS)

    return jax.vmap(one)(theta0s, hs, orders, t1s)


def modified_flows(E: Loss, theta0s, hs, orders, t1s) -> np.ndarray:
    """Exact flows of modified fields of GD, one per row: row ``i`` starts at ``theta0s[i]`` and
    follows the field of order ``orders[i]`` at rate ``hs[i]`` up to time ``t1s[i]``.

    Returns ``θ(FLOW_FRACTIONS·t1s[i])`` for every row, shape ``(rows, 1501, m)``; the last point
    is ``θ(t1s[i])``. Rows run in vmapped chunks of 32 through one program, compiled once per loss
    ``E`` (whatever the number of rows, rates, orders or end times).
    """
    theta0s = jnp.atleast_2d(jnp.asarray(theta0s))
    rows = theta0s.shape[0]
    columns = [np.broadcast_to(np.asarray(v, dtype=d), (rows,))
               for v, d in ((hs, np.float64), (orders, np.int64), (t1s, np.float64))]
    hs_, orders_, t1s_ = columns
    if np.any(~np.isin(orders_, ORDERS)):
        raise ConfigError(f"orders must be in {ORDERS}, got {np.unique(orders_)}")
    if not (np.all(np.isfinite(t1s_)) and np.all(t1s_ > 0) and np.all(np.isfinite(hs_)) and np.all(hs_ > 0)):
        raise ConfigError("rates and end times of flows must be positive and finite")
    out = []
    for lo in range(0, rows, _CHUNK):
        take = np.minimum(np.arange(lo, lo + _CHUNK), rows - 1)  # pad by repeating the last row
        dtype = theta0s.dtype
        chunk = _flow_chunk(E, theta0s[take], jnp.asarray(hs_[take], dtype=dtype),
                            jnp.asarray(orders_[take]), jnp.asarray(t1s_[take], dtype=dtype))
        out.append(np.asarray(chunk)[: min(_CHUNK, rows - lo)])
    return np.concatenate(out)


def modified_flow(
    E: Loss, theta0: jax.Array, h: float, order: int, T: float
) -> tuple[np.ndarray, np.ndarray]:
    """The exact flow of the order-``order`` modified field of GD at rate ``h`` from ``θ0`` to
    time ``T`` (order 0: gradient flow, ``h`` unused; order 1: the gradient flow of
    ``E + (h/4)‖∇E‖²``). Returns ``(ts, θ(ts))`` with ``ts = FLOW_FRACTIONS·T`` (units of ``h``:
    time ``n·h`` is GD step ``n``)."""
    check_choice(order, ORDERS, "order")
    check_positive(h, "learning rate h")
    check_positive(T, "end time T")
    return FLOW_FRACTIONS * T, modified_flows(E, theta0, h, order, T)[0]


# --- error studies ------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("E",))
def gd_finals(E: Loss, theta0: jax.Array, hs: jax.Array, ns: jax.Array) -> jax.Array:
    """``θ_n`` of GD from ``θ0`` for each pair ``(h, n)`` of ``hs, ns`` (vmapped), shape
    ``(len(hs), m)``."""
    return jax.vmap(lambda h, n: gd_final(E, theta0, h, n))(hs, ns)


def _errors(E: Loss, theta0: jax.Array, hs: np.ndarray, ns: np.ndarray, order: int) -> np.ndarray:
    """``‖θ_n − φ_{nh}(θ0)‖`` for each pair ``(h, n)``; local studies are ``n = 1``."""
    gd = np.asarray(gd_finals(E, theta0, jnp.asarray(hs), jnp.asarray(ns)))
    ends = modified_flows(E, jnp.broadcast_to(theta0, (hs.size, theta0.size)), hs, order, ns * hs)
    return np.linalg.norm(gd - ends[:, -1], axis=1)


def local_error(E: Loss, theta0: jax.Array, hs, order: int) -> np.ndarray:
    """``‖θ_1 − φ_h(θ0)‖`` for each ``h`` in ``hs``: one GD step against the time-``h`` flow ``φ_h``
    of the modified field of ``order`` (units of θ). Expected to scale as ``h^{order+2}``."""
    check_choice(order, ORDERS, "order")
    theta0, hs = check_study(theta0, hs)
    return _errors(E, theta0, hs, np.ones(hs.shape, dtype=np.int64), order)


def global_error(E: Loss, theta0: jax.Array, hs, T: float, order: int) -> np.ndarray:
    """``‖θ_n − φ_T(θ0)‖`` after ``n = T/h`` GD steps, for each ``h`` in ``hs`` (units of θ).

    Each ``T/h`` must be a whole number (use :func:`horizon_rates`). Expected to scale as
    ``h^{order+1}``.
    """
    check_choice(order, ORDERS, "order")
    theta0, hs = check_study(theta0, hs)
    check_positive(T, "horizon T")
    ns = np.rint(T / hs).astype(np.int64)
    if np.any(ns < 1) or not np.allclose(ns * hs, T, rtol=1e-9, atol=0):
        raise ConfigError(f"every T/h must be a whole number of steps; got T={T}, hs={hs}")
    return _errors(E, theta0, hs, ns, order)


def horizon_rates(T: float, ns) -> np.ndarray:
    """Rates ``h = T/n`` for step counts ``ns``, so that ``n`` steps of GD last exactly ``T``."""
    check_positive(T, "horizon T")
    ns = np.asarray(ns)
    if ns.ndim != 1 or ns.size == 0 or not np.issubdtype(ns.dtype, np.integer) or np.any(ns < 1):
        raise ConfigError(f"step counts must be a non-empty 1-D array of integers >= 1, got {ns!r}")
    return T / ns.astype(np.float64)


def fit_order(hs, errors) -> float:
    """Least-squares slope of ``log(error)`` against ``log(h)``: the empirical order in ``h``."""
    hs, errors = np.asarray(hs, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    if hs.shape != errors.shape or hs.ndim != 1 or hs.size < 2:
        raise ConfigError("hs and errors must be 1-D arrays of the same length >= 2")
    if np.any(hs <= 0) or np.any(errors <= 0) or not np.all(np.isfinite(errors)):
        raise ConfigError("hs and errors must be positive and finite to fit a log-log slope")
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def error_study(E: Loss, theta0: jax.Array, T: float, ns) -> pd.DataFrame:
    """Local and global errors of every order at the rates ``h = T/n``, ``n`` in ``ns``.

    A tidy table with columns ``kind`` (``"local"``: one step; ``"global"``: ``n`` steps to time
    ``T``), ``order``, ``h``, ``n`` and ``error`` (units of θ).
    """
    hs = horizon_rates(T, ns)
    rows = []
    for order in ORDERS:
        for kind, errors in (
            ("local", local_error(E, theta0, hs, order)),
            ("global", global_error(E, theta0, hs, T, order)),
        ):
            rows += [
                {"kind": kind, "order": order, "h": h, "n": n if kind == "global" else 1,
                 "error": e}
                for h, n, e in zip(hs, np.asarray(ns), errors)
            ]
    return pd.DataFrame(rows)


def fitted_orders(study: pd.DataFrame) -> pd.DataFrame:
    """Fitted log-log slope of each ``(kind, order)`` in an :func:`error_study` table, with the
    theory's value (``order + 2`` local, ``order + 1`` global) and the difference."""
    rows = []
    for (kind, order), group in study.groupby(["kind", "order"], sort=True):
        expected = order + (2 if kind == "local" else 1)
        slope = fit_order(group["h"].to_numpy(), group["error"].to_numpy())
        rows.append({"kind": kind, "order": order, "slope": slope, "expected": expected,
                     "deviation": slope - expected})
    return pd.DataFrame(rows)


# --- break-down as h·λ_max → 2 -------------------------------------------------------------------


def sharpness(E: Loss, theta: jax.Array, iters: int = 60) -> float:
    """``λ_max(H(θ))``, the top eigenvalue of the Hessian of ``E`` at θ (units of loss/θ²), by
    ``min(iters, m)`` Lanczos steps (:func:`igrlib.maths.curvature.top_eigenvalues`, the book's one
    sharpness estimator; with ``m`` steps it is exact up to rounding)."""
    _check_steps(iters)
    theta = jnp.asarray(theta)
    return curvature.top_eigenvalues(_whole_loss(E), theta, _NO_BATCH, jax.random.key(0),
                                     num_iters=min(iters, theta.size)).largest


#: A single empty batch: ``E`` here is a function of θ alone.
_NO_BATCH = (jnp.zeros((1, 1)), jnp.zeros((1, 1)))


@lru_cache(maxsize=64)
def _whole_loss(E: Loss):
    """``E`` in the curvature calling convention ``(θ, batch) -> E(θ)`` (one object per ``E``, so
    compilations are reused)."""
    return lambda theta, batch: E(theta)


def breakdown(E: Loss, theta0: jax.Array, zs) -> pd.DataFrame:
    """One-step errors at rates ``h = z/λ_max(θ0)`` for each ``z`` in ``zs`` (``0 < z < 2``).

    Columns ``z`` (``h·λ_max``), ``h``, ``order``, ``error`` (units of θ) and ``relative``: the
    error over the step length ``h‖∇E(θ0)‖``, comparable across losses and with
    :func:`quadratic_relative_error`.
    """
    zs = np.asarray(zs, dtype=np.float64)
    if zs.ndim != 1 or zs.size == 0 or np.any(zs <= 0) or np.any(zs >= 2):
        raise ConfigError(f"zs = h·λ_max must be a 1-D array in (0, 2), got {zs!r}")
    theta0 = jnp.asarray(theta0)
    lam = sharpness(E, theta0)
    if not lam > 0:
        raise ConfigError(f"λ_max(H(θ0)) = {lam:.3g} is not positive: start nearer a minimum")
    hs = zs / lam
    step = float(jnp.linalg.norm(jax.grad(E)(theta0)))
    rows = []
    for order in ORDERS:
        errors = local_error(E, theta0, hs, order)
        rows += [{"z": z, "h": h, "order": order, "error": e, "relative": e / (h * step)}
                 for z, h, e in zip(zs, hs, errors)]
    return pd.DataFrame(rows)


# --- the quadratic E = κθ²/2 in closed form -----------------------------------------------------


def quadratic_exact_rate(h, kappa: float):
    """``−log(1 − hκ)/h``: the rate ``c`` of the linear flow ``θ' = −cθ`` whose time-``h`` map is
    exactly GD's ``θ ↦ (1 − hκ)θ`` on ``E = κθ²/2``. Real only for ``hκ < 1`` (NaN beyond: for
    ``hκ > 1`` GD flips the sign of θ, which no real flow does)."""
    h = np.asarray(h, dtype=np.float64)
    z = h * kappa
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(z < 1, -np.log1p(-np.minimum(z, 1)) / h, np.nan)


def quadratic_modified_rate(h, kappa: float, order: int):
    """The rate of the order-``order`` modified flow on ``E = κθ²/2``: the series of
    :func:`quadratic_exact_rate` truncated, ``κ Σ_{k≤order} (hκ)^k/(k+1)``
    (``κ``, ``κ(1 + hκ/2)``, ``κ(1 + hκ/2 + h²κ²/3)``)."""
    check_choice(order, ORDERS, "order")
    z = np.asarray(h, dtype=np.float64) * kappa
    return kappa * sum(z**k / (k + 1) for k in range(order + 1))


def quadratic_relative_error(z, order: int):
    """One-step error of the order-``order`` flow on ``E = κθ²/2`` over the step length, as a
    function of ``z = hκ`` alone: ``|(1 − z) − exp(−z Σ_{k≤order} z^k/(k+1))| / z``."""
    check_choice(order, ORDERS, "order")
    z = np.asarray(z, dtype=np.float64)
    series = sum(z**k / (k + 1) for k in range(order + 1))
    return np.abs((1 - z) - np.exp(-z * series)) / z


# --- validation ---------------------------------------------------------------------------------


def _check_steps(n) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"number of steps must be an integer >= 0, got {n!r}")


def check_study(theta0, hs) -> tuple[jax.Array, np.ndarray]:
    """Validate the inputs of an error-order study (this module's and the stochastic and momentum
    ones'): ``hs`` a non-empty 1-D array of positive learning rates, ``theta0`` a flat float64
    parameter vector. Returns them as ``(jax array, numpy float64 array)``."""
    hs_np = np.asarray(hs, dtype=np.float64)
    if hs_np.ndim != 1 or hs_np.size == 0 or not np.all(np.isfinite(hs_np)) or np.any(hs_np <= 0):
        raise ConfigError(
            f"learning rates must be a non-empty 1-D array of positive numbers, got {hs!r}"
        )
    theta0 = jnp.asarray(theta0)
    if theta0.ndim != 1:
        raise ConfigError(f"theta0 must be a flat parameter vector, got shape {theta0.shape}")
    if theta0.dtype != jnp.float64:
        raise ConfigError(
            "error studies need float64: run them inside `with jax.enable_x64(True):` "
            f"(theta0 has dtype {theta0.dtype})"
        )
    return theta0, hs_np
