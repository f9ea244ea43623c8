"""Figures 2 and 3: deep ReLU MLPs on MNIST, widths × learning rates × seeds (Barrett & Dherin 2021, Section 5).

Protocol: 5 hidden layers of ``width`` ReLU units (our reading of "5-layer"), cross-entropy,
mini-batch SGD with batch 512; keep the networks that reach the training-accuracy threshold
(100 % in the paper) and report each at its evaluation of maximal test accuracy, with R_IG over
the whole training split there.

Profiles (:data:`PROFILES`): ``paper`` is the paper's grid on the full data; ``cpu`` is a reduced
grid (3 widths, 4 learning rates, 3 seeds, a 10k-example training subset, an epoch budget) that
a 2-core machine runs in minutes; ``smoke`` only checks that everything runs. ``seeds_b`` is a
second seed set, disjoint from the first, on which the chapter recomputes every verdict
(:func:`seed_set_b`, :func:`with_seed_sets`); empty: the profile has none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from igrlib.maths import stats
from igrlib.config import ConfigError, axis_values, check_keys, resolve_profile
from igrlib.experiments import common
from igrlib.measurement.measure import MeasureConfig
from igrlib.training.config import TrainConfig

NAME = "mnist_mlp"
PAPER_WIDTHS = (50, 100, 200, 400, 800, 1600)
PAPER_LEARNING_RATES = (0.5, 0.1, 0.05, 0.01, 0.005, 0.001, 0.0005)

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        axes=dict(width=(16,), learning_rate=(0.2, 0.1, 0.05), seed=(0, 1)),
        base=dict(epochs=6, batch_size=256, n_train=1024, n_val=512, n_test=512, eval_every=1,
                  thresholds=(0.5, 0.3), probe_every=2, probe_examples=128, probe_lanczos_iters=4,
                  probe_trace_samples=2),
        measure=dict(curvature_examples=256, curvature_batch=128, lanczos_iters=6, trace_samples=4,
                     slope_directions=3, noise_draws=2, sigmas=(0.0, 0.1, 0.3),
                     slice_points_1d=5, slice_points_2d=3),
        seeds_b=(),
    ),
    "cpu": dict(
        axes=dict(width=(50, 100, 200), learning_rate=(0.5, 0.1, 0.05, 0.01), seed=(0, 1, 2, 3, 4)),
        base=dict(epochs=150, n_train=10_000, n_val=5_000, n_test=10_000, eval_every=2, patience=10,
                  probe_every=6, probe_examples=512, probe_lanczos_iters=8, probe_trace_samples=4),
        measure=dict(),
        seeds_b=(5, 6, 7, 8, 9),
    ),
    "paper": dict(
        axes=dict(width=PAPER_WIDTHS, learning_rate=PAPER_LEARNING_RATES, seed=(0, 1, 2)),
        base=dict(epochs=2000, eval_every=1, patience=20, n_val=5_000, probe_every=10,
                  probe_examples=2048),
        measure=dict(curvature_examples=10_240, trace_samples=50, noise_draws=10),
        seeds_b=(),
    ),
}
BASE = dict(dataset="mnist", model="mlp", depth=5, activation="relu", method="sgd",
            batch_size=512, thresholds=(1.0, 0.99), selection="validation")
AXES = ("width", "learning_rate", "seed")


def grid(profile: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The run configs of ``profile``; ``overrides`` replace axes (``width``, ``learning_rate``,
    ``seed``: sequences) or training fields (``epochs``, ``thresholds``, ``selection``, …).
    Every value is validated here, before any compute."""
    spec = PROFILES[resolve_profile(profile)]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    axes = {k: axis_values(k, overrides.pop(k, v)) for k, v in spec["axes"].items()}
    check_keys(overrides, [f.name for f in dataclasses.fields(TrainConfig)], "mnist_mlp override")
    base = {**BASE, **spec["base"], **overrides}
    return common.make_grid(base, axes, MeasureConfig(**spec["measure"]))


group_key = common.group_key
group_size = common.group_size
run_group = common.run_group


# ---------------------------------------------------------------------------------------------
# A targeted run for the within-width accuracy effect

#: The within-width rise of test accuracy with h seen on the 10k subset at ``cpu``: does it hold
#: on the full training set? One width, three learning rates, five seeds, the rest of the ``cpu``
#: protocol (about 6x the cost per run of the subset for 6x the data: roughly 15 runs x 1-2 min).
WITHIN_WIDTH = dict(width=(100,), learning_rate=(0.1, 0.05, 0.01), seed=(0, 1, 2, 3, 4))


def within_width_grid(seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The run configs of :data:`WITHIN_WIDTH` (``seeds`` replaces its seeds), validated now."""
    axes = dict(width=WITHIN_WIDTH["width"], learning_rate=WITHIN_WIDTH["learning_rate"],
                seed=tuple(WITHIN_WIDTH["seed"] if seeds is None else seeds))
    base = {**BASE, **PROFILES["cpu"]["base"], "n_train": None}
    return common.make_grid(base, axes, MeasureConfig(**PROFILES["cpu"]["measure"]))


class _WithinWidthRun:
    """:data:`WITHIN_WIDTH` as an experiment of :mod:`igrlib.sweep`, filed in its own store
    (``data/results/cpu/mnist_mlp_within_width``) so that it never mixes with the chapter's grid:
    ``.venv/bin/python -m igrlib.sweep igrlib.experiments.mnist_mlp:WITHIN_WIDTH_RUN``."""

    NAME = "mnist_mlp_within_width"
    group_key = staticmethod(common.group_key)
    group_size = staticmethod(common.group_size)
    run_group = staticmethod(common.run_group)

    def grid(self, profile: str | None = None, seed: Sequence[int] | None = None) -> list[dict[str, Any]]:
        if resolve_profile(profile) != "cpu":
            raise ConfigError(f"the targeted within-width run is defined at the cpu profile only, "
                              f"not {profile!r}")
        return within_width_grid(seed)


WITHIN_WIDTH_RUN = _WithinWidthRun()


# ---------------------------------------------------------------------------------------------
# Analysis

#: Test-set size when a config leaves ``n_test`` unset (the full MNIST test split).
FULL_TEST = 10_000


def tidy(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """One row per run with the config axes, λ, metrics and a ``category``:

    ``kept`` (status ok and training accuracy reached ``threshold``), ``below threshold``,
    ``diverged``, ``collapsed`` or ``failed``. Added columns: ``log10_r_ig``, ``n_test_images``
    (the test-set size) and ``stability_product`` = h·λ_max·(1 + 2μλ_max), the factor by which a
    step of rate h on E + μ‖∇E‖² multiplies the error along the top Hessian eigenvector on a
    quadratic is 1 − that product, so linear stability needs it below 2 (μ = 0: h·λ_max).
    """
    if runs.empty:
        return runs
    df = runs.copy()
    # Only EGR configs carry μ; every other update rule is μ = 0.
    df["mu"] = df["mu"].fillna(0.0) if "mu" in df else 0.0
    tag = f"{threshold:g}".replace(".", "p")
    reached = df.get(f"reached_{tag}")
    if reached is None:
        raise KeyError(f"threshold {threshold} was not tracked; rerun with it in `thresholds`")
    df["category"] = np.where(df["status"] != "ok", df["status"],
                              np.where(reached.fillna(False).astype(bool), "kept", "below threshold"))
    df["test_acc_at_threshold"] = df.get(f"test_acc_at_{tag}")
    df["log10_r_ig"] = np.log10(df["r_ig"].where(df["r_ig"] > 0))
    n_test = df["n_test"] if "n_test" in df else pd.Series(np.nan, index=df.index)
    df["n_test_images"] = n_test.fillna(FULL_TEST).astype(int)
    mu = df["mu"].fillna(0.0) if "mu" in df else 0.0  # plain runs may carry no μ
    if "lambda_max" in df:
        df["stability_product"] = df["learning_rate"] * df["lambda_max"] * (1 + 2 * mu * df["lambda_max"])
    return df


def test_images_scale(frame: pd.DataFrame) -> tuple[float, str]:
    """The scale that turns an accuracy difference into test images, for a paired effect."""
    sizes = frame["n_test_images"].unique() if "n_test_images" in frame else [FULL_TEST]
    return float(sizes[0]) if len(sizes) == 1 else 1.0, "test images" if len(sizes) == 1 else "accuracy"


def unsurvived_rates(df: pd.DataFrame) -> list[float]:
    """Learning rates at which some run diverged or collapsed: their kept runs are survivors."""
    lost = df[df["status"].isin(["diverged", "collapsed"])]
    return sorted(lost["learning_rate"].unique())


def _within_width_rows(kept: pd.DataFrame, rob: pd.DataFrame) -> list[dict]:
    """Per width, the learning rate's own effect on R_IG, test accuracy, λ_max, slope and the
    accuracy drop under noise (rows of :func:`igrlib.maths.stats.finding`)."""
    rows = []
    for width, group in kept.groupby("width"):
        images = test_images_scale(group)

        def add(claim, frame, y, sign, what, effect=None):
            rows.append(stats.finding(f"{claim[:3]} within width {width}: {claim[4:]}", frame,
                                      "learning_rate", y, sign, what, effect=effect, about_minima=True))

        add("2.1 R_IG falls with h", group, "log10_r_ig", -1, "ρ(h, R_IG)", (1.0, "decades of R_IG"))
        add("2.3 test accuracy rises with h", group, "test_acc", +1, "ρ(h, test acc)", images)
        add("2.2 λ_max falls with h", group, "lambda_max", -1, "ρ(h, λ_max)", (1.0, "λ_max"))
        add("2.2 slope falls with h", group, "mean_abs_slope", -1, "ρ(h, mean |slope|)")
        if not rob.empty:
            add("2.4 noise costs less accuracy with h", rob[rob["width"] == width], "robustness_drop", -1,
                f"ρ(h, accuracy drop at σ={rob['sigma'].iloc[0]:g})", images)
    return rows


def _kept(runs: pd.DataFrame, threshold: float, exclude_rates: Sequence[float] = ()) -> pd.DataFrame:
    df = tidy(runs, threshold)
    return df[(df["category"] == "kept") & ~df["learning_rate"].isin(list(exclude_rates))]


def findings(runs: pd.DataFrame, threshold: float = 1.0,
             exclude_rates: Sequence[float] = ()) -> pd.DataFrame:
    """The "What we found" table for Predictions 2.1–2.4 at one training-accuracy threshold.

    Within-width rows first (the learning rate's own effect: λ = hm/4 mixes h and the width),
    pooled rows after. Each row: per-seed Spearman ρ and their sign consistency, the stratified
    permutation p-value in the predicted direction and its Holm adjustment over the table, the
    paired within-seed effect between two learning rates (accuracies in test images), and the
    verdict of :func:`igrlib.maths.stats.verdict`. Slope is the mean random-direction slope
    ``mean_abs_slope`` (‖∇E‖ = √(m R_IG) would repeat 2.1); robustness is the accuracy *drop*
    under parameter noise. ``exclude_rates`` drops the runs of those learning rates (see
    :func:`survivorship`).
    """
    kept = _kept(runs, threshold, exclude_rates)
    rob = robustness_at(kept)
    rows = _within_width_rows(kept, rob)

    def add(claim, frame, x, y, sign, what, minima=True):
        rows.append(stats.finding(claim, frame, x, y, sign, what, about_minima=minima))

    add("2.1 R_IG falls as λ grows", kept, "lambda", "r_ig", -1, "ρ(λ, R_IG), pooled")
    add("2.3 test accuracy rises with λ", kept, "lambda", "test_acc", +1, "ρ(λ, test acc), pooled")
    add("(confound) width alone", kept, "num_params", "test_acc", +1, "ρ(m, test acc), pooled", minima=False)
    add("(confound) R_IG tracks the loss", kept, "train_loss_full", "r_ig", +1, "ρ(E, R_IG), pooled",
        minima=False)
    add("2.2 flatter: slope falls with h", kept, "learning_rate", "mean_abs_slope", -1,
        "ρ(h, mean |slope|), pooled")
    add("2.2 flatter: λ_max falls with h", kept, "learning_rate", "lambda_max", -1, "ρ(h, λ_max), pooled")
    add("2.2 flatter: trace falls with h", kept, "learning_rate", "hessian_trace", -1, "ρ(h, tr H), pooled")
    if not rob.empty:
        add(f"2.4 noise costs less accuracy with h (σ={rob['sigma'].iloc[0]:g}, relative)", rob,
            "learning_rate", "robustness_drop", -1, "ρ(h, clean − noisy test acc), pooled")
    return stats.finish(rows, threshold)


def within_width_findings(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """The within-width rows of :func:`findings` alone (Holm over these rows), for the targeted
    full-training-set run of :data:`WITHIN_WIDTH`, where one width leaves nothing to pool."""
    kept = _kept(runs, threshold)
    return stats.finish(_within_width_rows(kept, robustness_at(kept)), threshold)


def seed_set_b(profile: str | None, seeds_b: Sequence[int] | None, seeds_a: Sequence[int],
               profiles: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[int, ...]:
    """The second seed set of a chapter: ``seeds_b`` (None: the profile's ``seeds_b`` entry of
    ``profiles``, default :data:`PROFILES`; an empty list: none), checked to share no seed with
    ``seeds_a``, the seeds of the first set: a verdict that holds on both then rests on
    independent runs. Raises :class:`ConfigError` on an overlap, a seed that is not an int ≥ 0 or a scalar."""
    spec = (PROFILES if profiles is None else profiles)[resolve_profile(profile)]
    if seeds_b is not None and not isinstance(seeds_b, (list, tuple)):
        raise ConfigError(f"seeds_b must be a list of seeds (not a count: it must avoid the first "
                          f"set), got {seeds_b!r}")
    chosen = tuple(spec["seeds_b"] if seeds_b is None else seeds_b)
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in chosen):
        raise ConfigError(f"seeds_b must be integers >= 0, got {list(chosen)!r}")
    shared = sorted(set(chosen) & set(seeds_a))
    if shared:
        raise ConfigError(f"seeds_b must be disjoint from the first seed set {sorted(set(seeds_a))}; "
                          f"both hold {shared}")
    return tuple(int(s) for s in chosen)


def with_seed_sets(table_a: pd.DataFrame, table_b: pd.DataFrame | None) -> pd.DataFrame:
    """A findings table computed on seed set A with the verdict on the disjoint set B beside each
    row (:func:`igrlib.maths.stats.compare_seed_sets`): columns ``value`` and ``verdict (A)``
    from A, ``verdict (B)``, ``stability`` ("holds on both seed sets" or "unstable") and
    ``verdict``, the common verdict or "unstable", so a row says *reproduced* only when both
    sets say it. ``table_b`` None (no second set): ``table_a`` unchanged."""
    if table_b is None:
        return table_a
    keys = [k for k in ("threshold", "claim") if k in table_a and k in table_b]
    both = stats.compare_seed_sets(table_a, table_b, keys)
    # A's rows in A's order (an outer merge sorts its keys), then any row only B could compute
    rest = table_a.drop(columns=["verdict", "value"])
    out = rest[keys].merge(both, on=keys, how="outer", sort=False, indicator=True)
    out = pd.concat([rest.merge(both, on=keys, how="left", sort=False),
                     out[out["_merge"] == "right_only"].drop(columns="_merge")], ignore_index=True)
    out = out.rename(columns={"value_A": "value", "verdict_A": "verdict (A)", "verdict_B": "verdict (B)"})
    return out.drop(columns=["value_B"])


def seed_sets_note(seeds_a: Sequence[int], seeds_b: Sequence[int]) -> str:
    """One Markdown sentence saying on which seed sets the verdicts rest."""
    if not seeds_b:
        return (f"**Seed sets.** This profile has no second seed set (`seeds_b` is empty): every "
                f"verdict rests on seeds {sorted(seeds_a)} alone and none is checked for stability.")
    return (f"**Seed sets.** Every verdict is computed twice, on seeds A = {sorted(seeds_a)} and on "
            f"the disjoint seeds B = {sorted(seeds_b)}; *verdict* keeps it only where both agree "
            f"and says *unstable* otherwise, so *reproduced* means reproduced on both.")


def survivorship(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """The findings with and without the learning rates some of whose runs diverged or collapsed
    (:func:`unsurvived_rates`): their kept runs are survivors, selected by the dynamics, and
    supply the extreme points of the pooled trends. One row per claim: both verdicts and values."""
    lost = unsurvived_rates(tidy(runs, threshold))
    every = findings(runs, threshold)
    if not lost:
        return every.assign(without="(no learning rate lost a run)")
    without = findings(runs, threshold, exclude_rates=lost)
    label = f"without h ∈ {{{', '.join(f'{h:g}' for h in lost)}}}"
    merged = every[["threshold", "claim", "value", "verdict"]].merge(
        without[["claim", "value", "verdict"]], on="claim", how="left", suffixes=("", f" ({label})"))
    return merged


def stability_table(runs: pd.DataFrame, threshold: float = 1.0,
                    keys: Sequence[str] = ("width", "learning_rate")) -> pd.DataFrame:
    """Per setting: the kept runs' h·λ_max·(1 + 2μλ_max) at the checkpoint (mean, min, max). A
    value near a constant across settings is what linear stability alone predicts (sharpness
    settles at a fixed fraction of its bound 2), with or without implicit regularization."""
    df = tidy(runs, threshold)
    kept = df[df["category"] == "kept"]
    keys = [k for k in keys if k in kept]
    return kept.groupby(keys)["stability_product"].agg(["count", "mean", "min", "max"])


def counts(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """How many runs fall in each category, per width and learning rate."""
    df = tidy(runs, threshold)
    return (df.groupby(["width", "learning_rate", "category"]).size().unstack("category", fill_value=0))


def robustness_at(runs: pd.DataFrame, sigma: float | None = None) -> pd.DataFrame:
    """Per run, the mean test accuracy under relative parameter noise of size ``sigma`` (default:
    the largest σ whose mean accuracy over runs stays above 50 %), its clean accuracy (σ = 0)
    and ``robustness_drop`` = clean − noisy (a fraction of the test set). Runs without a
    robustness measurement are skipped."""
    rows = []
    for _, run in runs.iterrows():
        extra = run["extra"] if isinstance(run.get("extra"), dict) else {}
        table = pd.DataFrame(extra.get("robustness", {}))
        if table.empty:
            continue
        acc = table[table["metric"] == "test_acc"]
        clean = acc.loc[acc["sigma"] == 0, "mean"]
        for _, r in acc.iterrows():
            rows.append(dict(id=run["id"], width=run["width"], learning_rate=run["learning_rate"],
                             seed=run["seed"], sigma=r["sigma"], noisy_test_acc=r["mean"],
                             clean_test_acc=float(clean.iloc[0]) if len(clean) else np.nan,
                             train_loss_full=run.get("train_loss_full", np.nan),
                             n_test_images=run.get("n_test_images", FULL_TEST)))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["robustness_drop"] = df["clean_test_acc"] - df["noisy_test_acc"]
    if sigma is None:
        means = df.groupby("sigma")["noisy_test_acc"].mean()
        ok = means[(means > 0.5) & (means.index > 0)]
        sigma = float(ok.index.max()) if len(ok) else float(means.index.max())
    return df[np.isclose(df["sigma"], sigma)].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Trajectories: comparisons at matched training loss

#: History columns of the trajectory probes (lists aligned with ``probe_step``).
PROBES = {"r_ig": "probe_r_ig", "lambda_max": "probe_lambda_max", "hessian_trace": "probe_hessian_trace"}
PROBE_LOSS = "probe_train_loss"


def matched_loss(runs: pd.DataFrame, targets: Sequence[float] = (0.1, 0.03, 0.01)) -> pd.DataFrame:
    """One row per run and target loss E*: the run's probes at its first probe where the
    training loss (full training split) is ≤ E*, so runs are compared at equal fit instead of at
    their checkpoints. Runs whose history has no ``probe_train_loss`` are skipped; a run that
    never reaches E* gives no row for it."""
    rows = []
    for _, run in runs.iterrows():
        history = run["history"] if isinstance(run.get("history"), dict) else {}
        if PROBE_LOSS not in history:
            continue
        loss = np.asarray(history[PROBE_LOSS], float)
        for target in targets:
            hit = np.flatnonzero(loss <= target)
            if not len(hit):
                continue
            i = hit[0]
            row = dict(id=run["id"], width=run.get("width"), learning_rate=run["learning_rate"],
                       seed=run["seed"], target=target, train_loss=loss[i],
                       train_loss_full=loss[i], step=history.get("probe_step", [np.nan] * len(loss))[i])
            for name, column in PROBES.items():
                values = history.get(column)
                row[name] = float(values[i]) if values is not None and values[i] is not None else np.nan
            rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df["log10_r_ig"] = np.log10(df["r_ig"].where(df["r_ig"] > 0))
    return df


def loss_exponents(runs: pd.DataFrame) -> pd.DataFrame:
    """Per learning rate (and width): k of R_IG ∝ E^k along each run's trajectory (least squares
    on the log-log probe points), mean and range over runs, and the partial correlation of log h
    with log R_IG given log E over every probe point of the group (also for λ_max and tr H): does
    the learning rate lower R_IG beyond what the lower loss explains?"""
    points = []
    for _, run in runs.iterrows():
        history = run["history"] if isinstance(run.get("history"), dict) else {}
        if PROBE_LOSS not in history:
            continue
        frame = pd.DataFrame({"E": history[PROBE_LOSS],
                              **{k: history.get(c, [np.nan] * len(history[PROBE_LOSS]))
                                 for k, c in PROBES.items()}}, dtype=float)
        frame["width"], frame["learning_rate"], frame["id"] = run.get("width"), run["learning_rate"], run["id"]
        points.append(frame)
    if not points:
        return pd.DataFrame()
    every = pd.concat(points, ignore_index=True)
    per_run = every.groupby(["width", "learning_rate", "id"]).apply(
        lambda g: stats.power_law_exponent(g["E"], g["r_ig"]), include_groups=False).rename("k")
    table = per_run.groupby(["width", "learning_rate"]).agg(k_mean="mean", k_min="min", k_max="max", runs="size")
    for width, group in every.groupby("width"):
        logs = {c: np.log(group[c].where(group[c] > 0)) for c in ("E", *PROBES)}
        for name in PROBES:
            table.loc[table.index.get_level_values("width") == width, f"partial_rho_h_{name}"] = (
                stats.partial_correlation(np.log(group["learning_rate"]), logs[name], logs["E"]))
    return table


def matched_loss_findings(runs: pd.DataFrame, targets: Sequence[float] = (0.1, 0.03, 0.01)) -> pd.DataFrame:
    """2.1 and 2.2 within each width at matched training loss (:func:`matched_loss`): does R_IG
    (λ_max, tr H) fall with h among runs compared at the same E*? Without trajectory probes in
    the records the table has one row saying so."""
    matched = matched_loss(runs, targets)
    if matched.empty:
        return stats.finish([dict(claim="2.1/2.2 at matched training loss", statistic="ρ(h, ·) at E ≤ E*",
                                  value=f"skipped: the records have no {PROBE_LOSS} history", p=np.nan,
                                  effect="", verdict="no evidence")], "matched E")
    rows = []
    for (width, target), group in matched.groupby(["width", "target"]):
        for y, label in (("log10_r_ig", "R_IG"), ("lambda_max", "λ_max"), ("hessian_trace", "tr H")):
            rows.append(stats.finding(f"{'2.1' if y == 'log10_r_ig' else '2.2'} width {width}, E* = {target:g}: "
                                      f"{label} falls with h", group, "learning_rate", y, -1,
                                      f"ρ(h, {label}) at the first E ≤ {target:g}"))
    return stats.finish(rows, "matched E")


def history_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table of every evaluation of every run: width, learning_rate, seed, epoch, metrics."""
    return common.history_frame(runs, ("width", "learning_rate", "seed", "status"))


def protocol(t0: Mapping[str, Any], m0: Mapping[str, Any], seeds: Sequence[int], full_train: int,
             full_test: int) -> str:
    """The training and measurement settings that shape a result, one clause each: data split
    sizes, evaluation interval, patience, thresholds, checkpoint selection, probes, seeds and the
    measurement settings. Fields a config does not have are left out."""
    n_val = t0.get("n_val") or 0
    n_train = (t0["n_train"] or full_train) - (n_val if t0["n_train"] is None else 0)
    split = f"{n_train:,} training, " + (f"{n_val:,} validation " if n_val else "") + \
        f"and {t0['n_test'] or full_test:,} test examples"
    selection = t0.get("selection", "test")
    rule = ("maximal validation accuracy" if selection == "validation"
            else "maximal test accuracy (the paper's rule)")
    patience = (f"a run stops {t0['patience']} evaluations after its last best once it reached "
                f"{t0['thresholds'][0]:.0%}" if t0.get("patience") is not None else "no early stop")
    probes = (f"; trajectory probes every {t0['probe_every']} evaluations on {t0['probe_examples']:,} "
              f"training examples" if t0.get("probe_every") else "")
    every = t0["eval_every"]
    return (f"{split}; evaluated every {every} epoch{'s' if every != 1 else ''}, at most "
            f"{t0['epochs']} epochs; {patience}; thresholds {', '.join(f'{t:.0%}' for t in t0['thresholds'])} "
            f"(a run counts at the first it reaches); checkpoint: the evaluation of {rule} at or above "
            f"the threshold{probes}; seeds {list(seeds)}; curvature on {m0['curvature_examples']:,} "
            f"training examples ({m0['lanczos_iters']} Lanczos steps, {m0['trace_samples']} Hutchinson "
            f"probes), slope over {m0['slope_directions']} random directions at radius "
            f"{m0['slope_radius']:g}, noise σ ∈ {list(m0['sigmas'])} ({m0['noise_mode']}, "
            f"{m0['noise_draws']} draws)")


def describe(configs: Sequence[Mapping[str, Any]]) -> str:
    """What a grid runs, with everything that shapes its results (for captions and the chapter's
    protocol paragraph, so they cannot drift from the grid)."""
    trains = [c["train"] for c in configs]
    widths = sorted({t["width"] for t in trains})
    lrs = sorted({t["learning_rate"] for t in trains}, reverse=True)
    seeds = sorted({t["seed"] for t in trains})
    t0 = trains[0]
    return (f"{len(configs)} runs: widths {widths}, learning rates {lrs}; {t0['depth']} hidden "
            f"layers, {t0['method'].upper()} batch {t0['batch_size']}; "
            + protocol(t0, configs[0]["measure"], seeds, 60_000, FULL_TEST))
