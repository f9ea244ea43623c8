"""Where backward error analysis stops holding: gradient descent at the edge of stability.

Backward error analysis (BEA) is a series in ``h·λ_max``; Cohen et al. (2021) found that full-batch
GD on neural networks drives ``λ_max`` (the top Hessian eigenvalue of the training loss) up until
``h·λ_max ≈ 2`` and then hovers there, where GD oscillates along the top eigenvector and no flow
follows it. Four measurements, each a results-store experiment so a chapter re-reads them:

* :data:`SHARPENING` (runs of the training program): full-batch GD (method ``gd``) on a
  CIFAR-10 subset, an MLP, cross-entropy, several learning rates, ``λ_max(t)`` by Lanczos every few steps
  (the ``lambda_max`` probe on the whole training subset). Per run: the first probed step where
  ``h·λ_max ≥`` :data:`ENTRY` (entry into the edge of stability), the mean and spread of
  ``h·λ_max`` after it, and the program's throughput (GD steps per second summed over a group's runs) with the
  probes off.
* :data:`FLOAT64` (float64 studies on a network small enough for exact flows: a tanh MLP on a few
  hundred 7×7 average-pooled MNIST images, mean squared error ``E = (1/2N) Σ‖f(x) − onehot(y)‖²``,
  started after a short warm-up by GD at a small rate, see :func:`tiny_problem`):

  - ``flows``: GD at ``h = z/λ_max(θ_start)`` against gradient flow and the first/second-order
    modified flows (:func:`igrlib.measurement.flow_tracking.track`) and the two events of
    :func:`~igrlib.measurement.flow_tracking.crossings`;
  - ``rate``: the implicit coefficient measured along the same GD paths, on windows of
    :data:`WINDOW` steps (:func:`igrlib.maths.implicit_rate.fit_implicit_coefficient`, which fits
    ``c`` in ``E + c‖∇E‖²``: prediction ``c = h/4``, i.e. ``λ = hm/4`` in R_IG units) and the
    gradient-matching rate at each window start
    (:func:`igrlib.maths.implicit_rate.gradient_matching_rate`);
  - ``flatness``: flatness at matched training loss, per seed, of four arms from one start: GD at
    ``h``; gradient flow; the flow of the modified loss ``E + (h/4)‖∇E‖²`` (IGR without
    instability); and EGR (GD on ``E + (h/4)‖∇E‖²``) at the small rate ``h/`` :data:`EGR_DIVISOR`
    (IGR strength matched, far from the edge). Each arm is stopped where ``E`` first falls to the
    loss GD reaches after ``n`` steps, and ``λ_max`` of ``E`` is measured there.

Profiles (:data:`PROFILES`): ``smoke`` only checks that everything runs; ``cpu`` is sized for a
loaded 2-core machine; ``paper`` widens every grid (for a GPU). Units: ``h`` in parameter units per
loss-gradient unit; ``λ_max`` in loss units per parameter²; times ``t = step·h``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from igrlib.config import ConfigError, axis_values, check_choice, check_int, check_positive, resolve_profile
from igrlib.experiments import common
from igrlib.io import data as data_mod
from igrlib.maths import bea, implicit_rate, losses, models, stats
from igrlib.measurement import flow_tracking
from igrlib.measurement.measure import MeasureConfig
from igrlib.sweep import Outcome
from igrlib.training.config import TrainConfig
from igrlib.training.program import train_group

NAME = "edge_of_stability"

#: ``h·λ_max`` at which a run counts as having entered the edge of stability (5 % below 2: the
#: Lanczos estimate on a finite probe grid catches a hovering value from either side).
ENTRY = 1.9
#: GD steps per window of the implicit-coefficient fit.
WINDOW = 8
#: EGR's small rate is ``h/EGR_DIVISOR``.
EGR_DIVISOR = 4
#: Probes of h·λ_max along GD's path in the flatness study.
FLATNESS_PROBES = 20
#: The flows of the flatness study run for up to ``FLOW_HORIZON`` times GD's duration ``n·h``.
FLOW_HORIZON = 3

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        sharpening=dict(width=(16,), learning_rate=(0.05, 0.2), seed=(0,),
                        base=dict(n_train=128, n_test=128, epochs=20, eval_every=10,
                                  probe_lanczos_iters=4), timing_steps=0),
        tiny=dict(n_train=32, width=4, pool=7, warm_h=0.05, warm_steps=10),
        flows=dict(z=(1.9,), n=12, every=4),
        rate=dict(z=(1.0,), n=8, every=8),
        flatness=dict(z=1.9, n=8, seed=(0,)),
    ),
    "cpu": dict(
        sharpening=dict(width=(100,), learning_rate=(0.025, 0.05, 0.1), seed=(0,),
                        base=dict(n_train=1000, n_test=1000, epochs=1000, eval_every=20,
                                  probe_lanczos_iters=12), timing_steps=100),
        tiny=dict(n_train=200, width=8, pool=4, warm_h=0.05, warm_steps=200),
        flows=dict(z=(1.0, 1.6, 1.9), n=400, every=10),
        rate=dict(z=(0.5, 1.0, 1.9), n=400, every=100),
        flatness=dict(z=1.9, n=400, seed=(0, 1, 2, 3, 4)),
    ),
    "paper": dict(
        sharpening=dict(width=(100, 200), learning_rate=(0.01, 0.02, 0.025, 0.05, 0.1),
                        seed=(0, 1, 2),
                        base=dict(n_train=5000, n_test=10_000, epochs=10_000, eval_every=50,
                                  probe_lanczos_iters=20), timing_steps=1000),
        tiny=dict(n_train=500, width=16, pool=4, warm_h=0.05, warm_steps=500),
        flows=dict(z=(0.5, 1.0, 1.6, 1.9), n=2000, every=20),
        rate=dict(z=(0.25, 0.5, 1.0, 1.6, 1.9), n=2000, every=100),
        flatness=dict(z=1.9, n=2000, seed=tuple(range(10))),
    ),
}
#: The sharpening runs: full-batch GD on a CIFAR-10 subset (Cohen et al.'s data set; on MNIST
#: subsets λ_max only fell in our design trials), a tanh MLP with two hidden layers, λ_max probed
#: on the whole training subset at every evaluation, no validation split (nothing is selected: the
#: runs are read along their whole trajectory).
SHARPENING_BASE = dict(dataset="cifar10", model="mlp", depth=2, activation="tanh", method="gd",
                       batch_size=None, thresholds=(1.0,), selection="test", probe_every=1,
                       probes=("lambda_max",))
TINY_KEYS = ("n_train", "width", "pool", "warm_h", "warm_steps")


def _spec(profile: str | None) -> dict[str, Any]:
    return PROFILES[resolve_profile(profile)]


# ---------------------------------------------------------------------------------------------
# Sharpening along training: runs of the training program


def sharpening_grid(profile: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The sharpening runs of ``profile``: every width × learning rate × seed. ``overrides``
    replace the axes (``width``, ``learning_rate``, ``seed``) or training fields. Validated now."""
    spec = _spec(profile)["sharpening"]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    axes = {k: axis_values(k, overrides.pop(k, spec[k])) for k in ("width", "learning_rate", "seed")}
    base = {**SHARPENING_BASE, **spec["base"], **overrides}
    base["probe_examples"] = base["n_train"]
    grid = common.make_grid(base, axes, MeasureConfig())
    for config in grid:
        config["timing_steps"] = spec["timing_steps"]
    return grid


def entry_summary(steps: Sequence[int], h_lambda: Sequence[float], threshold: float = ENTRY) -> dict[str, float]:
    """From a probe trajectory of ``h·λ_max``: ``entry_step`` (the first probed step with
    ``h·λ_max ≥ threshold``, NaN if none), ``h_lambda_after`` and ``h_lambda_sd`` (mean and standard
    deviation of ``h·λ_max`` from entry on), ``frac_above_2`` (share of those probes above 2),
    ``h_lambda_start`` and ``h_lambda_peak``."""
    steps, z = np.asarray(steps, float), np.asarray(h_lambda, float)
    if steps.shape != z.shape or steps.size == 0:
        raise ConfigError("steps and h·λ_max must be non-empty and of equal length")
    hit = np.flatnonzero(z >= threshold)
    out = dict(h_lambda_start=float(z[0]), h_lambda_peak=float(np.nanmax(z)), entry_step=np.nan,
               h_lambda_after=np.nan, h_lambda_sd=np.nan, frac_above_2=np.nan)
    if hit.size:
        after = z[hit[0]:]
        out.update(entry_step=float(steps[hit[0]]), h_lambda_after=float(after.mean()),
                   h_lambda_sd=float(after.std(ddof=1)) if after.size > 1 else np.nan,
                   frac_above_2=float(np.mean(after > 2)))
    return out


def edge_window(steps: Sequence[int], h_lambda: Sequence[float], threshold: float = ENTRY) -> dict[str, float]:
    """The stretch at the edge of a probe trajectory: from the first to the last probe with
    ``h·λ_max ≥ threshold`` (``edge_entry``, ``edge_exit``; NaN if none), and over it the mean,
    standard deviation and maximum of ``h·λ_max`` and the share of probes above 2. Unlike
    :func:`entry_summary` it leaves out the late phase of cross-entropy training, where ``λ_max``
    falls as the loss goes to 0 (which Cohen et al. 2021 also report for cross-entropy)."""
    steps, z = np.asarray(steps, float), np.asarray(h_lambda, float)
    if steps.shape != z.shape or steps.size == 0:
        raise ConfigError("steps and h·λ_max must be non-empty and of equal length")
    hit = np.flatnonzero(z >= threshold)
    if not hit.size:
        return dict(edge_entry=np.nan, edge_exit=np.nan, edge_mean=np.nan, edge_sd=np.nan,
                    edge_max=np.nan, edge_frac_above_2=np.nan)
    window = z[hit[0]:hit[-1] + 1]
    return dict(edge_entry=float(steps[hit[0]]), edge_exit=float(steps[hit[-1]]), edge_mean=float(window.mean()),
                edge_sd=float(window.std(ddof=1)) if window.size > 1 else np.nan, edge_max=float(window.max()),
                edge_frac_above_2=float(np.mean(window > 2)))


def _steps_per_second(configs: Sequence[TrainConfig], data: data_mod.Dataset, steps: int) -> float:
    """Throughput of the training program on this group: GD steps summed over its runs per second
    of wall time (each run does this divided by the group's size), full batch, probes off, one
    evaluation at the end, ``steps`` steps; the second of two identical calls, so compilation is
    excluded. (``timing_steps`` of a config; 0: not timed, NaN.)"""
    timed = [dataclasses.replace(c, epochs=steps, eval_every=steps, probe_every=0) for c in configs]
    train_group(timed, data, progress=False)
    start = time.perf_counter()
    train_group(timed, data, progress=False)
    return steps * len(configs) / (time.perf_counter() - start)


def _run_sharpening(configs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    train_cfgs = [common.train_config(c) for c in configs]
    data = common.load_data(train_cfgs[0])
    steps = configs[0]["timing_steps"]
    rate = _steps_per_second(train_cfgs, data, steps) if steps else np.nan
    outcomes = []
    for result in train_group(train_cfgs, data, progress=False):
        h = result.history
        metrics = dict(num_params=result.num_params, steps_per_s=rate, group_runs=len(configs),
                       final_train_loss=h["train_loss"][-1], final_train_acc=h["train_acc"][-1],
                       final_test_acc=h["test_acc"][-1], min_train_loss=float(np.min(h["train_loss"])),
                       dataset_label=data.label)
        if h.get("probe_h_lambda_max"):
            metrics.update(entry_summary(h["probe_step"], h["probe_h_lambda_max"]))
        outcomes.append(Outcome(result.status, metrics=metrics, history=h, status_step=result.status_step,
                                extra={"status_reason": result.status_reason}, wall_time_s=result.wall_time_s))
    return outcomes


@dataclass(frozen=True)
class _Sharpening:
    """The sharpening runs as a results-store experiment (one program per width)."""

    NAME: str = NAME

    def group_key(self, config: Mapping[str, Any]) -> Any:
        return common.group_key(config)

    def group_size(self, config: Mapping[str, Any]) -> int:
        return common.group_size(config)

    def run_group(self, configs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        return _run_sharpening(configs)


SHARPENING = _Sharpening()


def grid(profile: str | None = None, seed: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The chapter's runs of the training program, i.e. :func:`sharpening_grid` (the float64
    studies are small CPU computations): what a GPU runs at ``paper`` and what the book's cost
    table counts. Run them alone with
    ``.venv/bin/python -m igrlib.sweep igrlib.experiments.edge_of_stability:SHARPENING``."""
    return sharpening_grid(profile, seed=seed)


def sharpening_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: width, h, ``2/h``, ``h·λ_max`` at the start and its peak, the stretch at
    the edge (:func:`edge_window`), final training loss and accuracy, steps per second."""
    rows = []
    for _, run in runs.iterrows():
        h = run["history"]
        z = h.get("probe_h_lambda_max") or [np.nan]
        rows.append(dict(width=run["width"], learning_rate=run["learning_rate"], two_over_h=2 / run["learning_rate"],
                         seed=run["seed"], status=run["status"], h_lambda_start=z[0], h_lambda_peak=np.nanmax(z),
                         **edge_window(h.get("probe_step") or [0], z),
                         final_train_loss=run["final_train_loss"], final_train_acc=run["final_train_acc"],
                         steps_per_s=pd.to_numeric(run["steps_per_s"])))
    return pd.DataFrame(rows).sort_values(["width", "learning_rate", "seed"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# The float64 studies


def tiny_problem(n_train: int, width: int, pool: int, seed: int = 0) -> tuple[bea.Loss, jax.Array]:
    """``(E, θ0)`` in float64 (call under ``jax.enable_x64``): a one-hidden-layer tanh MLP of
    ``width`` units (:func:`igrlib.maths.models.mlp`) on the first ``n_train`` MNIST training
    images average-pooled by ``pool``×``pool`` (28/pool squared inputs), mean squared error
    ``E = (1/2N) Σ_n ‖f(x_n) − onehot(y_n)‖²`` (the loss of Cohen et al.'s MSE experiments);
    ``seed`` draws the initialisation. ``E`` is one object per (n_train, width, pool), so every
    seed and rate shares its compiled flows, GD loops and Lanczos."""
    check_int(n_train, "n_train")
    check_int(width, "width")
    check_int(seed, "seed", 0)
    if pool not in (1, 2, 4, 7, 14, 28):
        raise ConfigError(f"pool must divide 28, got {pool!r}")
    if not jax.config.jax_enable_x64:
        raise ConfigError("tiny_problem is float64: call it under jax.enable_x64(True)")
    E, init = _tiny_loss(n_train, width, pool)
    return E, init(seed)


@functools.lru_cache(maxsize=8)
def _tiny_loss(n_train: int, width: int, pool: int) -> tuple[bea.Loss, Callable[[int], jax.Array]]:
    mnist = data_mod.load("mnist", n_train=n_train, n_test=10)
    k = 28 // pool
    x = jnp.asarray(mnist.x_train, jnp.float64).reshape(n_train, k, pool, k, pool).mean((2, 4))
    x = x.reshape(n_train, k * k)
    y = jax.nn.one_hot(jnp.asarray(mnist.y_train), 10, dtype=jnp.float64)
    net = models.mlp(width, depth=1, num_classes=10, activation="tanh")

    def params(seed):
        return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), net.init(jax.random.key(seed), x)[0])

    def mse(p):
        return 0.5 * jnp.mean(jnp.sum((net.apply(p, {}, x, False)[0] - y) ** 2, axis=-1))

    E, _, _ = bea.flat_loss(mse, params(0))
    return E, lambda seed: ravel_pytree(params(seed))[0]


def start(E: bea.Loss, theta0: jax.Array, warm_h: float, warm_steps: int) -> jax.Array:
    """The studies' start: ``warm_steps`` GD steps at the small rate ``warm_h`` from θ0, past the
    initial transient where ``λ_max`` falls fast (the untrained read-out)."""
    check_positive(warm_h, "warm_h")
    check_int(warm_steps, "warm_steps", 0)
    return bea.gd_final(E, theta0, warm_h, warm_steps) if warm_steps else theta0


def _problem(config: Mapping[str, Any], seed: int = 0) -> tuple[bea.Loss, jax.Array, float]:
    """``(E, θ_start, λ_max(θ_start))`` of a study config."""
    tiny = config["tiny"]
    E, theta0 = tiny_problem(tiny["n_train"], tiny["width"], tiny["pool"], seed)
    theta = start(E, theta0, tiny["warm_h"], tiny["warm_steps"])
    return E, theta, bea.sharpness(E, theta)


def _table_record(table: pd.DataFrame) -> dict[str, list]:
    return {c: table[c].tolist() for c in table.columns}


def flows_study(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    """GD at ``h = z/λ_max(θ_start)`` against the flows of orders 0, 1, 2 (the tracking table,
    :func:`igrlib.measurement.flow_tracking.track`) and its events: the first EoS entry
    (``h·λ_max > 2``, and ``≥`` :data:`ENTRY`) and the first checkpoint where the order-1 and
    order-2 flows stop beating gradient flow outright (margin 0) and by 10 %."""
    E, theta, lam = _problem(config)
    h = config["z"] / lam
    table = flow_tracking.track(E, theta, h, config["n"], config["every"])
    metrics: dict[str, Any] = dict(h=h, lambda_start=lam, num_params=int(theta.size),
                                   eos_entry=flow_tracking.crossings(table).eos_entry)
    for order in (1, 2):
        for margin in (0.0, 0.1):
            ev = flow_tracking.crossings(table, order=order, margin=margin)
            metrics[f"loses_o{order}_m{int(100 * margin)}"] = ev.modified_loses
    metrics["entry_1p9"] = flow_tracking.crossings(table, threshold=ENTRY).eos_entry
    return metrics, _table_record(table)


def rate_study(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    """The implicit coefficient along GD at ``h = z/λ_max(θ_start)``: at each window start ``s``
    (every ``every`` steps up to ``n − WINDOW``), the flow fit on steps ``s … s + WINDOW``
    (``ratio = ĉ/(h/4)``, ``explained``, ``condition``) and the gradient-matching rate at ``θ_s``
    (``gm_ratio = ĉ_gm/(h/4)``, its ``gm_cosine``), with ``h·λ_max(θ_s)`` and ``E(θ_s)``."""
    E, theta, lam = _problem(config)
    h = config["z"] / lam
    path = np.asarray(bea.gd_trajectory(E, theta, h, config["n"]))
    rows = []
    for s in range(0, config["n"] - WINDOW + 1, config["every"]):
        fit = implicit_rate.fit_implicit_coefficient(E, path[s:s + WINDOW + 1], h)
        match = implicit_rate.gradient_matching_rate(E, path[s])
        rows.append(dict(step=s, h_lambda_max=h * bea.sharpness(E, jnp.asarray(path[s])),
                         loss=float(E(jnp.asarray(path[s]))), ratio=fit.ratio, explained=fit.explained,
                         condition=fit.condition, converged=fit.converged, gm_ratio=match.c / (h / 4),
                         gm_cosine=match.cosine))
    return dict(h=h, lambda_start=lam, num_params=int(theta.size)), _table_record(pd.DataFrame(rows))


@functools.partial(jax.jit, static_argnames=("E",))
def _low_order_flows(E: bea.Loss, theta0: jax.Array, h: jax.Array, ts: jax.Array) -> jax.Array:
    """Gradient flow and the first-order modified flow (the flow of ``E + (h/4)‖∇E‖²``) at the
    times ``ts``, shape ``(2, len(ts), m)`` (one compile per ``E``; ``h`` traced)."""
    return jnp.stack([bea.flow(bea.modified_field(E, h, order), theta0, ts[-1], ts=ts) for order in (0, 1)])


@functools.partial(jax.jit, static_argnames=("E", "n"))
def _egr_path(E: bea.Loss, theta0: jax.Array, h: jax.Array, mu: jax.Array, n: int) -> jax.Array:
    """The iterates of GD at rate ``h`` on ``E + μ‖∇E‖²`` (EGR, :func:`igrlib.maths.losses.egr_loss`),
    shape ``(n + 1, m)``; ``h`` and ``μ`` traced, so one compile per ``E`` and ``n``."""
    grad = jax.grad(lambda theta, mu: losses.gradient_penalty_loss(E, mu)(theta))

    def step(theta, _):
        nxt = theta - h * grad(theta, mu)
        return nxt, nxt

    return jnp.concatenate([theta0[None], jax.lax.scan(step, theta0, None, length=n)[1]])


def flatness_study(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    """One seed of the flatness comparison (module docstring): GD at ``h = z/λ_max(θ_start)`` for
    ``n`` steps sets the target loss ``E(θ_n)``; each arm is stopped at the first of its points
    (steps for GD and EGR, times ``step·h`` for the flows, up to :data:`FLOW_HORIZON`·n·h) with
    ``E ≤`` the target, and ``λ_max(E)`` is measured there (NaN if an arm never gets there).
    Metrics ``lambda_<arm>``, ``time_<arm>`` (time ``t`` of the stop), ``target_loss``, ``h``, and
    GD's own edge: ``gd_h_lambda_peak`` and ``gd_edge_step`` (first step with ``h·λ_max > 2``,
    None if none; GD starts at ``z`` < 2), from :data:`FLATNESS_PROBES` + 1 equally spaced probes."""
    E, theta, lam = _problem(config, config["seed"])
    h, n = config["z"] / lam, config["n"]
    losses_of = jax.jit(jax.vmap(E))
    gd = np.asarray(bea.gd_trajectory(E, theta, h, n))
    gd_loss = np.asarray(losses_of(jnp.asarray(gd)))
    target = float(gd_loss[-1])
    probed = np.arange(0, n + 1, max(1, n // FLATNESS_PROBES))
    gd_sharp = np.array([h * bea.sharpness(E, jnp.asarray(gd[s])) for s in probed])
    beyond = np.flatnonzero(gd_sharp > 2)
    horizon = FLOW_HORIZON * n
    ts = jnp.arange(horizon + 1) * h
    flows = np.asarray(_low_order_flows(E, theta, jnp.asarray(h), ts))
    arms = {"gd": (gd, 1.0), "gradient_flow": (flows[0], 1.0), "modified_flow": (flows[1], 1.0),
            "egr": (np.asarray(_egr_path(E, theta, jnp.asarray(h / EGR_DIVISOR), jnp.asarray(h / 4),
                                         EGR_DIVISOR * horizon)), 1 / EGR_DIVISOR)}
    metrics: dict[str, Any] = dict(h=h, lambda_start=lam, target_loss=target, seed=config["seed"],
                                   num_params=int(theta.size), gd_h_lambda_peak=float(gd_sharp.max()),
                                   gd_edge_step=int(probed[beyond[0]]) if beyond.size else None)
    history: dict[str, list] = {}
    for name, (path, dt) in arms.items():
        loss = np.asarray(losses_of(jnp.asarray(path)))
        crossing = common.loss_crossing(loss, target)  # each arm read at its first point at or below E*
        k = crossing[0] if crossing is not None else None
        metrics[f"time_{name}"] = k * dt * h if k is not None else np.nan
        metrics[f"lambda_{name}"] = bea.sharpness(E, jnp.asarray(path[k])) if k is not None else np.nan
        history[f"loss_{name}"] = loss[:: max(1, int(round(1 / dt)))].tolist()
    return metrics, history


STUDIES: dict[str, Callable[[Mapping[str, Any]], tuple[dict[str, Any], dict[str, list]]]] = {
    "flows": flows_study, "rate": rate_study, "flatness": flatness_study}


def float64_grid(profile: str | None = None) -> list[dict[str, Any]]:
    """The float64 study configs of ``profile``: one per (study, z) for ``flows`` and ``rate``,
    one per seed for ``flatness``; each carries the tiny problem's settings. Validated now."""
    spec = _spec(profile)
    tiny = spec["tiny"]
    if set(tiny) != set(TINY_KEYS):
        raise ConfigError(f"tiny problem settings must be {TINY_KEYS}, got {sorted(tiny)}")
    configs = []
    for study in ("flows", "rate"):
        s = spec[study]
        for z in s["z"]:
            configs.append(dict(study=study, tiny=dict(tiny), z=float(z), n=s["n"], every=s["every"]))
    f = spec["flatness"]
    configs += [dict(study="flatness", tiny=dict(tiny), z=float(f["z"]), n=f["n"], seed=int(seed))
                for seed in f["seed"]]
    for c in configs:
        check_choice(c["study"], STUDIES, "study")
        if not 0 < c["z"] < 2:
            raise ConfigError(f"z = h·λ_max(θ_start) must be in (0, 2), got {c['z']!r}")
        check_int(c["n"], "n")
        if "every" in c and c["n"] % c["every"]:
            raise ConfigError(f"n = {c['n']} must be a multiple of every = {c['every']}")
    return configs


def _float64_study(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    with jax.enable_x64(True):
        return STUDIES[config["study"]](config)


#: The float64 studies as a results-store experiment: one record per config, computed under
#: ``jax.enable_x64`` (metrics; the study's table in the record's history).
FLOAT64 = common.Computations(NAME + "_float64", _float64_study)


def study_table(runs: pd.DataFrame, study: str) -> pd.DataFrame:
    """The tables of one study's records stacked, with the record's ``z`` (and ``h``)."""
    frames = []
    for _, run in runs[runs["study"] == study].iterrows():
        table = pd.DataFrame(run["history"])
        table.insert(0, "z", run["z"])
        table.insert(1, "h", run["h"])
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def events_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per flows record: h·λ_max at the start (z), the EoS entries, and the checkpoints where the
    first/second-order flows stop beating gradient flow (margin 0 and 10 %)."""
    cols = ["z", "h", "n", "entry_1p9", "eos_entry", "loses_o1_m10", "loses_o1_m0", "loses_o2_m10", "loses_o2_m0"]
    df = runs[runs["study"] == "flows"]
    return df[[c for c in cols if c in df]].sort_values("z").reset_index(drop=True)


#: The flatness arms, in the order of the figure and table.
ARMS = {"gd": "GD at h", "modified_flow": "flow of E + (h/4)‖∇E‖²",
        "egr": f"EGR at h/{EGR_DIVISOR}, μ = h/4", "gradient_flow": "gradient flow"}


def flatness_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per seed of the flatness study: the target loss and λ_max of each arm there."""
    df = runs[runs["study"] == "flatness"]
    cols = (["seed", "h", "target_loss", "gd_h_lambda_peak", "gd_edge_step"] + [f"lambda_{a}" for a in ARMS]
            + [f"time_{a}" for a in ARMS])
    return df[cols].sort_values("seed").reset_index(drop=True)


#: The paired flatness claims: (arm, reference, claim), each predicting λ_max(arm) < λ_max(reference)
#: at matched training loss in a seed.
FLATNESS_CLAIMS = (
    ("gd", "gradient_flow", "GD at h ends flatter than gradient flow"),
    ("modified_flow", "gradient_flow", "the modified-loss flow (IGR, no instability) ends flatter than gradient flow"),
    ("egr", "gradient_flow", "EGR at a small rate ends flatter than gradient flow"),
    ("gd", "modified_flow", "GD at h ends flatter than the modified-loss flow (stability adds to IGR)"),
)


def arm_pair(table: pd.DataFrame, arm: str, reference: str) -> pd.DataFrame:
    """Two rows per seed of :func:`flatness_table`'s ``table``: ``x`` = 1 for ``arm``, 0 for
    ``reference``, ``lambda_max`` its λ_max at matched loss (loss units per parameter²), so a
    within-seed trend of λ_max with x is the sign of the paired difference arm − reference."""
    for name in (arm, reference):
        check_choice(name, ARMS, "arm")
    return pd.concat([pd.DataFrame({"seed": table["seed"], "x": float(x), "lambda_max": table[f"lambda_{name}"]})
                      for x, name in ((0, reference), (1, arm))], ignore_index=True)


def flatness_findings(runs: pd.DataFrame) -> pd.DataFrame:
    """Which arm ends flatter at matched loss, by the book's rule (:func:`igrlib.maths.stats.finding`
    on each :data:`FLATNESS_CLAIMS` pair, :func:`arm_pair`): predicted sign of the paired λ_max
    difference in k of n seeds, the exact within-seed permutation p (with two arms a seed's ρ is
    ±1, so p is a sign test: 1/32 at best with 5 seeds), Holm over the rows, and the mean paired
    difference in λ_max with its 95 % t-interval as ``effect``."""
    t = flatness_table(runs)
    rows = [stats.finding(claim, arm_pair(t, arm, reference), "x", "lambda_max", -1,
                          f"ρ(arm, λ_max at E*): {ARMS[arm]} (x = 1) vs {ARMS[reference]} (x = 0)",
                          effect=(1.0, "λ_max"))
            for arm, reference, claim in FLATNESS_CLAIMS]
    return stats.finish(rows, "matched loss")
