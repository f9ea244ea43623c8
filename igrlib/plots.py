"""Plots of sweep results shared by the network chapters (MNIST, EGR, CIFAR-10), and the
chapters' table helper.

Each plot function takes the tidy frame of an experiment (``experiments.*.tidy``) and a
``variant`` (``"paper"`` for the book, ``"slide"`` for a 16:9 slide; see
:mod:`igrlib.io.figures`) and returns a matplotlib Figure laid out for that variant; chapters save
both with ``figures.save(lambda v: plots.figure2(df, v), "fig2", ...)``. Runs that were not kept
(diverged, collapsed, below the training-accuracy threshold) are drawn as grey crosses where they
have a value and counted in the legend, never dropped silently. Labels are typeset with
matplotlib's mathtext ($R_{IG}$, $\\lambda_{max}$), as the chapters typeset them.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from igrlib.io import figures
from igrlib.io.figures import Variant

EXCLUDED_STYLE = dict(marker="x", color="0.5", linewidths=1.2)
#: Not-kept runs whose value lies outside a zoomed axis: drawn at the axis edge with this marker.
EDGE_STYLE = dict(marker="v", color="0.5", clip_on=False, zorder=3)
#: Axis labels in mathtext, as the chapters typeset them.
LABELS = {
    "lambda": r"$\lambda = hm/4$",
    "r_ig": r"$R_{IG} = \|\nabla E\|^2/m$",
    "test_acc": "test accuracy",
    "learning_rate": "learning rate $h$",
    "grad_norm": r"$\|\nabla E\|$",
    "lambda_max": r"$\lambda_{max}$",
    "hessian_trace": r"tr $H$",
    "h_lambda": r"$h\,\lambda_{max}$",
}


def _palette(values: Sequence) -> dict:
    values = sorted(set(values))
    cmap = plt.get_cmap("viridis")
    # stop short of viridis' pale yellow end, which vanishes on a white background
    return {v: cmap(0.85 * i / max(1, len(values) - 1)) for i, v in enumerate(values)}


def _marker_area(variant: Variant) -> float:
    return 90.0 if variant == "slide" else 28.0


def scatter_by(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, hue: str = "width",
               logx: bool = True, logy: bool = False, hue_label: str = "width",
               variant: Variant = "paper") -> None:
    """Kept runs coloured by ``hue``; other runs (``category != "kept"``) as grey crosses."""
    kept = df[df["category"] == "kept"]
    other = df[df["category"] != "kept"]
    colours = _palette(df[hue])
    area = _marker_area(variant)
    for value, group in kept.groupby(hue):
        ax.scatter(group[x], group[y], color=colours[value], s=area, label=f"{hue_label} {value}",
                   edgecolor="white", linewidth=0.4)
    shown = other[np.isfinite(other[y].astype(float))] if y in other and len(other) else other
    if len(other):
        ax.scatter(shown[x], shown[y], label=f"not kept ({len(other)}):\n{_reasons(other)}",
                   s=area, **EXCLUDED_STYLE)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short decades
    if logy:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))


def zoom_to_kept(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, pad: float = 0.08) -> None:
    """Limit the y axis to the kept runs' range (plus ``pad`` of it on each side); not-kept runs
    outside it are drawn as grey triangles on the nearer edge, so one failed run cannot stretch
    the axis and hide the kept runs' differences."""
    kept = df.loc[df["category"] == "kept", y].astype(float)
    kept = kept[np.isfinite(kept)]
    if kept.empty:
        return
    low, high = kept.min(), kept.max()
    span = (high - low) or max(abs(high), 1e-12) * 0.05
    low, high = low - pad * span, high + pad * span
    ax.set_ylim(low, high)
    other = df[(df["category"] != "kept") & np.isfinite(df[y].astype(float))]
    outside = other[(other[y] < low) | (other[y] > high)]
    for edge, rows in ((low, outside[outside[y] < low]), (high, outside[outside[y] > high])):
        if len(rows):
            ax.scatter(rows[x], np.full(len(rows), edge), s=40,
                       **{**EDGE_STYLE, "marker": "v" if edge == low else "^"})


def _reasons(df: pd.DataFrame) -> str:
    return ", ".join(f"{n} {c}" for c, n in df["category"].value_counts().items())


def shared_legend(fig: Figure, ax: plt.Axes, variant: Variant) -> None:
    """One legend for the whole figure, right of the panels, so it never covers data or text
    (the bottom strip of a slide belongs to the profile label)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", frameon=False)


def figure2(df: pd.DataFrame, variant: Variant = "paper") -> Figure:
    """Figure 2: R_IG against λ = hm/4 and test accuracy against λ (log λ axis); the accuracy
    axis is zoomed to the kept runs (:func:`zoom_to_kept`)."""
    fig, axes = figures.subplots(2, variant)
    scatter_by(axes[0], df, "lambda", "r_ig", logy=True, variant=variant)
    scatter_by(axes[1], df, "lambda", "test_acc", variant=variant)
    zoom_to_kept(axes[1], df, "lambda", "test_acc")
    axes[1].set_ylabel("test accuracy (selected evaluation)")
    shared_legend(fig, axes[1], variant)
    return fig


def figure3(df: pd.DataFrame, variant: Variant = "paper") -> Figure:
    """Figure 3 (flatness): ‖∇E‖, λ_max, tr H and h·λ_max against the learning rate h, 2×2."""
    fig, axes = figures.subplots(4, variant, sharex=True)
    titles = ("slope", "top Hessian eigenvalue", "Hessian trace (Hutchinson)", "edge of stability")
    for ax, column in zip(axes, ("grad_norm", "lambda_max", "hessian_trace")):
        scatter_by(ax, df, "learning_rate", column, logy=True, variant=variant)
    for ax, title in zip(axes, titles):
        ax.set_title(title)
    frame = df.assign(h_lambda=df["learning_rate"] * df["lambda_max"])
    scatter_by(axes[3], frame, "learning_rate", "h_lambda", logy=True, variant=variant)
    axes[3].axhline(2.0, color="k", ls="--", lw=1, label=r"$h\,\lambda_{max} = 2$")
    for ax in axes[:2]:
        ax.set_xlabel("")
    shared_legend(fig, axes[3], variant)
    return fig


def robustness_curves(runs: pd.DataFrame, metric: str = "test_acc",
                      variant: Variant = "paper") -> Figure:
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
    fig, axes = figures.subplots(len(widths), variant, sharey=True)
    if not rows:
        for ax in axes:
            ax.text(0.5, 0.5, "no kept runs", ha="center", transform=ax.transAxes)
            ax.set(xticks=[], yticks=[])  # an empty panel's ticks would only meet in the corner
        return fig
    df = pd.concat(rows)
    colours = _palette(runs["learning_rate"])
    for ax, width in zip(axes, widths):
        for lr, group in df[df["width"] == width].groupby("learning_rate"):
            per_sigma = group.groupby("sigma")["mean"]
            mean, se = per_sigma.mean(), per_sigma.sem().fillna(0)
            ax.plot(mean.index, mean, "o-", color=colours[lr], label=f"$h$ = {lr:g}")
            ax.fill_between(mean.index, mean - se, mean + se, color=colours[lr], alpha=0.2)
        ax.set(title=f"width {width}", xlabel=r"relative noise $\sigma$")
        # ticks at the measured σ (at most four), labelled exactly: an automatic locator on a
        # short range can give two ticks the same rounded label
        sigmas = np.sort(df["sigma"].unique())
        ticks = sigmas[::max(1, -(-len(sigmas) // 4))]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    # no y tick at the bottom, where it would meet the σ = 0 tick in the corner
    axes[0].yaxis.set_major_locator(plt.MaxNLocator(5, prune="lower"))
    axes[0].set_ylabel(LABELS.get(metric, metric.replace("_", " ")))
    shared_legend(fig, axes[0], variant)
    return fig


def training_curves(history: pd.DataFrame, metric: str = "test_acc",
                    variant: Variant = "paper") -> Figure:
    """``metric`` against epoch, one panel per width, one line per (learning rate, seed)."""
    widths = sorted(history["width"].unique())
    fig, axes = figures.subplots(len(widths), variant, sharey=True)
    colours = _palette(history["learning_rate"])
    for ax, width in zip(axes, widths):
        sub = history[history["width"] == width]
        for (lr, seed), run in sub.groupby(["learning_rate", "seed"]):
            ax.plot(run["epoch"], run[metric], color=colours[lr], lw=1,
                    label=f"$h$ = {lr:g}" if seed == sub["seed"].min() else None)
        ax.set(title=f"width {width}", xlabel="epoch")
    axes[0].set_ylabel(LABELS.get(metric, metric.replace("_", " ")))
    shared_legend(fig, axes[0], variant)
    return fig


def landscape_slices(small: pd.Series, large: pd.Series, variant: Variant = "paper") -> Figure:
    """1-D and 2-D loss slices (filter-normalised directions) of a small-h and a large-h
    solution; the two 2-D slices share one colour scale (log₁₀ loss) and one colour bar."""
    fig, axes = figures.subplots(3, variant)
    for run, style in ((small, "-"), (large, "--")):
        s1 = run["extra"]["slice_1d"]
        axes[0].plot(s1["alpha"], s1["loss"], style, label=f"$h$ = {run['learning_rate']:g}")
    axes[0].set(xlabel=r"$\alpha$ (filter-normalised)", ylabel="training loss", yscale="log")
    axes[0].legend()
    axes[0].xaxis.set_major_locator(plt.MaxNLocator(4))
    surfaces = [np.log10(np.asarray(run["extra"]["slice_2d"]["loss"])) for run in (small, large)]
    finite = np.concatenate([z[np.isfinite(z)] for z in surfaces])
    levels = np.linspace(finite.min(), finite.max(), 13) if finite.size else 12
    for ax, run, z in zip(axes[1:], (small, large), surfaces):
        a = np.asarray(run["extra"]["slice_2d"]["alpha"])
        cs = ax.contourf(a, a, z.T, levels=levels)
        ax.set(title=f"$h$ = {run['learning_rate']:g}, width {run['width']}",
               xlabel=r"$\alpha$", ylabel=r"$\beta$")
        # three panels in a row leave room for few tick labels; none in the shared corner
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.yaxis.set_major_locator(plt.MaxNLocator(4, prune="lower"))
    bar = fig.colorbar(cs, ax=list(axes[1:]), label=r"$\log_{10}$ loss")
    bar.locator = plt.MaxNLocator(5)
    bar.update_ticks()
    return fig


#: Readable table headers for the columns the experiments' frames share.
HEADERS = {
    "test_acc": "test accuracy", "train_acc": "training accuracy", "all_test_acc":
    "test accuracy (all runs)", "r_ig": "R_IG", "lambda_max": "λ_max", "mean_abs_slope":
    "mean slope", "grad_norm": "‖∇E‖", "hessian_trace": "tr H", "learning_rate": "h",
    "mu": "μ", "lambda": "λ = hm/4", "lambda_equiv": "λ_equiv", "h_equiv": "h + 4μ",
    "width_multiplier": "width ×", "selected_epoch": "selected epoch", "num_params": "m",
}
#: The measured columns, which a runs table shows first.
MEASURED = ("test_acc", "all_test_acc", "train_acc", "r_ig", "lambda_max", "mean_abs_slope",
            "grad_norm", "hessian_trace")


def table(df: pd.DataFrame, first: Sequence[str] = MEASURED, headers: dict[str, str] | None = None,
          drop: Sequence[str] = ("history", "extra", "provenance"), digits: int = 4):
    """A chapter table: the ``first`` columns (by default the measured ones) leading, then the
    rest; a named index (a group-by's keys) becomes columns and a bare 0…N index is hidden;
    dict-valued record columns (``drop``) removed; readable headers (``headers`` over
    :data:`HEADERS`, else the name with spaces); floats to ``digits`` significant digits.
    Returns a pandas Styler (it renders as an HTML table in the book)."""
    if any(name is not None for name in df.index.names):
        df = df.reset_index()
    columns = [c for c in first if c in df] + [c for c in df if c not in first and c not in drop]
    names = {**HEADERS, **(headers or {})}
    out = df[columns].rename(columns=lambda c: names.get(c, str(c).replace("_", " ")))
    floats = [c for c, t in out.dtypes.items() if pd.api.types.is_float_dtype(t)]
    return out.style.hide(axis="index").format(f"{{:.{digits}g}}", subset=floats, na_rep="–")


def trajectories(frame: pd.DataFrame, quantities: Sequence[str] = ("train_loss", "r_ig", "h_lambda_max"),
                 variant: Variant = "paper") -> Figure:
    """Probed quantities against epoch, one panel per quantity, one line per run (colour: the
    learning rate; line style: the seed). ``frame`` is the tidy probe frame of
    :func:`igrlib.experiments.common.trajectories`. Losses and R_IG on log axes; a panel of
    ``h_lambda_max`` or ``stability`` marks the linear-stability edge at 2."""
    fig, axes = figures.subplots(len(quantities), variant, sharex=True)
    colours = _palette(frame["learning_rate"])
    styles = dict(zip(sorted(frame["seed"].unique()), ("-", "--", ":", "-.")))
    labels = {"train_loss": "training loss $E$ (nats)", "h_lambda_max": r"$h\,\lambda_{max}$",
              "stability": "stability quantity", **LABELS}
    for ax, quantity in zip(axes, quantities):
        sub = frame[frame["quantity"] == quantity]
        for (lr, seed), run in sub.groupby(["learning_rate", "seed"]):
            ax.plot(run["epoch"], run["value"], color=colours[lr], ls=styles.get(seed, "-"), lw=1.2,
                    label=f"$h$ = {lr:g}" if seed == sub["seed"].min() else None)
        if quantity in ("h_lambda_max", "stability"):
            ax.axhline(2.0, color="0.4", lw=1, ls=":")
        if quantity in ("train_loss", "r_ig"):
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=labels.get(quantity, quantity.replace("_", " ")))
    shared_legend(fig, axes[0], variant)
    return fig
