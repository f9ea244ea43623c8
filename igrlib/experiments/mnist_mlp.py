"""Figures 2 and 3: deep ReLU MLPs on MNIST over widths × learning rates × seeds (PAPER.md §4).

Protocol: 5 hidden layers of ``width`` ReLU units (our reading of "5-layer"), cross-entropy,
mini-batch SGD with batch 512; keep the networks that reach the training-accuracy threshold
(100 % in the paper) and report each at its evaluation of maximal test accuracy, with R_IG over
the whole training split there.

Profiles (:data:`PROFILES`): ``paper`` is the paper's grid on the full data; ``cpu`` is a reduced
grid (3 widths, 4 learning rates, 3 seeds, a 10k-example training subset, an epoch budget) that
a 2-core machine runs in minutes; ``smoke`` only checks that everything runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from igrlib.maths import stats
from igrlib.config import axis_values, check_keys, resolve_profile
from igrlib.experiments import common
from igrlib.measurement.measure import MeasureConfig
from igrlib.training.train import TrainConfig

NAME = "mnist_mlp"
PAPER_WIDTHS = (50, 100, 200, 400, 800, 1600)
PAPER_LEARNING_RATES = (0.5, 0.1, 0.05, 0.01, 0.005, 0.001, 0.0005)

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        axes=dict(width=(16,), learning_rate=(0.2, 0.1, 0.05), seed=(0, 1)),
        base=dict(epochs=6, batch_size=256, n_train=1024, n_test=512, eval_every=1,
                  thresholds=(0.5, 0.3)),
        measure=dict(curvature_examples=256, curvature_batch=128, lanczos_iters=6, trace_samples=4,
                     slope_directions=3, noise_draws=2, sigmas=(0.0, 0.1, 0.3),
                     slice_points_1d=5, slice_points_2d=3),
    ),
    "cpu": dict(
        axes=dict(width=(50, 100, 200), learning_rate=(0.5, 0.1, 0.05, 0.01), seed=(0, 1, 2)),
        base=dict(epochs=150, n_train=10_000, n_test=10_000, eval_every=2, patience=10),
        measure=dict(),
    ),
    "paper": dict(
        axes=dict(width=PAPER_WIDTHS, learning_rate=PAPER_LEARNING_RATES, seed=(0, 1, 2)),
        base=dict(epochs=2000, eval_every=1, patience=20),
        measure=dict(curvature_examples=10_240, trace_samples=50, noise_draws=10),
    ),
}
BASE = dict(dataset="mnist", model="mlp", depth=5, activation="relu", optimizer="sgd",
            batch_size=512, thresholds=(1.0, 0.99))
AXES = ("width", "learning_rate", "seed")


def grid(profile: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The run configs of ``profile``; ``overrides`` replace axes (``width``, ``learning_rate``,
    ``seed``: sequences) or training fields (``epochs``, ``thresholds``, ``optimizer``, …).
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
# Analysis


def tidy(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """One row per run with the config axes, λ, metrics and a ``category``:

    ``kept`` (status ok and training accuracy reached ``threshold``), ``below threshold``,
    ``diverged``, ``collapsed`` or ``failed``.
    """
    if runs.empty:
        return runs
    df = runs.copy()
    tag = f"{threshold:g}".replace(".", "p")
    reached = df.get(f"reached_{tag}")
    if reached is None:
        raise KeyError(f"threshold {threshold} was not tracked; rerun with it in `thresholds`")
    df["category"] = np.where(df["status"] != "ok", df["status"],
                              np.where(reached.fillna(False).astype(bool), "kept", "below threshold"))
    df["test_acc_at_threshold"] = df.get(f"test_acc_at_{tag}")
    df["r_ig_over_loss"] = df["r_ig"] / df["train_loss_full"]
    return df


def findings(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """The "What we found" table for Predictions 2.1–2.4 at one training-accuracy threshold.

    Spearman ρ with a bootstrap-over-seeds 95 % interval, pooled over widths and within each
    width (the learning rate's own effect, since λ = hm/4 mixes h and the width).
    """
    df = tidy(runs, threshold)
    kept = df[df["category"] == "kept"]
    rows = []

    def add(claim: str, frame: pd.DataFrame, x: str, y: str, sign: int, what: str) -> None:
        rows.append(stats.finding(claim, frame, x, y, sign, what))

    add("2.1 R_IG falls as λ grows", kept, "lambda", "r_ig", -1, "ρ(λ, R_IG), pooled")
    add("2.3 test accuracy rises with λ", kept, "lambda", "test_acc", +1, "ρ(λ, test acc), pooled")
    add("(confound) width alone", kept, "num_params", "test_acc", +1, "ρ(m, test acc), pooled")
    add("(confound) R_IG tracks the loss", kept, "train_loss_full", "r_ig", +1, "ρ(E, R_IG), pooled")
    add("2.1 at matched loss", kept, "lambda", "r_ig_over_loss", -1, "ρ(λ, R_IG/E), pooled")
    for width, group in kept.groupby("width"):
        add(f"2.1 within width {width}", group, "learning_rate", "r_ig", -1, "ρ(h, R_IG)")
        add(f"2.3 within width {width}", group, "learning_rate", "test_acc", +1, "ρ(h, test acc)")
        add(f"2.2 within width {width}", group, "learning_rate", "lambda_max", -1, "ρ(h, λ_max)")
    add("2.2 flatter: slope falls with h", kept, "learning_rate", "grad_norm", -1, "ρ(h, ‖∇E‖), pooled")
    add("2.2 flatter: λ_max falls with h", kept, "learning_rate", "lambda_max", -1, "ρ(h, λ_max), pooled")
    add("2.2 flatter: trace falls with h", kept, "learning_rate", "hessian_trace", -1, "ρ(h, tr H), pooled")
    rob = robustness_at(kept)
    if not rob.empty:
        sigma = rob["sigma"].iloc[0]
        add(f"2.4 robust to noise (σ={sigma:g}, relative)", rob, "learning_rate", "noisy_test_acc", +1,
            "ρ(h, noisy test acc), pooled")
    table = pd.DataFrame(rows)
    table.insert(0, "threshold", f"{threshold:.0%}")
    return table


def counts(runs: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """How many runs fall in each category, per width and learning rate."""
    df = tidy(runs, threshold)
    return (df.groupby(["width", "learning_rate", "category"]).size().unstack("category", fill_value=0))


def robustness_at(runs: pd.DataFrame, sigma: float | None = None) -> pd.DataFrame:
    """Mean test accuracy under noise of size ``sigma`` (default: the largest σ whose mean accuracy,
    over runs, stays above 50 %), one row per run."""
    rows = []
    for _, run in runs.iterrows():
        table = pd.DataFrame(run["extra"].get("robustness", {}))
        if table.empty:
            continue
        acc = table[table["metric"] == "test_acc"]
        for _, r in acc.iterrows():
            rows.append(dict(id=run["id"], width=run["width"], learning_rate=run["learning_rate"],
                             seed=run["seed"], sigma=r["sigma"], noisy_test_acc=r["mean"]))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if sigma is None:
        means = df.groupby("sigma")["noisy_test_acc"].mean()
        ok = means[(means > 0.5) & (means.index > 0)]
        sigma = float(ok.index.max()) if len(ok) else float(means.index.max())
    return df[np.isclose(df["sigma"], sigma)].reset_index(drop=True)


def history_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table of every evaluation of every run: width, learning_rate, seed, epoch, metrics."""
    rows = []
    for _, run in runs.iterrows():
        h = pd.DataFrame(run["history"])
        for col in ("width", "learning_rate", "seed", "status"):
            h[col] = run[col]
        rows.append(h)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def describe(configs: Sequence[Mapping[str, Any]]) -> str:
    """One sentence describing a grid (for captions and the chapter's protocol paragraph)."""
    trains = [c["train"] for c in configs]
    widths = sorted({t["width"] for t in trains})
    lrs = sorted({t["learning_rate"] for t in trains}, reverse=True)
    seeds = sorted({t["seed"] for t in trains})
    t0 = trains[0]
    n_train = t0["n_train"] or 60_000
    return (f"{len(configs)} runs: widths {widths}, learning rates {lrs}, {len(seeds)} seeds; "
            f"{t0['depth']} hidden layers, {t0['optimizer'].upper()} batch {t0['batch_size']}, "
            f"{n_train} training examples, at most {t0['epochs']} epochs")
