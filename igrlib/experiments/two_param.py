"""The paper's two-parameter model (Figure 1; Barrett & Dherin 2021, Section 3).

One data point ``(x, y)``, parameters ``θ = (a, b)``, prediction ``a·b·x`` and loss
``E(a, b) = ½ r²`` with residual ``r = y − a·b·x``. Its facts, all exact:

* the global minima are the hyperbola ``a·b = y/x``; at a minimum the Hessian has eigenvalues 0
  and ``x²(a² + b²)``, so the flattest minimum is the one of least L2 norm, ``a = b = √(y/x)``,
  with norm ``√(2y/x)``;
* with ``m = 2`` parameters ``λ = h·m/4 = h/2`` and the modified loss is
  ``Ẽ = E + (h/4)‖∇E‖² = E·(1 + λ x²(a² + b²))``, because ``‖∇E‖² = r²x²(a² + b²) = 2E·x²(a² + b²)``;
* gradient flow conserves ``a² − b²``; one GD step multiplies it by ``1 − h²x²r²``.

Our choices (the paper does not give them): ``x = 1, y = 0.6``, so the flattest minimum
``(0.775, 0.775)`` and the start ``(2.8, 3.5)`` both sit in the window ``[0, 4]²``. From that start
the Hessian's top eigenvalue is 29.2, so the linear stability bound there is ``2/29.2 ≈ 0.069``;
at the minima GD reaches from there it is ``2/(x²(a² + b²)) ≥ 0.43``. We take

* ``h_S = 0.001``: ``h·λ_max(θ0) = 0.03``, GD is indistinguishable from gradient flow;
* ``h_M = 0.02``: ``h·λ_max(θ0) = 0.58``, inside the range where the first-order modified flow is
  a good model (its endpoint is 4× closer to GD's than gradient flow's is);
* ``h_L = 0.08``: ``h·λ_max(θ0) = 2.3``, beyond the start's linear bound, yet the loss still falls
  at every step and GD lands on a minimum where ``h_L x²(a² + b²) ≈ 0.19``, far inside the bound.
  Up to ``h* ≈ 0.1087`` GD ends on the branch ``a, b > 0`` it started on, at smaller norm the
  larger ``h`` (at ``h*`` on the flattest minimum itself); above it the first steps carry it to
  the mirror branch ``a, b < 0``, where the final norm rises to a peak (near ``h ≈ 0.17``) and
  falls again; by ``h = 0.2`` GD is back on ``a, b > 0``, at ``(0.739, 0.812)`` next to the
  flattest minimum. The curve of final norm against ``h`` is not monotone beyond ``h*``
  (:func:`branch_switch` finds ``h*`` from the computed endpoints).

The far start ``(75, 74.925)`` has ``λ_max(θ0) ≈ 1.7·10⁴``: GD is stable there only for
``h < 1.2·10⁻⁴``, so no common rate serves both starts. It gets its own three rates, below that
bound. Its residual ``r ≈ −5600`` is so large that even ``h = 10⁻⁴`` shrinks ``a² − b²`` by a factor
``1 − h²r² ≈ 0.69`` per early step.

Every function returns a tidy :class:`pandas.DataFrame` (or numbers) for plotting; all compute
runs in float64. Times are in units of the learning rate's time: GD step ``n`` is at ``t = n·h``.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from igrlib.maths import bea
from igrlib.config import ConfigError, check_keys, check_positive, resolve_profile
from igrlib.maths.losses import gradient_penalty_loss
from igrlib.maths.models import two_param_loss


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the two-parameter experiments (rates and times in the units of ``h``)."""

    profile: str
    x: float = 1.0
    y: float = 0.6
    start: tuple[float, float] = (2.8, 3.5)
    far_start: tuple[float, float] = (75.0, 74.925)
    h_s: float = 1e-3
    h_m: float = 0.02
    h_l: float = 0.08
    #: small, moderate and large rates for the far start, all below its bound 2/λ_max ≈ 1.19e-4
    far_rates: tuple[float, float, float] = (1e-5, 3e-5, 1e-4)
    #: time each trajectory runs (GD runs ceil(T/h) steps); long enough to converge
    horizon: float = 5.0
    far_horizon: float = 2.0
    #: Figure 1(b): rates up to h* ≈ 0.1087, where GD from ``start`` lands on the flattest
    #: minimum, and rates beyond, where it switches to the mirror branch; each run lasts
    #: ``norm_horizon`` (long, because rates near h* pass close to the saddle at the origin)
    h_grid: tuple[float, ...] = tuple(np.linspace(0.002, 0.108, 54))
    h_beyond: tuple[float, ...] = tuple(np.linspace(0.11, 0.2, 19))
    norm_horizon: float = 50.0
    #: EGR: GD at rate egr_rate on E + μ‖∇E‖², for each μ (the grids hold h_M/4 and h_L/4)
    egr_rate: float = 1e-3
    mu_grid: tuple[float, ...] = tuple(np.linspace(0.0, 0.025, 11))
    #: error orders: GD for n = T/h steps, n in bea_steps, over the horizon bea_horizon
    bea_horizon: float = 0.1
    bea_steps: tuple[int, ...] = (50, 80, 125, 200, 320, 500)
    #: break-down: one step from near a minimum at rates h = z/λ_max, z in breakdown_z
    breakdown_start: tuple[float, float] = (1.0, 0.7)
    breakdown_z: tuple[float, ...] = tuple(np.linspace(0.05, 1.95, 20))

    @property
    def rates(self) -> dict[str, float]:
        """``{"h_S": …, "h_M": …, "h_L": …}``."""
        return {"h_S": self.h_s, "h_M": self.h_m, "h_L": self.h_l}


_PROFILE_DEFAULTS: dict[str, dict] = {
    "smoke": {
        "h_grid": tuple(np.linspace(0.005, 0.108, 8)),
        "h_beyond": tuple(np.linspace(0.12, 0.2, 3)),
        "mu_grid": (0.0, 0.005, 0.02, 0.025),
        "bea_steps": (50, 100, 200, 400),
        "breakdown_z": tuple(np.linspace(0.1, 1.9, 6)),
    },
    "cpu": {},
    "paper": {
        "horizon": 10.0,
        "far_horizon": 5.0,
        "h_grid": tuple(np.linspace(0.001, 0.108, 215)),
        "h_beyond": tuple(np.linspace(0.1085, 0.2, 184)),
        "norm_horizon": 100.0,
        "mu_grid": tuple(np.linspace(0.0, 0.025, 26)),
        "bea_steps": (50, 63, 80, 100, 125, 160, 200, 250, 320, 400, 500),
        "breakdown_z": tuple(np.linspace(0.02, 1.98, 50)),
    },
}


def config(profile: str | None = None, **overrides) -> Config:
    """The experiment settings for ``profile`` (``None``: ``$IGR_PROFILE``, else ``cpu``), with
    any field of :class:`Config` overridden by keyword. Raises :class:`ConfigError` on bad values."""
    profile = resolve_profile(profile)
    fields = {f.name for f in dataclasses.fields(Config)} - {"profile"}
    check_keys(overrides, fields, "two_param config")
    cfg = Config(profile=profile, **{**_PROFILE_DEFAULTS[profile], **overrides})
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    check_positive(cfg.x, "x")
    check_positive(cfg.y, "y")
    for name in ("h_s", "h_m", "h_l", "horizon", "far_horizon", "norm_horizon", "egr_rate",
                 "bea_horizon"):
        check_positive(getattr(cfg, name), name)
    if not cfg.h_s < cfg.h_m < cfg.h_l:
        raise ConfigError(f"need h_s < h_m < h_l, got {cfg.h_s}, {cfg.h_m}, {cfg.h_l}")
    # Every minimum has λ_max = x²(a² + b²) ≥ 2xy, so no minimum is stable for h ≥ 1/(xy).
    limit = 1 / (cfg.x * cfg.y)
    rates = [cfg.h_s, cfg.h_m, cfg.h_l, cfg.egr_rate, *cfg.far_rates, *cfg.h_grid, *cfg.h_beyond]
    for h in rates:
        check_positive(h, "learning rate")
        if h >= limit:
            raise ConfigError(f"learning rate {h} >= 1/(x·y) = {limit:.4g}: no minimum is stable")
    if len(cfg.far_rates) != 3 or not cfg.far_rates[0] < cfg.far_rates[1] < cfg.far_rates[2]:
        raise ConfigError(f"far_rates must be three increasing rates, got {cfg.far_rates}")
    for name in ("start", "far_start", "breakdown_start"):
        point = getattr(cfg, name)
        if len(point) != 2 or not all(math.isfinite(v) for v in point):
            raise ConfigError(f"{name} must be two finite numbers (a, b), got {point!r}")
    for name in ("h_grid", "h_beyond", "mu_grid", "breakdown_z"):
        if len(getattr(cfg, name)) < 2:
            raise ConfigError(f"{name} needs at least 2 values")
    if any(mu < 0 or not math.isfinite(mu) for mu in cfg.mu_grid):
        raise ConfigError(f"mu_grid must be finite and >= 0, got {cfg.mu_grid}")
    if any(not 0 < z < 2 for z in cfg.breakdown_z):
        raise ConfigError(f"breakdown_z = h·λ_max must lie in (0, 2), got {cfg.breakdown_z}")
    bea.horizon_rates(cfg.bea_horizon, np.asarray(cfg.bea_steps))


# --- closed forms -------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def loss_fn(x: float, y: float) -> bea.Loss:
    """``θ ↦ E(θ) = ½(y − a·b·x)²``, one object per ``(x, y)`` so compiled programs are reused."""
    return partial(two_param_loss, x=x, y=y)


def min_norm(x: float, y: float) -> float:
    """``√(2y/x)``: the least L2 norm of a minimum ``a·b = y/x`` (at ``a = b = √(y/x)``)."""
    return math.sqrt(2 * y / x)


def flattest_minimum(x: float, y: float) -> tuple[float, float]:
    """``(√(y/x), √(y/x))``: the minimum of least norm, where the Hessian's top eigenvalue
    ``x²(a² + b²) = 2xy`` is smallest."""
    s = math.sqrt(y / x)
    return s, s


def modified_loss_closed(theta: jax.Array, x: float, y: float, lam: float) -> jax.Array:
    """``Ẽ = E·(1 + λ x²(a² + b²))``: the IGR modified loss of the model with ``λ = h/2``."""
    a, b = theta[0], theta[1]
    return two_param_loss(theta, x, y) * (1 + lam * x**2 * (a**2 + b**2))


def step_factor(theta: jax.Array, h: float, x: float, y: float) -> jax.Array:
    """``1 − h²x²r²`` with ``r = y − a·b·x``: one GD step maps ``a² − b²`` to this times itself."""
    r = y - theta[..., 0] * theta[..., 1] * x
    return 1 - h**2 * x**2 * r**2


def hessian_eigenvalues(theta: jax.Array, x: float, y: float) -> jax.Array:
    """Eigenvalues of ``H = [[x²b², 2abx² − xy], [2abx² − xy, x²a²]]`` (ascending)."""
    a, b = theta[0], theta[1]
    mean = x**2 * (a**2 + b**2) / 2
    radius = jnp.sqrt((x**2 * (b**2 - a**2) / 2) ** 2 + (2 * a * b * x**2 - x * y) ** 2)
    return jnp.stack([mean - radius, mean + radius])


# --- compiled kernels (static loss, so each compiles once per (x, y)) ---------------------------


@partial(jax.jit, static_argnames=("E",))
def _egr_finals(E, theta0, h, mus, n):
    def one(mu):
        return bea.gd_final(gradient_penalty_loss(E, mu), theta0, h, n)

    return jax.vmap(one)(mus)


def _steps(T: float, h: float) -> int:
    return int(math.ceil(T / h - 1e-9))


def _subsample(n: int, dense: int = 1000, sparse: int = 1000) -> np.ndarray:
    """Step indices 0…n: every step of the first ``dense``, then ``sparse`` log-spaced ones."""
    head = np.arange(min(n, dense) + 1)
    tail = np.geomspace(dense, n, sparse).round() if n > dense else []
    return np.unique(np.concatenate([head, tail, [n]])).astype(int)


def _points(theta, cfg: Config, **columns) -> pd.DataFrame:
    """A table of points ``θ = (a, b)`` with the loss and the L2 norm, after ``columns``."""
    theta = np.asarray(theta)
    a, b = theta[:, 0], theta[:, 1]
    return pd.DataFrame({**columns, "a": a, "b": b, "loss": 0.5 * (cfg.y - a * b * cfg.x) ** 2,
                         "norm": np.hypot(a, b)})


# --- experiments --------------------------------------------------------------------------------


def trajectories(cfg: Config, which: str = "start") -> pd.DataFrame:
    """Figure 1(a): paths from ``cfg.start`` (``which="start"``) or ``cfg.far_start`` (``"far"``).

    Rows of GD at the three rates (``path`` = ``"GD h_S"``, ``"GD h_M"``, ``"GD h_L"``; the far
    start uses ``cfg.far_rates``), the exact gradient flow and the exact flow of the modified loss
    with ``λ = h_M/2`` (``"modified flow"``); columns ``path, h, t, a, b, loss, norm``. Long GD
    runs keep every one of the first 1000 steps, then 1000 log-spaced ones.
    """
    _check_which(which)
    E = loss_fn(cfg.x, cfg.y)
    T = cfg.horizon if which == "start" else cfg.far_horizon
    rates = cfg.rates if which == "start" else dict(zip(("h_S", "h_M", "h_L"), cfg.far_rates))
    frames = []
    with jax.enable_x64(True):
        theta0 = jnp.asarray(cfg.start if which == "start" else cfg.far_start, dtype=jnp.float64)
        for name, h in rates.items():
            n = _steps(T, h)
            keep = _subsample(n)
            path = np.asarray(bea.gd_trajectory(E, theta0, h, n))[keep]
            frames.append(_points(path, cfg, path=f"GD {name}", h=h, t=keep * h))
        # one batch: gradient flow (order 0) and the modified flow at h_M (order 1)
        h_m = rates["h_M"]
        paths = bea.modified_flows(E, jnp.stack([theta0, theta0]), h_m, [0, 1], T)
        ts = bea.FLOW_FRACTIONS * T
        frames.append(_points(paths[0], cfg, path="gradient flow", h=np.nan, t=ts))
        frames.append(_points(paths[1], cfg, path="modified flow", h=h_m, t=ts))
    return pd.concat(frames, ignore_index=True)


def gradient_flow_end(cfg: Config, which: str = "start") -> np.ndarray:
    """``(a, b)`` where gradient flow from ``cfg.start`` (or ``cfg.far_start``) ends: the ``h → 0``
    limit of GD. It lies on ``a·b = y/x`` with ``a² − b²`` equal to its starting value."""
    _check_which(which)
    a0, b0 = cfg.start if which == "start" else cfg.far_start
    q, p = a0**2 - b0**2, cfg.y / cfg.x
    # a² − b² = q and a·b = p give a² = (q + √(q² + 4p²))/2; the sign follows the start's branch.
    a = math.copysign(math.sqrt((q + math.sqrt(q * q + 4 * p * p)) / 2), a0)
    return np.array([a, p / a])


def final_norms(cfg: Config) -> pd.DataFrame:
    """Figure 1(b): where GD and the modified flows end, against the learning rate.

    For each ``h`` of ``cfg.h_grid`` (``region="grid"``) and ``cfg.h_beyond`` (``"beyond"``), from
    ``cfg.start`` to time ``cfg.norm_horizon``: GD (``method="GD"``) and the exact flows of the
    first- and second-order modified fields (``"modified flow (1st order)"``, ``"… (2nd order)"``).
    Columns ``method, h, region, a, b, loss, norm`` (‖θ‖₂ at the end) and ``branch``
    (``"a,b>0"``, ``"a,b<0"`` or ``"other"``). The gradient-flow end is the limit ``h → 0``.
    """
    E = loss_fn(cfg.x, cfg.y)
    hs = np.concatenate([cfg.h_grid, cfg.h_beyond])
    region = ["grid"] * len(cfg.h_grid) + ["beyond"] * len(cfg.h_beyond)
    with jax.enable_x64(True):
        theta0 = jnp.asarray(cfg.start, dtype=jnp.float64)
        ns = jnp.asarray([_steps(cfg.norm_horizon, h) for h in hs])
        ends = {"GD": bea.gd_finals(E, theta0, jnp.asarray(hs), ns)}
        starts = jnp.broadcast_to(theta0, (2 * hs.size, 2))
        orders = np.repeat([1, 2], hs.size)
        flows = bea.modified_flows(E, starts, np.tile(hs, 2), orders, cfg.norm_horizon)[:, -1]
        ends["modified flow (1st order)"] = flows[: hs.size]
        ends["modified flow (2nd order)"] = flows[hs.size:]
    frames = []
    for method, theta in ends.items():
        frame = _points(theta, cfg, method=method, h=hs, region=region)
        sign = np.sign(frame["a"]) + np.sign(frame["b"])
        frame["branch"] = np.select([sign == 2, sign == -2], ["a,b>0", "a,b<0"], "other")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def branch_switch(norms: pd.DataFrame) -> tuple[float, float]:
    """Bracket ``(h_lo, h_hi)`` of the branch-switching rate h* from :func:`final_norms`' GD rows:
    ``h_hi`` is the smallest rate whose GD run ends off the start's branch ``a, b > 0`` and
    ``h_lo`` the largest rate below it (every run up to ``h_lo`` ends on ``a, b > 0``). Raises
    :class:`ConfigError` when every rate (or none) ends on ``a, b > 0``: no bracket."""
    gd = norms[norms["method"] == "GD"].sort_values("h")
    off = gd[gd["branch"] != "a,b>0"]
    if off.empty or len(off) == len(gd) or gd["branch"].iloc[0] != "a,b>0":
        raise ConfigError("the rates do not bracket a switch from the branch a, b > 0")
    h_hi = float(off["h"].iloc[0])
    return float(gd.loc[gd["h"] < h_hi, "h"].max()), h_hi


def egr(cfg: Config) -> pd.DataFrame:
    """Explicit gradient regularization on the model: GD at the small rate ``h' = cfg.egr_rate``
    on ``E + μ‖∇E‖²`` for each μ of ``cfg.mu_grid``, from ``cfg.start`` to ``cfg.norm_horizon``.

    To first order its modified loss is ``E + (μ + h'/4)‖∇E‖²``, the modified loss of plain GD at
    ``h_eff = h' + 4μ``; so each EGR run is paired with plain GD at ``h_eff`` and with the exact
    flow of that first-order modified loss. Columns ``method`` (``"EGR"``, ``"GD at h_eff"`` or
    ``"modified flow at h_eff"``), ``mu, h_eff, a, b, loss, norm``.
    """
    E = loss_fn(cfg.x, cfg.y)
    mus = np.asarray(cfg.mu_grid, dtype=np.float64)
    h_eff = cfg.egr_rate + 4 * mus
    with jax.enable_x64(True):
        theta0 = jnp.asarray(cfg.start, dtype=jnp.float64)
        n = _steps(cfg.norm_horizon, cfg.egr_rate)
        ns = jnp.asarray([_steps(cfg.norm_horizon, h) for h in h_eff])
        starts = jnp.broadcast_to(theta0, (mus.size, 2))
        ends = {
            "EGR": _egr_finals(E, theta0, cfg.egr_rate, jnp.asarray(mus), n),
            "GD at h_eff": bea.gd_finals(E, theta0, jnp.asarray(h_eff), ns),
            "modified flow at h_eff":
                bea.modified_flows(E, starts, h_eff, 1, cfg.norm_horizon)[:, -1],
        }
    return pd.concat([_points(theta, cfg, method=method, mu=mus, h_eff=h_eff)
                      for method, theta in ends.items()], ignore_index=True)


def conservation(cfg: Config) -> pd.DataFrame:
    """The law ``q = a² − b²`` along GD at ``h_S, h_M, h_L`` and along gradient flow from
    ``cfg.start`` to ``cfg.horizon``, every GD step kept.

    Columns ``path, h, t, q`` and, for GD rows, ``factor`` (measured ``q_{n+1}/q_n``) and
    ``predicted`` (``1 − h²x²r_n²``); NaN on the last step and on gradient-flow rows.
    """
    E = loss_fn(cfg.x, cfg.y)
    frames = []
    with jax.enable_x64(True):
        theta0 = jnp.asarray(cfg.start, dtype=jnp.float64)
        for name, h in cfg.rates.items():
            n = _steps(cfg.horizon, h)
            path = np.asarray(bea.gd_trajectory(E, theta0, h, n))
            q = path[:, 0] ** 2 - path[:, 1] ** 2
            factor = np.append(q[1:] / q[:-1], np.nan)
            predicted = np.append(np.asarray(step_factor(path[:-1], h, cfg.x, cfg.y)), np.nan)
            frames.append(pd.DataFrame({"path": f"GD {name}", "h": h, "t": np.arange(n + 1) * h,
                                        "q": q, "factor": factor, "predicted": predicted}))
        ts, flow = bea.modified_flow(E, theta0, 1.0, 0, cfg.horizon)
    frames.append(pd.DataFrame({"path": "gradient flow", "h": np.nan, "t": ts,
                                "q": flow[:, 0] ** 2 - flow[:, 1] ** 2}))
    return pd.concat(frames, ignore_index=True)


def error_study(cfg: Config) -> pd.DataFrame:
    """Local and global errors of GD against the flows of order 0, 1, 2 from ``cfg.start``
    (see :func:`igrlib.maths.bea.error_study`), at ``h = cfg.bea_horizon / n`` for ``n`` in
    ``cfg.bea_steps``."""
    with jax.enable_x64(True):
        theta0 = jnp.asarray(cfg.start, dtype=jnp.float64)
        return bea.error_study(loss_fn(cfg.x, cfg.y), theta0, cfg.bea_horizon,
                               np.asarray(cfg.bea_steps))


def breakdown(cfg: Config) -> pd.DataFrame:
    """One-step errors from ``cfg.breakdown_start`` (near a minimum) as ``h·λ_max → 2``
    (see :func:`igrlib.maths.bea.breakdown`)."""
    with jax.enable_x64(True):
        theta0 = jnp.asarray(cfg.breakdown_start, dtype=jnp.float64)
        return bea.breakdown(loss_fn(cfg.x, cfg.y), theta0, np.asarray(cfg.breakdown_z))


def _check_which(which: str) -> None:
    if which not in ("start", "far"):
        raise ConfigError(f"which must be 'start' or 'far', got {which!r}")
