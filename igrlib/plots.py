"""Plots of sweep results shared by the network chapters (MNIST, EGR, CIFAR-10).

Each function takes the tidy frame of an experiment (``experiments.*.tidy``) and returns a
matplotlib Figure; chapters add captions and save them with :func:`igrlib.io.figures.save`. Runs
that were not kept (diverged, collapsed, below the training-accuracy threshold) are drawn as
grey crosses where they have a value and counted in the legend, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

EXCLUDED_STYLE = dict(marker="x", color="0.6", s=22, linewidths=1.0)


def _palette(values: Sequence) -> dict:
    values = sorted(set(values))
    cmap = plt.get_cmap("viridis")
    # stop short of viridis' pale yellow end, which vanishes on a white background
    return {v: cmap(0.85 * i / max(1, len(values) - 1)) for i, v in enumerate(values)}


def scatter_by(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, hue: str = "width",
               logx: bool = True, logy: bool = False, hue_label: str = "width") -> None:
    """Kept runs coloured by ``hue``; other runs (``category != "kept"``) as grey crosses."""
    kept = df[df["category"] == "kept"]
    other = df[df["category"] != "kept"]
    colours = _palette(df[hue])
    for value, group in kept.groupby(hue):
        ax.scatter(group[x], group[y], color=colours[value], s=28, label=f"{hue_label} {value}",
                   edgecolor="white", linewidth=0.4)
    shown = other[np.isfinite(other[y].astype(float))] if y in other and len(other) else other
    if len(other):
        ax.scatter(shown[x], shown[y], label=f"not kept ({len(other)}: {_reasons(other)})",
                   **EXCLUDED_STYLE)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short decades
    if logy:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(x)
    ax.set_ylabel(y)


def _reasons(df: pd.DataFrame) -> str:
    return ", ".join(f"{n} {c}" for c, n in df["category"].value_counts().items())


def figure2(df: pd.DataFrame) -> Figure:
    """Figure 2: R_IG against λ = hm/4 and test accuracy against λ (log λ axis)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    scatter_by(axes[0], df, "lambda", "r_ig", logy=True)
    axes[0].set(xlabel="λ = h·m/4", ylabel="R_IG = ‖∇E‖²/m (full training split)")
    scatter_by(axes[1], df, "lambda", "test_acc")
    axes[1].set(xlabel="λ = h·m/4", ylabel="test accuracy at the selected evaluation")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def figure3(df: pd.DataFrame) -> Figure:
    """Figure 3 (flatness): ‖∇E‖, λ_max, tr H and h·λ_max against the learning rate h."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (column, label) in zip(axes, [("grad_norm", "slope ‖∇E‖"),
                                          ("lambda_max", "top Hessian eigenvalue λ_max"),
                                          ("hessian_trace", "Hessian trace (Hutchinson)")]):
        scatter_by(ax, df, "learning_rate", column, logy=True)
        ax.set(xlabel="learning rate h", ylabel=label)
    frame = df.assign(h_lambda=df["learning_rate"] * df["lambda_max"])
    scatter_by(axes[3], frame, "learning_rate", "h_lambda", logy=True)
    axes[3].axhline(2.0, color="k", ls="--", lw=1)
    axes[3].text(axes[3].get_xlim()[0], 2.0, " h·λ_max = 2", va="bottom", fontsize=8)
    axes[3].set(xlabel="learning rate h", ylabel="h · λ_max")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def robustness_curves(runs: pd.DataFrame, metric: str = "test_acc") -> Figure:
    """Test accuracy against parameter-noise size σ, one line per learning rate (mean over seeds,
    band: ± the standard error over seeds), one panel per width."""
    rows = []
    for _, run in runs[runs["category"] == "kept"].iterrows():
        table = pd.DataFrame(run["extra"].get("robustness", {}))
        if table.empty:
            continue
        table = table[table["metric"] == metric]
        rows.append(table.assign(width=run["width"], learning_rate=run["learning_rate"], seed=run["seed"]))
    widths = sorted(runs["width"].unique())
    fig, axes = plt.subplots(1, len(widths), figsize=(4 * len(widths), 3.6), squeeze=False, sharey=True)
    if not rows:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no kept runs", ha="center", transform=ax.transAxes)
        return fig
    df = pd.concat(rows)
    colours = _palette(runs["learning_rate"])
    for ax, width in zip(axes[0], widths):
        for lr, group in df[df["width"] == width].groupby("learning_rate"):
            per_sigma = group.groupby("sigma")["mean"]
            mean, se = per_sigma.mean(), per_sigma.sem().fillna(0)
            ax.plot(mean.index, mean, "o-", color=colours[lr], label=f"h={lr:g}", ms=3)
            ax.fill_between(mean.index, mean - se, mean + se, color=colours[lr], alpha=0.2)
        ax.set(title=f"width {width}", xlabel="relative noise σ")
    axes[0][0].set_ylabel(metric.replace("_", " "))
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame, metric: str = "test_acc") -> Figure:
    """``metric`` against epoch, one panel per width, one line per (learning rate, seed)."""
    widths = sorted(history["width"].unique())
    fig, axes = plt.subplots(1, len(widths), figsize=(4 * len(widths), 3.4), squeeze=False, sharey=True)
    colours = _palette(history["learning_rate"])
    for ax, width in zip(axes[0], widths):
        sub = history[history["width"] == width]
        for (lr, seed), run in sub.groupby(["learning_rate", "seed"]):
            ax.plot(run["epoch"], run[metric], color=colours[lr], lw=1,
                    label=f"h={lr:g}" if seed == sub["seed"].min() else None)
        ax.set(title=f"width {width}", xlabel="epoch")
    axes[0][0].set_ylabel(metric.replace("_", " "))
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def landscape_slices(small: pd.Series, large: pd.Series) -> Figure:
    """1-D and 2-D loss slices (filter-normalised directions) of a small-h and a large-h solution."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for run, style in ((small, "-"), (large, "--")):
        s1 = run["extra"]["slice_1d"]
        axes[0].plot(s1["alpha"], s1["loss"], style, label=f"h={run['learning_rate']:g}")
    axes[0].set(xlabel="α (filter-normalised direction)", ylabel="training loss", yscale="log")
    axes[0].legend()
    for ax, run in zip(axes[1:], (small, large)):
        s2 = run["extra"]["slice_2d"]
        a = np.asarray(s2["alpha"])
        z = np.log10(np.asarray(s2["loss"]))
        cs = ax.contourf(a, a, z.T, levels=12)
        fig.colorbar(cs, ax=ax, label="log₁₀ loss")
        ax.set(title=f"h={run['learning_rate']:g}, width {run['width']}", xlabel="α", ylabel="β")
    fig.tight_layout()
    return fig
