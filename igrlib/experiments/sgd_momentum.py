"""The implicit regularizers of SGD and of momentum, measured on an MNIST MLP.

Shuffled SGD at learning rate h with M mini-batches follows, on average over shuffles, the flow of
``Ẽ_SGD = E + (h/4)‖∇E‖² + (h/4M) Σ_k ‖∇Ê_k − ∇E‖² = E + (hm/4)(R_IG + V)`` (Smith, Dherin,
Barrett & De, ICLR 2021; ``V`` the probe ``grad_variance`` of :mod:`igrlib.training.probes`, which
for a batch of size B scales like 1/B); heavy-ball momentum β at the effective rate
``h_eff = h/(1 − β)`` follows that of ``E + (h_eff/4)·((1 + β)/(1 − β))·‖∇E‖²`` (the chapter
derives both). Five arms on one ReLU MLP (``width`` units, ``depth`` hidden layers, cross-entropy),
each run a training program of :mod:`igrlib.training.program` with trajectory probes:

* ``batch``: SGD at the fixed rate ``h`` over ``batch_sizes`` (the variance term falls as B grows);
* ``ratio``: SGD at the fixed ratio ``h/B = h/ratio_anchor`` over ``batch_sizes`` (the variance
  term is held; GD's term ``(h/4)‖∇E‖²`` grows with B);
* ``momentum``: heavy ball (and Nesterov with ``nesterov``) at batch ``ratio_anchor`` over
  ``betas`` at the fixed effective rate ``h`` (``learning_rate = h(1 − β)``; β = 0 is plain SGD);
* ``gd``: full-batch GD against SGD at ``gd_batch_sizes`` at the same rate ``gd_h``, on a
  smaller training subset ``gd_n_train`` that full-batch steps can afford (``gd_epochs`` = 0:
  no GD arm, as at ``smoke``, whose budget is one minute);
* ``penalty``: the explicit form of SGD's variance term beside the ``gd`` arm: full-batch GD at
  each rate of ``penalty_h`` on ``E + (λ/4)(1/K)Σ_k‖∇Ê_k − ∇Ē‖²`` (the update rule ``var_penalty``
  of :mod:`igrlib.training.micro`, micro-batches of ``penalty_micro_batch`` re-drawn every step)
  at ``λ = penalty_lam``, for ``PENALTY_TIME·gd_epochs·gd_h/h`` steps, evaluated and probed on
  GD's schedule, read at the ``gd`` arm's matched loss. At λ = h = ``gd_h`` and b = B its modified loss is, to first
  order, that of SGD at ``gd_h`` with batch b (Smith et al.'s explicit regularizer); at a smaller
  h it asks whether the penalty recovers the larger rate's accuracy. :data:`COST` times one step
  of it against GD on the same batch and SGD on its mini-batch.

Every run trains for the profile's epoch budget (the same number of passes over the data for
every batch size), is evaluated every ``eval_every`` epochs and probed every ``probe_every``
evaluations; the reported checkpoint is that of maximal validation accuracy (validation images
are training images not trained on). Because larger batches take fewer steps per epoch, claims
about regularization strength are also read at *matched training loss*: each run's test
accuracy and probes interpolated (in log loss) at the first time its full training loss falls
to a level every run of the arm reaches (:func:`at_matched_loss`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from igrlib.config import ConfigError, axis_values, check_keys, resolve_profile
from igrlib.experiments import common, egr_mlp, equal_compute, mnist_mlp
from igrlib.io.results import run_id
from igrlib.maths import stats
from igrlib.measurement.measure import MeasureConfig
from igrlib.training.config import TrainConfig

NAME = "sgd_momentum"

_PROBES = ("r_ig", "lambda_max", "param_norm", "grad_variance")
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(  # one program (compiling it is the cost): checks that every analysis path runs
        h=0.1, batch_sizes=(64,), ratio_anchor=64, betas=(0.0,), nesterov=False,
        gd_h=0.2, gd_batch_sizes=(), gd_n_train=128, penalty_h=(), penalty_lam=0.2,
        penalty_micro_batch=32, seed=(0, 1),
        base=dict(width=16, epochs=2, n_train=256, n_val=128, n_test=256, eval_every=1,
                  probe_every=1, probe_examples=128, probes=("r_ig", "grad_variance")),
        gd_epochs=0,
        measure=dict(curvature_examples=128, curvature_batch=128, lanczos_iters=3, trace_samples=2,
                     slope_directions=2, noise_draws=2, sigmas=(0.0,), slices=False),
    ),
    "cpu": dict(
        h=0.05, batch_sizes=(32, 128, 512), ratio_anchor=128, betas=(0.0, 0.5, 0.9, 0.99),
        nesterov=False, gd_h=0.1, gd_batch_sizes=(32,), gd_n_train=1000, penalty_h=(0.1, 0.05),
        penalty_lam=0.1, penalty_micro_batch=32, seed=(0, 1, 2, 3, 4),
        base=dict(width=50, epochs=24, n_train=5000, n_val=1000, n_test=5000, eval_every=2,
                  probe_every=2, probe_examples=1024, probe_lanczos_iters=8),
        gd_epochs=400,
        measure=dict(curvature_examples=1024, lanczos_iters=10, trace_samples=4, slope_directions=3,
                     noise_draws=2, sigmas=(0.0,), slices=False),
    ),
    "paper": dict(
        h=0.05, batch_sizes=(32, 64, 128, 256, 512, 1024), ratio_anchor=128,
        betas=(0.0, 0.5, 0.9, 0.99), nesterov=True, gd_h=0.1, gd_batch_sizes=(32, 128, 512),
        gd_n_train=10_000, penalty_h=(0.1, 0.05), penalty_lam=0.1, penalty_micro_batch=32,
        seed=(0, 1, 2, 3, 4),
        base=dict(width=200, epochs=200, n_train=None, n_val=5000, n_test=None, eval_every=1,
                  probe_every=5, probe_examples=4096),
        gd_epochs=5000,
        measure=dict(slices=False),
    ),
}
BASE = dict(mnist_mlp.BASE, thresholds=(0.5,), probes=_PROBES)
#: Most evaluations of a full-batch GD run (its many one-step epochs are otherwise evaluated).
GD_EVALUATIONS = 40
#: The penalty arm's time h·steps in units of GD's: the penalty slows the fit, and every run must
#: reach the GD arm's matched loss (at 1, one of five cpu runs ended just above it).
PENALTY_TIME = 1.5
AXES = ("h", "batch_sizes", "ratio_anchor", "betas", "nesterov", "gd_h", "gd_batch_sizes",
        "gd_n_train", "gd_epochs", "penalty_h", "penalty_lam", "penalty_micro_batch", "seed")


def grid(profile: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The run configs of ``profile``, every arm (see the module docstring), duplicates dropped
    (the SGD run at batch ``ratio_anchor`` and rate ``h`` belongs to three arms). ``overrides``
    replace entries of :data:`AXES` (``seed``: a list or a count) or training fields
    (``epochs``, ``n_train``, ...). Every value is validated here, before any compute."""
    spec = PROFILES[resolve_profile(profile)]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    arms = {k: overrides.pop(k, spec[k]) for k in AXES}
    check_keys(overrides, [f.name for f in dataclasses.fields(TrainConfig)], "sgd_momentum override")
    seeds = axis_values("seed", arms["seed"])
    batches = axis_values("batch_sizes", arms["batch_sizes"])
    betas = axis_values("betas", arms["betas"])
    if any(not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 <= b < 1 for b in betas):
        raise ConfigError(f"betas must be numbers in [0, 1), got {betas!r}")
    if not isinstance(arms["nesterov"], bool):
        raise ConfigError(f"nesterov must be True or False, got {arms['nesterov']!r}")
    base = {**BASE, **spec["base"], **overrides}
    measure = MeasureConfig(**spec["measure"])
    h, anchor = arms["h"], arms["ratio_anchor"]
    if not isinstance(arms["penalty_h"], (tuple, list)):
        raise ConfigError(f"penalty_h must be a tuple of learning rates, got {arms['penalty_h']!r}")
    penalty_h = tuple(arms["penalty_h"])
    for name, value in (("h", h), ("gd_h", arms["gd_h"]), ("penalty_lam", arms["penalty_lam"]),
                        *(("penalty_h", v) for v in penalty_h)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
    configs = []
    for b in batches:  # the batch and ratio arms
        configs += common.make_grid({**base, "batch_size": b}, dict(learning_rate=(h,), seed=seeds), measure)
        configs += common.make_grid({**base, "batch_size": b},
                                    dict(learning_rate=(h * b / anchor,), seed=seeds), measure)
    methods = ("momentum", "nesterov") if arms["nesterov"] else ("momentum",)
    for beta in betas:  # the momentum arm at the fixed effective rate h
        for method in methods if beta > 0 else ("sgd",):
            arm = {"method": method, "beta": float(beta)} if beta > 0 else {"method": "sgd"}
            configs += common.make_grid({**base, **arm, "batch_size": anchor},
                                        dict(learning_rate=(h * (1 - beta),), seed=seeds), measure)
    if isinstance(arms["gd_epochs"], bool) or not isinstance(arms["gd_epochs"], int) or arms["gd_epochs"] < 0:
        raise ConfigError(f"gd_epochs must be an integer >= 0, got {arms['gd_epochs']!r}")
    if arms["gd_epochs"] == 0:
        return list({run_id(c): c for c in configs}.values())
    gd_base = {**base, "n_train": arms["gd_n_train"], "epochs": arms["gd_epochs"]}
    # GD's steps are cheap next to evaluating three splits: at most GD_EVALUATIONS evaluations
    gd_eval = max(base["eval_every"], arms["gd_epochs"] // GD_EVALUATIONS)
    configs += common.make_grid({**gd_base, "method": "gd", "batch_size": None, "eval_every": gd_eval},
                                dict(learning_rate=(arms["gd_h"],), seed=seeds), measure)
    for b in tuple(arms["gd_batch_sizes"]):  # may be empty: GD alone
        # SGD at the GD arm's rate: the same epochs would be far more steps, so it gets the
        # main budget (it reaches every loss GD reaches long before)
        configs += common.make_grid({**gd_base, "epochs": base["epochs"], "batch_size": b},
                                    dict(learning_rate=(arms["gd_h"],), seed=seeds), measure)
    for rate in penalty_h:  # GD plus the explicit variance term, on GD's evaluation schedule
        epochs = round(PENALTY_TIME * arms["gd_epochs"] * arms["gd_h"] / rate)
        configs += common.make_grid(
            {**gd_base, "method": "var_penalty", "batch_size": None, "epochs": epochs, "eval_every": gd_eval,
             "lam": float(arms["penalty_lam"]), "micro_batch": arms["penalty_micro_batch"]},
            dict(learning_rate=(rate,), seed=seeds), measure)
        if not np.isclose(rate, arms["gd_h"]):  # the penalty's own-rate baseline: GD without it
            configs += common.make_grid({**gd_base, "method": "gd", "batch_size": None, "epochs": epochs,
                                         "eval_every": gd_eval}, dict(learning_rate=(rate,), seed=seeds), measure)
    unique = {run_id(c): c for c in configs}
    return list(unique.values())


group_key = common.group_key
group_size = common.group_size
run_group = common.run_group


# ---------------------------------------------------------------------------------------------
# Wall time of one step of the explicit penalty, beside GD on the same batch and SGD

#: Interleaved timing rounds of :data:`COST` (the median is reported).
COST_REPEATS = 15


def cost_grid(profile: str | None = None) -> list[dict[str, Any]]:
    """The step-cost configs of ``profile`` for :data:`COST` (none without a penalty arm): GD and
    each penalty rule on the GD arm's whole training subset (the same batch), and SGD on each of
    ``gd_batch_sizes`` (its own mini-batch), on the arm's MLP; timed by
    :func:`igrlib.experiments.equal_compute.time_rules`."""
    spec = PROFILES[resolve_profile(profile)]
    if not spec["penalty_h"] or not spec["gd_epochs"]:
        return []
    width, depth = {**BASE, **spec["base"]}["width"], {**BASE, **spec["base"]}["depth"]
    full = {"GD": dict(method="gd", learning_rate=spec["gd_h"])}
    full.update({f"GD + λV, b = {spec['penalty_micro_batch']}": dict(
        method="var_penalty", learning_rate=spec["gd_h"], lam=float(spec["penalty_lam"]),
        micro_batch=spec["penalty_micro_batch"])})
    configs = [dict(width=width, depth=depth, batch=spec["gd_n_train"], repeats=COST_REPEATS, rules=full)]
    configs += [dict(width=width, depth=depth, batch=b, repeats=COST_REPEATS,
                     rules={"SGD": dict(method="sgd", learning_rate=spec["gd_h"])})
                for b in spec["gd_batch_sizes"]]
    return configs


#: Times one training step of GD, the explicit penalty and SGD (stored like a run, read back).
COST = egr_mlp.StepCostExperiment(NAME + "_cost", equal_compute.time_rules)


def cost_table(costs: pd.DataFrame, n_train: int) -> pd.DataFrame:
    """One row per timed rule: batch, milliseconds per step, the ratio to a GD step on the same
    ``n_train`` images, and milliseconds per epoch of ``n_train`` images (⌊n/B⌋ steps)."""
    rows = []
    for _, run in costs.iterrows():
        for column in [c for c in run.index if c.startswith("seconds_") and pd.notna(run[c])]:
            rows.append(dict(rule=column[len("seconds_"):], batch=int(run["batch"]),
                             ms_per_step=1e3 * run[column], steps_per_epoch=n_train // int(run["batch"])))
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    gd = out.loc[out["rule"] == "GD", "ms_per_step"].iloc[0]
    out["ratio_to_gd_step"] = out["ms_per_step"] / gd
    out["ms_per_epoch"] = out["ms_per_step"] * out["steps_per_epoch"]
    return out


# ---------------------------------------------------------------------------------------------
# Analysis


def tidy(runs: pd.DataFrame, profile: str | None = None, **overrides: Any) -> pd.DataFrame:
    """One row per run: config, metrics at the validation-selected checkpoint, and the columns
    ``beta`` (0 for SGD and GD), ``batch`` (the batch size; the training-set size for GD),
    ``h_over_b``, ``h_eff = h/(1 − β)``, ``log10_r_ig``, ``n_test_images`` and the arm flags
    ``in_batch``, ``in_ratio``, ``in_momentum``, ``in_gd``, ``in_penalty`` of the grid's arms (a
    run can be in several), and ``variant``, a short label of the GD and penalty arms' runs
    (``GD h``, ``SGD B h``, ``GD h + λV``)."""
    spec = {**PROFILES[resolve_profile(profile)], **{k: v for k, v in overrides.items() if v is not None}}
    df = runs.copy()
    df["beta"] = df["beta"].fillna(0.0) if "beta" in df else 0.0
    df["batch"] = df["batch_size"].fillna(df["n_train"]).astype(int)
    df["h_over_b"] = df["learning_rate"] / df["batch"]
    df["h_eff"] = df["learning_rate"] / (1 - df["beta"])
    df["log10_r_ig"] = np.log10(df["r_ig"].where(df["r_ig"] > 0)) if "r_ig" in df else np.nan
    df["n_test_images"] = df["n_test"].fillna(mnist_mlp.FULL_TEST).astype(int)
    main = df["n_train"].fillna(-1) != spec["gd_n_train"]
    sgd = df["method"] == "sgd"
    anchor, h = spec["ratio_anchor"], spec["h"]
    df["in_batch"] = main & sgd & np.isclose(df["learning_rate"], h)
    df["in_ratio"] = main & sgd & np.isclose(df["h_over_b"], h / anchor)
    df["in_momentum"] = main & (df["batch"] == anchor) & np.isclose(df["h_eff"], h)
    penalised = df["method"] == "var_penalty"
    df["in_gd"] = ~main & ~penalised & np.isclose(df["learning_rate"], spec["gd_h"])
    df["in_penalty"] = df["in_gd"] | (~main & (penalised | (df["method"] == "gd")))
    df["variant"] = [_variant(row) for _, row in df.iterrows()]
    return df


def _variant(row: Mapping[str, Any]) -> str:
    h = f"h = {row['learning_rate']:g}"
    if row["method"] == "var_penalty":
        return f"GD {h} + λV (λ = {row['lam']:g}, b = {int(row['micro_batch'])})"
    return f"GD {h}" if row["method"] == "gd" else f"{row['method'].upper()} B = {row['batch']}, {h}"


def matched_level(frame: pd.DataFrame) -> float:
    """The lowest training loss (nats, whole training split) that every run of ``frame``
    reaches at an evaluation and at a probe: the largest per-run minimum of either, so that
    evaluations and probes are both read at a loss they actually passed."""
    lows = []
    for history in frame["history"]:
        lows.append(max(np.nanmin(np.asarray(history["train_loss"], float)),
                        np.nanmin(np.asarray(history.get("probe_train_loss", [np.inf]), float))))
    return float(max(lows)) * (1 + 1e-9) if lows else float("nan")


#: Probe histories read at matched loss (quantity: log-interpolated).
MATCHED_PROBES = ("r_ig", "grad_variance", "lambda_max")


def at_matched_loss(frame: pd.DataFrame, level: float | None = None) -> pd.DataFrame:
    """``frame`` (tidied) with, at the matched training loss ``level`` (default
    :func:`matched_level` of ``frame``), each run's ``epoch_at_E``, ``test_acc_at_E``,
    ``val_acc_at_E`` (linear in log loss between the two evaluations around the crossing) and
    ``r_ig_at_E``, ``grad_variance_at_E``, ``lambda_max_at_E`` (log-linear between the probes
    around it), ``log10_r_ig_at_E`` and the level ``E_match``."""
    level = matched_level(frame) if level is None else level
    out = frame.copy()
    cols: dict[str, list[float]] = {k: [] for k in ("epoch_at_E", "test_acc_at_E", "val_acc_at_E",
                                                    *(f"{p}_at_E" for p in MATCHED_PROBES))}
    for history in frame["history"]:
        where = common.loss_crossing(history["train_loss"], level)
        cols["epoch_at_E"].append(common.at_crossing(history["epoch"], where, log=False))
        cols["test_acc_at_E"].append(common.at_crossing(history["test_acc"], where, log=False))
        cols["val_acc_at_E"].append(common.at_crossing(history.get("val_acc"), where, log=False))
        where = common.loss_crossing(history.get("probe_train_loss", []), level)
        for name in MATCHED_PROBES:
            values = history.get(f"probe_{name}") if where is not None else None
            positive = values is not None and all(v is not None and v > 0 for v in values)
            cols[f"{name}_at_E"].append(common.at_crossing(values, where, log=positive))
    for k, v in cols.items():
        out[k] = v
    out["log10_r_ig_at_E"] = np.log10(out["r_ig_at_E"].where(out["r_ig_at_E"] > 0))
    out["E_match"] = level
    return out


def _arm(df: pd.DataFrame, name: str) -> pd.DataFrame:
    frame = df[df[f"in_{name}"] & (df["status"] == "ok")]
    return at_matched_loss(frame) if len(frame) else frame


def arms(runs: pd.DataFrame, profile: str | None = None, **overrides: Any) -> dict[str, pd.DataFrame]:
    """The ok runs of each arm (``batch``, ``ratio``, ``momentum``, ``gd``), each read at its own
    matched training loss (:func:`at_matched_loss`), and ``penalty``: the ``gd`` arm's runs with
    the explicit-penalty runs, all read at the ``gd`` arm's level (so adding the penalty does not
    move the GD/SGD comparison; a penalty run that never gets there reads NaN)."""
    df = tidy(runs, profile, **overrides)
    out = {name: _arm(df, name) for name in ("batch", "ratio", "momentum", "gd")}
    frame = df[df["in_penalty"] & (df["status"] == "ok")]
    level = out["gd"]["E_match"].iloc[0] if len(out["gd"]) else None
    out["penalty"] = at_matched_loss(frame, level) if len(frame) and level is not None else frame.iloc[:0]
    return out


#: Equivalence margin for "the same test accuracy" (our choice): 0.5 % of the test set.
ACC_MARGIN = 0.005


def findings(groups: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The "What we found" table (columns of :func:`igrlib.maths.stats.finding`). Trends are
    within-seed rank trends; accuracy effects are in test images; "at E*" rows read each run at
    its arm's matched training loss, the others at the validation-selected checkpoint."""
    rows = []

    def add(claim, frame, x, y, sign, what, effect=None):
        if frame is None or frame.empty:
            rows.append(dict(claim=claim, statistic=what, value="no runs", p=np.nan, effect="",
                             verdict="no evidence"))
            return
        rows.append(stats.finding(claim, frame, x, y, sign, what, effect=effect))

    def images(frame):
        return mnist_mlp.test_images_scale(frame) if len(frame) else (1.0, "accuracy")

    def level(frame):
        return f"E* = {frame['E_match'].iloc[0]:.3g}" if len(frame) else "E*"

    b, r, mom, gd, pen = (groups[k] for k in ("batch", "ratio", "momentum", "gd", "penalty"))
    add("fixed h: test accuracy falls as B grows (at E*)", b, "batch", "test_acc_at_E", -1,
        f"ρ(B, test acc at {level(b)})", images(b))
    add("fixed h: test accuracy falls as B grows (selected checkpoint)", b, "batch", "test_acc", -1,
        "ρ(B, test acc), validation-selected", images(b))
    add("fixed h: R_IG at E* rises as B grows (weaker implicit regularizer)", b, "batch",
        "log10_r_ig_at_E", +1, f"ρ(B, log10 R_IG at {level(b)})", (1.0, "decades"))
    add("fixed h: variance term V at E* falls as B grows (∝ 1/B)", b, "batch", "grad_variance_at_E", -1,
        f"ρ(B, V at {level(b)})")
    if len(r) and r["batch"].nunique() > 1:
        scale = float(r["n_test_images"].iloc[0])
        small, large = r["batch"].min(), r["batch"].max()
        rows.append(stats.equivalence_finding(
            f"fixed h/B: same test accuracy at B = {small} and B = {large} (at E*)",
            common.paired_differences(r, "batch", small, large, "test_acc_at_E", scale), ACC_MARGIN * scale, "test images",
            f"paired Δ test images (B = {large} − B = {small}) at {level(r)}"))
        rows.append(stats.equivalence_finding(
            f"fixed h/B: same test accuracy at B = {small} and B = {large} (selected checkpoint)",
            common.paired_differences(r, "batch", small, large, "test_acc", scale), ACC_MARGIN * scale, "test images",
            f"paired Δ test images (B = {large} − B = {small}), validation-selected"))
    add("fixed h/B: no trend of test accuracy with B (at E*)", r, "batch", "test_acc_at_E", -1,
        f"ρ(B, test acc at {level(r)}); 'no evidence' is the prediction", images(r))
    add("momentum at fixed h/(1−β): R_IG at E* falls with β", mom, "beta", "log10_r_ig_at_E", -1,
        f"ρ(β, log10 R_IG at {level(mom)})", (1.0, "decades"))
    add("momentum at fixed h/(1−β): test accuracy rises with β (at E*)", mom, "beta", "test_acc_at_E", +1,
        f"ρ(β, test acc at {level(mom)})", images(mom))
    add("momentum at fixed h/(1−β): test accuracy rises with β (selected checkpoint)", mom, "beta",
        "test_acc", +1, "ρ(β, test acc), validation-selected", images(mom))
    add("momentum at fixed h/(1−β): λ_max at E* falls with β", mom, "beta", "lambda_max_at_E", -1,
        f"ρ(β, λ_max at {level(mom)})", (1.0, "λ_max"))
    add("GD vs SGD at the same h: SGD (smaller B) reaches higher test accuracy (at E*)", gd, "batch",
        "test_acc_at_E", -1, f"ρ(B, test acc at {level(gd)}), GD = full batch", images(gd))
    add("GD vs SGD at the same h: SGD reaches lower R_IG (at E*)", gd, "batch", "log10_r_ig_at_E", +1,
        f"ρ(B, log10 R_IG at {level(gd)})", (1.0, "decades"))
    sgd = _sgd_variant(pen) if len(pen) else None
    for variant, base, pair in _penalty_pairs(pen):
        add(f"explicit variance penalty: {variant} reaches higher test accuracy than {base} (at E*)", pair,
            "penalised", "test_acc_at_E", +1, f"ρ(penalty, test acc at {level(gd)})", images(pair))
        scale = images(pair)[0]
        rows.append(stats.equivalence_finding(
            f"explicit variance penalty: {variant} recovers the test accuracy of {sgd} (at E*)",
            common.paired_differences(pen, "variant", sgd, variant, "test_acc_at_E", scale),
            ACC_MARGIN * scale, "test images", f"paired Δ test images (penalty − SGD) at {level(gd)}"))
        add(f"explicit variance penalty: {variant} reaches lower λ_max than {base}, as SGD does (at E*)", pair,
            "penalised", "lambda_max_at_E", -1, f"ρ(penalty, λ_max at {level(gd)})", (1.0, "λ_max"))
        add(f"explicit variance penalty: {variant} reaches lower R_IG than {base} (at E*)", pair, "penalised",
            "log10_r_ig_at_E", -1, f"ρ(penalty, log10 R_IG at {level(gd)})", (1.0, "decades"))
    return stats.finish(rows, "E* per arm")


def _gd_variant(frame: pd.DataFrame, rate: float | None = None) -> str | None:
    """The label of the GD runs at ``rate`` (default: the SGD runs' rate, the arm's h), or None."""
    if rate is None:
        sgd = frame.loc[frame["method"] == "sgd", "learning_rate"]
        if not len(sgd):
            return None
        rate = float(sgd.iloc[0])
    gd = frame[(frame["method"] == "gd") & np.isclose(frame["learning_rate"], rate)]
    return gd["variant"].iloc[0] if len(gd) else None


def _sgd_variant(frame: pd.DataFrame) -> str | None:
    """The smallest-batch SGD run of the GD arm (the batch the penalty's micro-batches stand for)."""
    sgd = frame[frame["method"] == "sgd"]
    return sgd.sort_values("batch")["variant"].iloc[0] if len(sgd) else None


def _penalty_pairs(frame: pd.DataFrame) -> list[tuple[str, str | None, pd.DataFrame]]:
    """Per penalty variant: its baseline, GD at the same rate (else at the arm's h), and the runs
    of both, with ``penalised`` 1 for the penalty runs and 0 for GD's."""
    out = []
    penalised = frame[frame["method"] == "var_penalty"]
    for variant, rate in sorted(set(zip(penalised["variant"], penalised["learning_rate"]))):
        base = _gd_variant(frame, rate) or _gd_variant(frame)
        pair = frame[frame["variant"].isin([base, variant])]
        out.append((variant, base, pair.assign(penalised=(pair["variant"] == variant).astype(int))))
    return out


def gap_closed(frame: pd.DataFrame) -> pd.DataFrame:
    """How much of the SGD − GD gap in test images at matched loss each penalty variant closes,
    from the ``penalty`` arm (:func:`arms`): per seed, ``gap`` = SGD − GD and ``closed`` =
    penalty − GD, GD at SGD's rate whatever the penalty's (test images, runs paired by seed), their ratio, and a last row ``mean`` with the
    means, the 95 % t-intervals (:func:`igrlib.maths.stats.t_interval`) and the ratio of the
    means (the fraction of the mean gap closed). Empty without penalty runs."""
    gd, sgd = _gd_variant(frame), _sgd_variant(frame)
    if gd is None or sgd is None:
        return pd.DataFrame()
    scale = mnist_mlp.test_images_scale(frame)[0]
    gap = frame.pivot_table(index="seed", columns="variant", values="test_acc_at_E", aggfunc="mean")
    rows = []
    for variant, _, _ in _penalty_pairs(frame):
        cells = gap[[gd, sgd, variant]].dropna()
        g, c = scale * (cells[sgd] - cells[gd]), scale * (cells[variant] - cells[gd])
        for seed in cells.index:
            rows.append(dict(variant=variant, seed=str(seed), gap=g[seed], closed=c[seed], fraction=c[seed] / g[seed]))
        (gm, glo, ghi), (cm, clo, chi) = stats.t_interval(g), stats.t_interval(c)
        rows.append(dict(variant=variant, seed="mean", gap=gm, closed=cm, fraction=cm / gm,
                         gap_95=f"[{glo:+.0f}, {ghi:+.0f}]", closed_95=f"[{clo:+.0f}, {chi:+.0f}]"))
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Means over seeds per setting ``keys``: runs, matched level, epoch there, test accuracy
    at E* and at the selected checkpoint, R_IG, V and V/R_IG at E*, R_IG at the checkpoint,
    λ_max at E* and at the checkpoint (measured there over the curvature subset)."""
    if frame.empty:
        return pd.DataFrame()
    f = frame.assign(v_over_r_ig_at_E=frame["grad_variance_at_E"] / frame["r_ig_at_E"])
    cols = ["E_match", "epoch_at_E", "test_acc_at_E", "test_acc", "r_ig_at_E", "grad_variance_at_E",
            "v_over_r_ig_at_E", "r_ig", "lambda_max_at_E", "lambda_max"]
    out = f.groupby(list(keys))[[c for c in cols if c in f]].mean()
    out.insert(0, "runs", f.groupby(list(keys)).size())
    return out


def trajectories(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`igrlib.experiments.common.trajectories` of ``frame`` with its ``batch``, ``beta``
    and ``method`` columns (for plots of E, R_IG and V along training)."""
    traj = common.trajectories(frame)
    extra = frame.set_index("id")[["batch", "beta", "method"]]
    return traj.drop(columns=[c for c in ("method",) if c in traj]).join(extra, on="id")


def describe(configs: Sequence[Mapping[str, Any]], profile: str | None = None) -> str:
    """What a grid runs, from the configs and the profile's arm settings, for the protocol
    paragraph (so the text cannot drift from the grid)."""
    spec = PROFILES[resolve_profile(profile)]
    trains = [c["train"] for c in configs]
    main = [t for t in trains if t["n_train"] != spec["gd_n_train"]]
    t0 = main[0]
    seeds = sorted({t["seed"] for t in trains})
    gd = [t for t in trains if t["n_train"] == spec["gd_n_train"]]
    gd_text = (f"GD arm: {gd[0]['n_train']} training images, GD at h = {spec['gd_h']:g} for "
               f"{spec['gd_epochs']} steps beside SGD at B ∈ {list(spec['gd_batch_sizes'])} for "
               f"{t0['epochs']} epochs." if gd else "No GD arm at this profile.")
    penalty = [t for t in gd if t["method"] == "var_penalty"]
    if penalty:
        steps = sorted({(t["learning_rate"], t["epochs"]) for t in penalty})
        gd_text += (f" Penalty arm: full-batch GD at (h, steps) ∈ {[(h, n) for h, n in steps]} on "
                    f"E + (λ/4)·(1/K)Σ_k‖∇Ê_k − ∇Ē‖², λ = {penalty[0]['hparams']['lam']:g}, micro-batches "
                    f"of b = {penalty[0]['hparams']['micro_batch']} (K = {penalty[0]['n_train'] // penalty[0]['hparams']['micro_batch']}) "
                    f"re-drawn every step, evaluated every {penalty[0]['eval_every']} steps like GD.")
        own = sorted({(t["learning_rate"], t["epochs"]) for t in gd
                      if t["method"] == "gd" and t["learning_rate"] != spec["gd_h"]})
        if own:
            gd_text += f" GD without the penalty at (h, steps) ∈ {[(h, n) for h, n in own]}."
    methods = sorted({t["method"] for t in main if t["method"] != "sgd"})
    return (f"{len(configs)} runs, seeds {seeds}. MLP: {t0['depth']} hidden {t0['activation']} layers of "
            f"{t0['width']} units, cross-entropy. Main subset: {t0['n_train'] or 'all'} training images "
            f"(class-balanced), {t0['n_val']} validation images, {t0['n_test'] or 'all'} test images; "
            f"{t0['epochs']} epochs, evaluated every {t0['eval_every']}, probed every "
            f"{t0['probe_every'] * t0['eval_every']} epochs (V over the first {t0['probe_examples']} "
            f"training images" + (f", λ_max by {t0['probe_lanczos_iters']} Lanczos steps"
                                  if "lambda_max" in t0["probes"] else "") + "). Batch arm: SGD at "
            f"h = {spec['h']:g}, B ∈ {sorted({t['batch_size'] for t in main if t['method'] == 'sgd'})}; "
            f"ratio arm: h/B = {spec['h']:g}/{spec['ratio_anchor']}; momentum arm: "
            f"{', '.join(methods) or 'none'} at B = {spec['ratio_anchor']}, β ∈ {list(spec['betas'])}, "
            f"h = {spec['h']:g}(1 − β). {gd_text} Checkpoint: maximal validation accuracy.")
