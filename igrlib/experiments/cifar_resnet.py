"""ResNet-18 on CIFAR-10: implicit and explicit gradient regularization (Barrett & Dherin 2021, Section 5).

Protocol: the CIFAR ResNet-18 of :func:`igrlib.maths.models.resnet18` (3x3 stem, no max-pool, batch
norm; ``width_multiplier`` scales every stage's channels), cross-entropy, plain SGD with batch
512 over the learning rates {0.005, 0.01, 0.05, 0.1, 0.2} (Barrett & Dherin 2021, Section 5 and its appendix), no data augmentation
and no weight decay (the paper gives neither: our choice). Two arms:

* **plain**: every learning rate, no penalty; IGR predicts R_IG down and test accuracy up with h;
* **EGR**: the smallest learning rates with the penalty ``μ‖∇E‖²`` over a μ grid; step-h SGD on
  ``E + μ‖∇E‖²`` regularizes like plain SGD at ``h + 4μ`` (``λ_equiv = (h + 4μ)·m/4``, see
  :mod:`igrlib.training.egr`). Batch-norm running statistics come from the single forward pass of each
  step (:func:`igrlib.maths.losses.penalized_value_and_grad`).

Each run is reported at its evaluation of maximal test accuracy among those at or above the
first training-accuracy threshold, and measured there (R_IG over the training split, λ_max,
slope, noise robustness), as in :mod:`igrlib.experiments.mnist_mlp`.

Profiles (:data:`PROFILES`): ``paper`` is the full network on the full data (a GPU job for
papermill); ``cpu`` is a REDUCED network (width multiplier 1/16) on a class-balanced subset of
1,024 training images, batch 64, 16 epochs, the five learning rates and two seeds, which a 2-core
machine runs in about a quarter of an hour: it exercises the pipeline and shows what a tiny
budget shows, not the paper's result; ``smoke`` only checks that everything runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from igrlib.io import data
from igrlib.training import egr
from igrlib.maths import models, stats
from igrlib.config import ConfigError, axis_values, check_keys, resolve_profile
from igrlib.experiments import common, egr_mlp, mnist_mlp
from igrlib.measurement.measure import MeasureConfig
from igrlib.maths.objectives import loss_fn
from igrlib.training.config import TrainConfig

NAME = "cifar_resnet"
PAPER_LEARNING_RATES = (0.005, 0.01, 0.05, 0.1, 0.2)
#: A light measurement: every HVP of a ResNet costs about three training steps.
LIGHT_MEASURE = dict(curvature_examples=128, curvature_batch=128, lanczos_iters=5, trace_samples=3,
                     slope_directions=3, noise_draws=2, sigmas=(0.0, 0.05, 0.1), slices=False,
                     avoid_xla_loops=True)

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        width_multiplier=(0.0625,), learning_rate=(0.2,), egr_lr=(0.01,), mu=(0.05,), seed=(0,),
        base=dict(epochs=1, batch_size=32, n_train=64, n_val=64, n_test=64, eval_every=1,
                  thresholds=(0.1,), probe_every=1, probe_examples=32, probe_lanczos_iters=3,
                  probe_trace_samples=2),
        measure=dict(LIGHT_MEASURE, curvature_examples=32, curvature_batch=32, lanczos_iters=3,
                     trace_samples=2, slope_directions=2, sigmas=(0.0, 0.1)),
        cost_widths=(0.0625,), cost_batch=16, cost_methods=("hvp",),
    ),
    "cpu": dict(
        width_multiplier=(0.0625,), learning_rate=PAPER_LEARNING_RATES, egr_lr=(0.01,),
        mu=(0.01, 0.05), seed=(0, 1),
        base=dict(epochs=16, batch_size=64, n_train=1024, n_val=1000, n_test=1000, eval_every=4,
                  thresholds=(0.1, 0.5), probe_every=2, probe_examples=128, probe_lanczos_iters=5,
                  probe_trace_samples=3),
        measure=LIGHT_MEASURE,
        cost_widths=(0.0625,), cost_batch=64,
    ),
    "paper": dict(
        width_multiplier=(1.0,), learning_rate=PAPER_LEARNING_RATES, egr_lr=(0.005, 0.01),
        mu=(0.00125, 0.0025, 0.01, 0.025, 0.05, 0.25), seed=(0, 1, 2),
        base=dict(epochs=200, batch_size=512, eval_every=2, patience=10, thresholds=(0.99, 0.9),
                  n_val=5_000, probe_every=5, probe_examples=1024),
        measure=dict(curvature_examples=2048, curvature_batch=512, lanczos_iters=20, trace_samples=20,
                     slope_directions=10, noise_draws=5, sigmas=(0.0, 0.02, 0.05, 0.1), slices=False),
        cost_widths=(1.0,), cost_batch=512,
    ),
}
BASE = dict(dataset="cifar10", model="resnet18", method="sgd", batch_size=512, selection="validation")
AXES = ("width_multiplier", "learning_rate", "egr_lr", "mu", "seed")


def grid(profile: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The run configs of ``profile``: the plain arm (every ``learning_rate``) and the EGR arm
    (every ``egr_lr`` × every ``mu`` > 0), for every width multiplier and seed. ``overrides``
    replace axes (:data:`AXES`, sequences) or training fields (``epochs``, ``n_train``,
    ``penalty_method``, ...). Every value is validated here, before any compute."""
    spec = PROFILES[resolve_profile(profile)]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    axes = {k: axis_values(k, overrides.pop(k, spec[k])) for k in AXES}
    check_keys(overrides, [f.name for f in dataclasses.fields(TrainConfig)] + ["penalty_method", "fd_radius"],
               "cifar_resnet override")
    if any(not isinstance(mu, (int, float)) or mu <= 0 for mu in axes["mu"]):
        raise ConfigError(f"EGR mu values must be numbers > 0 (the plain arm is mu = 0), got {axes['mu']!r}")
    for multiplier in axes["width_multiplier"]:
        models.resnet18(multiplier)  # validates the width multiplier (builds no parameters)
    base = {**BASE, **spec["base"], **overrides}
    measure = MeasureConfig(**spec["measure"])
    shared = dict(width_multiplier=axes["width_multiplier"])
    penalty = {k: base.pop(k) for k in ("penalty_method", "fd_radius") if k in base}
    configs = common.make_grid(base,
                               {**shared, "learning_rate": axes["learning_rate"], "seed": axes["seed"]},
                               measure)
    if axes["egr_lr"] and axes["mu"]:
        configs += common.make_grid({**base, "method": "egr", **penalty},
                                    {**shared, "learning_rate": axes["egr_lr"], "mu": axes["mu"],
                                     "seed": axes["seed"]}, measure)
    return configs


group_key = common.group_key
group_size = common.group_size
run_group = common.run_group


# ---------------------------------------------------------------------------------------------
# Analysis


def tidy(runs: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
    """:func:`mnist_mlp.tidy` at ``threshold`` (default: the runs' first threshold) plus ``arm``
    ("EGR" or "plain"), ``h_equiv = h + 4μ`` and ``lambda_equiv = (h + 4μ)·m/4``."""
    if runs.empty:
        return runs
    threshold = runs["thresholds"].iloc[0][0] if threshold is None else threshold
    df = mnist_mlp.tidy(runs, threshold)
    df["arm"] = np.where(df["method"] == "egr", "EGR", "plain")
    df["h_equiv"] = df["learning_rate"] + 4 * df["mu"]
    df["lambda_equiv"] = [egr.lambda_equiv(h, mu, m) for h, mu, m
                          in zip(df["learning_rate"], df["mu"], df["num_params"])]
    return df


def findings(runs: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
    """The "What we found" table (columns of :func:`igrlib.maths.stats.finding`): within-seed
    trends with h (plain arm) and with μ (EGR at each small h, μ = 0 included), and the paired
    arm effect of EGR at (h, μ) against plain SGD at h + 4μ where the grid has that rate.
    Claims about minima get "not testable at this budget" when the runs end far from one
    (:func:`igrlib.maths.stats.far_from_minimum`), as every ``cpu`` run does."""
    df = tidy(runs, threshold)
    kept = df[df["category"] == "kept"]
    plain = kept[kept["arm"] == "plain"]
    images = mnist_mlp.test_images_scale(kept) if len(kept) else (1.0, "accuracy")
    rows = []

    def add(claim, frame, x, y, sign, what, effect=None):
        rows.append(stats.finding(claim, frame, x, y, sign, what, effect=effect, about_minima=True))

    add("2.1 R_IG falls as h grows", plain, "learning_rate", "log10_r_ig", -1, "ρ(h, R_IG), plain",
        (1.0, "decades of R_IG"))
    add("2.3 test accuracy rises with h", plain, "learning_rate", "test_acc", +1, "ρ(h, test acc), plain", images)
    add("2.2 λ_max falls as h grows", plain, "learning_rate", "lambda_max", -1, "ρ(h, λ_max), plain",
        (1.0, "λ_max"))
    for h, group in kept[kept["learning_rate"].isin(df.loc[df["arm"] == "EGR", "learning_rate"])].groupby(
            "learning_rate"):
        add(f"EGR lowers R_IG at h = {h:g}", group, "mu", "log10_r_ig", -1, "ρ(μ, R_IG), μ = 0 included",
            (1.0, "decades of R_IG"))
        add(f"EGR raises test accuracy at h = {h:g}", group, "mu", "test_acc", +1,
            "ρ(μ, test acc), μ = 0 included", images)
    rows += egr_mlp.equivalence_rows(egr_mlp.arm_effects_of(df), untestable=stats.far_from_minimum(kept))
    threshold = df["thresholds"].iloc[0][0] if threshold is None else threshold
    return stats.finish(rows, threshold)


def summary(runs: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
    """One row per run: arm, h, μ, λ_equiv, status, epochs, training and test accuracy at the
    selected evaluation, R_IG, λ_max and slope."""
    df = tidy(runs, threshold)
    cols = ["arm", "width_multiplier", "learning_rate", "mu", "seed", "lambda_equiv", "category",
            "selected_epoch", "train_acc", "test_acc", "r_ig", "lambda_max", "mean_abs_slope"]
    return df[[c for c in cols if c in df]].sort_values(["arm", "learning_rate", "mu", "seed"])


def _time_resnet(config: Mapping[str, Any]) -> dict[str, float]:
    cifar = data.load("cifar10", n_train=config["batch"], n_test=10)
    x, y = jnp.asarray(cifar.x_train), jnp.asarray(cifar.y_train)
    model = models.resnet18(config["width"])
    params, state = model.init(jax.random.key(0), x[:2])
    return egr.step_cost(loss_fn(model), params, (state, x, y), config["mu"],
                         config["methods"], config["repeats"])


#: Times plain and EGR gradients of the ResNet-18 (``width`` = width multiplier) on ``batch``
#: CIFAR-10 training images.
COST = egr_mlp.StepCostExperiment(NAME + "_cost", _time_resnet)
cost_table = egr_mlp.cost_table


def cost_grid(profile: str | None = None) -> list[dict[str, Any]]:
    """The step-cost configs of ``profile`` for :data:`COST` (three timing rounds: a ResNet step
    takes seconds here)."""
    return egr_mlp.cost_configs(PROFILES[resolve_profile(profile)], repeats=3)


def history_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table of every evaluation of every run: arm, h, μ, seed, epoch and the metrics."""
    return common.history_frame(tidy(runs), ("arm", "learning_rate", "mu", "seed", "status"))


def describe(configs: Sequence[Mapping[str, Any]]) -> str:
    """What a grid runs, with everything that shapes its results (for captions and the chapter's
    protocol paragraph, so they cannot drift from the grid)."""
    trains = [c["train"] for c in configs]
    t0 = trains[0]
    widths = sorted({t["width_multiplier"] for t in trains})
    plain = sorted({t["learning_rate"] for t in trains if t["method"] != "egr"})
    egr_lrs = sorted({t["learning_rate"] for t in trains if t["method"] == "egr"})
    mus = sorted({t["hparams"]["mu"] for t in trains if t["method"] == "egr"})
    seeds = sorted({t["seed"] for t in trains})
    return (f"{len(configs)} runs: ResNet-18 at width multiplier {widths}; plain SGD at h ∈ {plain}; "
            f"EGR at h ∈ {egr_lrs} with μ ∈ {mus}; batch {t0['batch_size']}; "
            + mnist_mlp.protocol(t0, configs[0]["measure"], seeds, 50_000, 10_000))
