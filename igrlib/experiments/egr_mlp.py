"""Explicit gradient regularization on MNIST MLPs (Barrett & Dherin 2021, Section 5).

Two arms on one data protocol (that of :mod:`igrlib.experiments.mnist_mlp`: ReLU MLPs with
``depth`` hidden layers, cross-entropy, mini-batch SGD with batch 512, the training-accuracy
threshold and the checkpoint of maximal test accuracy):

* **EGR**: a small learning rate ``h`` and the penalised loss ``E + μ‖∇E‖²`` over a μ grid that
  includes μ = 0 (a plain SGD run);
* **plain**: larger learning rates and no penalty, so EGR runs and plain runs can share one λ
  axis: step-h SGD on ``E + μ‖∇E‖²`` implicitly regularizes with ``λ_equiv = (h + 4μ)·m/4``
  (:func:`igrlib.training.egr.lambda_equiv`), plain runs with ``λ = h·m/4``.

The penalty is written ``μ‖∇E‖²`` (the book's form); in R_IG units it is ``μ'·R_IG`` with
``μ' = μ·m``. Measurements (R_IG, slope, top eigenvalue, ...) are of the unpenalised loss E.

Profiles (:data:`PROFILES`): ``paper`` two widths on the full data with the paper's learning
rates for the plain arm; ``cpu`` one width on a 10k-example subset with an epoch budget that a
loaded 2-core machine runs in minutes; ``smoke`` only checks that everything runs. ``seeds_b``:
a second, disjoint seed set for the stability of the verdicts (see :func:`seed_set_b`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from igrlib.io import data
from igrlib.training import egr
from igrlib.maths import losses, models, stats
from igrlib.config import ConfigError, axis_values, check_choice, check_keys, resolve_profile
from igrlib.experiments import common, mnist_mlp
from igrlib.measurement.measure import MeasureConfig
from igrlib.io.results import run_id
from igrlib.maths.objectives import loss_fn
from igrlib.training.config import TrainConfig

NAME = "egr_mlp"

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        width=(16,), small_lr=(0.05,), mu=(0.0, 0.01, 0.1), plain_lr=(0.5,), seed=(0, 1),
        base=dict(epochs=3, batch_size=256, n_train=1024, n_val=512, n_test=512, eval_every=1,
                  thresholds=(0.1,), probe_every=2, probe_examples=128, probe_lanczos_iters=4,
                  probe_trace_samples=2),
        measure=dict(curvature_examples=256, curvature_batch=128, lanczos_iters=6, trace_samples=4,
                     slope_directions=3, noise_draws=2, sigmas=(0.0, 0.1), slices=False),
        cost_widths=(16,), cost_batch=512, seeds_b=(),
    ),
    "cpu": dict(
        width=(50,), small_lr=(0.02,), mu=(0.0, 0.0075, 0.02, 0.12, 0.25, 0.5),
        plain_lr=(0.05, 0.1, 0.5), seed=(0, 1, 2, 3, 4),
        base=dict(epochs=60, n_train=10_000, n_val=5_000, n_test=10_000, eval_every=2, patience=5,
                  thresholds=(0.95, 0.97), probe_every=6, probe_examples=512,
                  probe_lanczos_iters=8, probe_trace_samples=4),
        measure=dict(curvature_examples=1024, lanczos_iters=12, trace_samples=10,
                     slope_directions=5, noise_draws=3, slices=False),
        cost_widths=(200, 800), cost_batch=512, seeds_b=(5, 6, 7, 8, 9),
    ),
    "paper": dict(
        width=(200, 800), small_lr=(0.005,),
        mu=(0.0, 0.00125, 0.0025, 0.00625, 0.0125, 0.025, 0.125, 0.25, 1.0),
        plain_lr=mnist_mlp.PAPER_LEARNING_RATES, seed=(0, 1, 2),
        base=dict(epochs=2000, eval_every=1, patience=20, n_val=5_000, probe_every=10,
                  probe_examples=2048),
        measure=dict(curvature_examples=10_240, trace_samples=50, noise_draws=10, slices=False),
        cost_widths=(200, 800), cost_batch=512, seeds_b=(),
    ),
}
BASE = mnist_mlp.BASE
AXES = ("width", "small_lr", "mu", "plain_lr", "seed")


def grid(profile: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The run configs of ``profile``: for every width and seed, the EGR arm (each ``small_lr``
    × each ``mu``; μ = 0 is a plain run) and the plain arm (each ``plain_lr``), duplicates
    dropped. ``overrides`` replace axes (:data:`AXES`, sequences) or training fields (``epochs``,
    ``n_train``, ``penalty_method``, ...). Every value is validated here, before any compute."""
    spec = PROFILES[resolve_profile(profile)]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    axes = {k: axis_values(k, overrides.pop(k, spec[k])) for k in AXES}
    check_keys(overrides, [f.name for f in dataclasses.fields(TrainConfig)] + ["penalty_method", "fd_radius"],
               "egr_mlp override")
    if any(not isinstance(mu, (int, float)) or mu < 0 for mu in axes["mu"]):
        raise ConfigError(f"mu values must be numbers >= 0, got {axes['mu']!r}")
    base = {**BASE, **spec["base"], **overrides}
    measure = MeasureConfig(**spec["measure"])
    configs = []
    penalty = {k: base.pop(k) for k in ("penalty_method", "fd_radius") if k in base}
    for mu in axes["mu"]:
        arm = dict(method="egr", mu=float(mu), **penalty) if mu > 0 else dict(method="sgd")
        configs += common.make_grid({**base, **arm}, dict(width=axes["width"], learning_rate=axes["small_lr"],
                                                          seed=axes["seed"]), measure)
    configs += common.make_grid({**base, "method": "sgd"},
                                dict(width=axes["width"], learning_rate=axes["plain_lr"],
                                     seed=axes["seed"]), measure)
    unique = {run_id(c): c for c in configs}
    return list(unique.values())


group_key = common.group_key
group_size = common.group_size
run_group = common.run_group


# ---------------------------------------------------------------------------------------------
# Analysis


def tidy(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """:func:`mnist_mlp.tidy` plus the EGR columns: ``arm`` ("EGR" for the runs at the learning
    rates of the EGR runs, μ = 0 included; "plain" for the others), ``h_equiv = h + 4μ``,
    ``lambda_equiv = (h + 4μ)·m/4``, ``mu_prime = μ·m`` (the penalty in R_IG units)."""
    df = mnist_mlp.tidy(runs, threshold)
    if df.empty:
        return df
    egr_rates = df.loc[df["method"] == "egr", "learning_rate"].unique()
    df["arm"] = np.where(df["learning_rate"].isin(egr_rates), "EGR", "plain")
    df["h_equiv"] = df["learning_rate"] + 4 * df["mu"]
    df["lambda_equiv"] = [egr.lambda_equiv(h, mu, m) for h, mu, m
                          in zip(df["learning_rate"], df["mu"], df["num_params"])]
    df["mu_prime"] = df["mu"] * df["num_params"]
    return df


def matched_mu_limit(runs: pd.DataFrame) -> float:
    """The largest μ whose equivalent rate ``h + 4μ`` stays within the plain arm's largest rate:
    the range where EGR is expected to act as a larger learning rate. Beyond it, "too large"."""
    df = runs if "h_equiv" in runs else tidy(runs)
    egr_mus = df.loc[df["arm"] == "EGR", ["mu", "h_equiv"]].drop_duplicates()
    ok = egr_mus[egr_mus["h_equiv"] <= df["learning_rate"].max() * (1 + 1e-9)]
    return float(ok["mu"].max())


#: Equivalence margins for "EGR at (h, μ) does what plain SGD at h + 4μ does" (our choice):
#: test accuracy within 0.5 % of the test set, R_IG within a factor 2 (0.3 decades).
ACC_MARGIN, R_IG_MARGIN = 0.005, 0.3


def findings(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """The "What we found" table (see :func:`igrlib.maths.stats.finding` for the columns).

    Trends with μ are within-seed rank trends at the small learning rate, μ = 0 included.
    "Moderate" μ are those up to :func:`matched_mu_limit`; "large" μ those from that limit up
    (the limit included, so the comparison starts from the best-matched EGR run). "EGR ≈ larger
    h" is tested per matched setting as an *arm effect*: the paired (same-seed) difference
    between EGR at (h, μ) and plain SGD at h + 4μ, with an equivalence margin
    (:data:`ACC_MARGIN`, :data:`R_IG_MARGIN`); a shared trend on the λ axis would pass whenever
    each arm trends on its own.
    """
    return findings_of(tidy(runs, threshold), threshold)


def equivalence_rows(effects: pd.DataFrame, untestable: str | None = None) -> list[dict]:
    """The two "EGR ≈ larger h" rows (test accuracy, R_IG) of each matched setting of
    :func:`arm_effects_of`."""
    rows = []
    for _, pair in effects.iterrows():
        where = f"(h={pair['h']:g}, μ={pair['mu']:g}) vs plain h={pair['h_equiv']:g}"
        rows.append(stats.equivalence_finding(
            f"EGR ≈ larger h: same test accuracy, {where}", pair["d_test_images"],
            ACC_MARGIN * pair["n_test_images"], "test images", "paired Δ test images (EGR − plain)",
            untestable=untestable))
        rows.append(stats.equivalence_finding(
            f"EGR ≈ larger h: same R_IG, {where}", pair["d_log10_r_ig"], R_IG_MARGIN,
            "decades", "paired Δ log10 R_IG (EGR − plain)", untestable=untestable))
    return rows


def findings_of(df: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """:func:`findings` of an already tidied frame."""
    kept = df[df["category"] == "kept"]
    egr_runs = kept[kept["arm"] == "EGR"]
    limit = matched_mu_limit(df)
    moderate = egr_runs[egr_runs["mu"] <= limit]
    large = df[(df["arm"] == "EGR") & (df["mu"] >= limit)]
    images = mnist_mlp.test_images_scale(kept) if len(kept) else (1.0, "accuracy")
    rows = []

    def add(claim, frame, x, y, sign, what, effect=None, minima=True):
        rows.append(stats.finding(claim, frame, x, y, sign, what, effect=effect, about_minima=minima))

    add("EGR lowers R_IG", egr_runs, "mu", "log10_r_ig", -1, "ρ(μ, R_IG), all μ", (1.0, "decades of R_IG"))
    add("EGR raises test accuracy (moderate μ)", moderate, "mu", "test_acc", +1,
        f"ρ(μ, test acc), μ ≤ {limit:g}", images)
    add("EGR flattens: slope falls", egr_runs, "mu", "mean_abs_slope", -1, "ρ(μ, mean |slope|), all μ")
    add("EGR flattens: λ_max falls", egr_runs, "mu", "lambda_max", -1, "ρ(μ, λ_max), all μ", (1.0, "λ_max"))
    rows += equivalence_rows(arm_effects_of(df))
    add("too large μ hurts", large, "mu", "test_acc", -1, f"ρ(μ, test acc), μ ≥ {limit:g}, every run",
        images, minima=False)
    return stats.finish(rows, threshold)


def seed_set_b(profile: str | None, seeds_b: Sequence[int] | None, seeds_a: Sequence[int]) -> tuple[int, ...]:
    """:func:`mnist_mlp.seed_set_b` for this experiment's :data:`PROFILES`."""
    return mnist_mlp.seed_set_b(profile, seeds_b, seeds_a, PROFILES)


def arm_effects(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """One row per EGR setting (width, h, μ > 0) whose h_equiv = h + 4μ is a plain arm's rate:
    the per-seed paired differences EGR − plain (same seed: same initialisation and data order)
    of test accuracy in test images (``d_test_images``) and of log10 R_IG (``d_log10_r_ig``),
    kept runs only, with their means and 95 % t-intervals. μ' = μm is the penalty in R_IG units."""
    return arm_effects_of(tidy(runs, threshold))


def arm_effects_of(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`arm_effects` of an already tidied frame (with ``arm``, ``mu``, ``log10_r_ig``)."""
    kept = df[df["category"] == "kept"]
    plain = kept[kept["arm"] == "plain"]
    rows = []
    for (width, h, mu), group in kept[(kept["arm"] == "EGR") & (kept["mu"] > 0)].groupby(
            ["width", "learning_rate", "mu"]):
        match = plain[(plain["width"] == width) & np.isclose(plain["learning_rate"], h + 4 * mu)]
        if match.empty:
            continue
        both = group.set_index("seed").join(match.set_index("seed"), how="inner", lsuffix="_egr", rsuffix="_plain")
        n_test = float(both["n_test_images_egr"].iloc[0]) if len(both) else mnist_mlp.FULL_TEST
        d_acc = (n_test * (both["test_acc_egr"] - both["test_acc_plain"])).tolist()
        d_rig = (both["log10_r_ig_egr"] - both["log10_r_ig_plain"]).tolist()
        acc, rig = stats.t_interval(d_acc), stats.t_interval(d_rig)
        rows.append(dict(width=width, h=h, mu=mu, mu_prime=mu * group["num_params"].iloc[0], h_equiv=h + 4 * mu,
                         n_pairs=len(both), n_test_images=n_test, d_test_images=d_acc, d_log10_r_ig=d_rig,
                         mean_d_images=acc[0], ci_d_images=(acc[1], acc[2]),
                         mean_d_decades=rig[0], ci_d_decades=(rig[1], rig[2])))
    return pd.DataFrame(rows)


def matched_pairs(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """One row per EGR setting (width, h, μ > 0) whose equivalent rate ``h + 4μ`` is a plain
    arm's rate: mean test accuracy and R_IG of the kept runs of the EGR baseline (same width and
    h, μ = 0), of the EGR runs, and of the plain runs at ``h + 4μ``, with the kept-run counts;
    ``mu_prime`` = μm is the penalty's coefficient in R_IG units."""
    df = tidy(runs, threshold)
    kept = df[df["category"] == "kept"]
    plain = kept[kept["arm"] == "plain"]
    rows = []
    for (width, h, mu), group in kept[(kept["arm"] == "EGR") & (kept["mu"] > 0)].groupby(
            ["width", "learning_rate", "mu"]):
        base = kept[(kept["arm"] == "EGR") & (kept["mu"] == 0) & (kept["width"] == width)
                    & np.isclose(kept["learning_rate"], h)]
        match = plain[(plain["width"] == width) & np.isclose(plain["learning_rate"], h + 4 * mu)]
        if match.empty:
            continue
        row = dict(width=width, h=h, mu=mu, mu_prime=mu * group["num_params"].iloc[0], h_equiv=h + 4 * mu)
        for name, frame in (("baseline", base), ("egr", group), ("plain", match)):
            row[f"n_{name}"] = len(frame)
            row[f"test_acc_{name}"] = frame["test_acc"].mean()
            row[f"r_ig_{name}"] = frame["r_ig"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def stability_table(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """Per arm, h and μ: the kept runs' h·λ_max·(1 + 2μλ_max) at the checkpoint (linear
    stability of a step on E + μ‖∇E‖² needs it below 2): see :func:`mnist_mlp.stability_table`."""
    return mnist_mlp.stability_table(runs, threshold, keys=("arm", "learning_rate", "mu"))


def summary(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """Per arm, learning rate and μ: runs and kept runs, the mean test accuracy over every run
    (``all_test_acc``, at its selected checkpoint or last evaluation) and the means of test
    accuracy, R_IG, slope and λ_max over the kept runs."""
    df = tidy(runs, threshold)
    df["kept"] = df["category"] == "kept"
    keys = ["arm", "width", "learning_rate", "mu", "h_equiv"]
    out = df.groupby(keys).agg(runs=("kept", "size"), kept=("kept", "sum"),
                               all_test_acc=("test_acc", "mean"))
    means = df[df["kept"]].groupby(keys)[["test_acc", "r_ig", "mean_abs_slope", "lambda_max"]].mean()
    return out.join(means)


class StepCostExperiment(common.Computations):
    """A results-store experiment whose runs time one gradient: plain and EGR per penalty method.

    A config is ``{"width": ..., "batch": ..., "mu": ..., "methods": [...], "repeats": ...}``
    (``width`` is the MLP width or the ResNet width multiplier, as ``time_fn`` reads it);
    ``time_fn(config)`` returns :func:`igrlib.training.egr.step_cost`'s ``{name: seconds}``, stored
    as metrics ``seconds_<name>``. Stored like any run (with the machine in its provenance), a
    timing is made once per profile and read back when a chapter re-executes.
    """

    def __init__(self, name: str, time_fn: Callable[[Mapping[str, Any]], dict[str, float]]):
        super().__init__(name, functools.partial(_seconds_metrics, time_fn))


def _seconds_metrics(time_fn, config):
    return {f"seconds_{k}": v for k, v in time_fn(config).items()}, {}


def cost_configs(spec: Mapping[str, Any], mu: float = 0.01, repeats: int = 5) -> list[dict[str, Any]]:
    """Step-cost configs of a profile's spec: its ``cost_widths`` on ``cost_batch`` examples, the
    penalty methods ``cost_methods`` (default: all), EGR with ``mu``, ``repeats`` timing rounds."""
    methods = list(spec.get("cost_methods", losses.PENALTY_METHODS))
    for method in methods:
        check_choice(method, losses.PENALTY_METHODS, "penalty method")
    return [dict(width=w, batch=spec["cost_batch"], mu=mu, methods=methods, repeats=repeats)
            for w in spec["cost_widths"]]


def cost_grid(profile: str | None = None) -> list[dict[str, Any]]:
    """The step-cost configs of ``profile`` for :data:`COST` (MLP widths, batch 512)."""
    return cost_configs(PROFILES[resolve_profile(profile)])


def cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """One row per (width, method): seconds per gradient and the ratio to the plain gradient."""
    rows = []
    for _, run in costs.iterrows():
        plain = run["seconds_plain"]
        for method in ["plain", *run["methods"]]:
            rows.append(dict(width=run["width"], batch=run["batch"], method=method,
                             ms_per_step=1e3 * run[f"seconds_{method}"],
                             ratio_to_plain=run[f"seconds_{method}"] / plain))
    return pd.DataFrame(rows)


def _time_mlp(config: Mapping[str, Any]) -> dict[str, float]:
    mnist = data.load("mnist", n_train=config["batch"], n_test=10)
    x, y = jnp.asarray(mnist.x_train), jnp.asarray(mnist.y_train)
    model = models.mlp(config["width"], depth=BASE["depth"])
    params, state = model.init(jax.random.key(0), x[:2])
    return egr.step_cost(loss_fn(model), params, (state, x, y), config["mu"],
                         config["methods"], config["repeats"])


#: Times plain and EGR gradients of the MNIST MLP on ``batch`` training images.
COST = StepCostExperiment(NAME + "_cost", _time_mlp)


def describe(configs: Sequence[Mapping[str, Any]]) -> str:
    """What a grid runs, with everything that shapes its results (for captions and the chapter's
    protocol paragraph, so they cannot drift from the grid)."""
    trains = [c["train"] for c in configs]
    widths = sorted({t["width"] for t in trains})
    egr_runs = [t for t in trains if t["method"] == "egr"]
    small = sorted({t["learning_rate"] for t in egr_runs})
    mus = sorted({t["hparams"]["mu"] for t in egr_runs} | ({0.0} if any(
        t["method"] != "egr" and t["learning_rate"] in small for t in trains) else set()))
    plain = sorted({t["learning_rate"] for t in trains} - set(small))
    seeds = sorted({t["seed"] for t in trains})
    t0 = trains[0]
    return (f"{len(configs)} runs: widths {widths}; EGR arm at h ∈ {small} with μ ∈ {mus}; plain "
            f"arm at h ∈ {plain}; {t0['depth']} hidden layers, {t0['method'].upper()} batch "
            f"{t0['batch_size']}, penalty gradient by {(egr_runs or [t0])[0]['hparams'].get('penalty_method')!r}; "
            + mnist_mlp.protocol(t0, configs[0]["measure"], seeds, 60_000, mnist_mlp.FULL_TEST))
