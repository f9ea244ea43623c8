"""Every shared plot, in both variants, on synthetic records: its size, a 16:9 slide with fonts
legible when projected, no text drawn over another text, and a palette deuteranopes can read.

The chapters' own figures are checked the same way when they are saved (``layout`` in each
figure's index entry; see tests/test_book.py, which reads the smoke build's index).
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from igrlib import plots
from igrlib.config import ConfigError
from igrlib.io import figures

WIDTHS, RATES, SEEDS = (50, 100, 200), (0.02, 0.05, 0.1, 0.2), (0, 1)


def synthetic_runs() -> pd.DataFrame:
    """A grid shaped like the MNIST experiment's tidy frame, with one failed (collapsed) run far
    below the others' accuracy and one diverged run with no values."""
    rng = np.random.default_rng(0)
    rows = []
    for width in WIDTHS:
        for lr in RATES:
            for seed in SEEDS:
                m = 4 * width * width
                alpha = np.linspace(-1, 1, 9)
                grid2 = (alpha[:, None] ** 2 + alpha[None, :] ** 2) * (1 + 10 * lr) + 1e-3
                rows.append({
                    "width": width, "learning_rate": lr, "seed": seed, "num_params": m,
                    "lambda": lr * m / 4, "category": "kept", "status": "ok",
                    "r_ig": 1e-4 / lr * rng.uniform(0.8, 1.2), "test_acc": 0.97 + 0.01 * lr,
                    "grad_norm": 1e-2 / lr, "lambda_max": 1.5 / lr, "hessian_trace": 40 / lr,
                    "extra": {
                        "robustness": {"metric": ["test_acc"] * 3, "sigma": [0.0, 0.05, 0.1],
                                       "mean": [0.97, 0.95 + lr / 10, 0.9 + lr / 5]},
                        "slice_1d": {"alpha": list(alpha), "loss": list(alpha ** 2 + 1e-3)},
                        "slice_2d": {"alpha": list(alpha), "loss": grid2.tolist()},
                    },
                })
    df = pd.DataFrame(rows)
    df.loc[0, ["category", "test_acc", "r_ig"]] = ["collapsed", 0.1, 2e-6]
    df.loc[1, ["category", "test_acc", "r_ig", "status"]] = ["diverged", np.nan, np.nan, "diverged"]
    return df


def history() -> pd.DataFrame:
    rows = [{"width": w, "learning_rate": lr, "seed": s, "epoch": e, "test_acc": 0.9 + 0.01 * e * lr}
            for w in WIDTHS for lr in RATES for s in SEEDS for e in range(1, 6)]
    return pd.DataFrame(rows)


DF = synthetic_runs()
PLOTS = {
    "fig2": lambda v: plots.figure2(DF, v),
    "fig3-flatness": lambda v: plots.figure3(DF, v),
    "fig3-robustness": lambda v: plots.robustness_curves(DF, variant=v),
    "curves": lambda v: plots.training_curves(history(), variant=v),
    "landscape": lambda v: plots.landscape_slices(DF.iloc[2], DF.iloc[-1], v),
}


@pytest.fixture(autouse=True)
def _close_figures():
    figures.use_style()
    yield
    plt.close("all")


@pytest.mark.parametrize("name", sorted(PLOTS))
@pytest.mark.parametrize("variant", figures.VARIANTS)
def test_plot_is_legible_in_both_variants(name: str, variant: str) -> None:
    fig = figures.render(PLOTS[name], variant, figures.label_text("cpu", "CIFAR-10 (JPEG copy)"))
    report = figures.layout_report(fig, edges=variant == "slide")
    assert not report["overlaps"], f"{name}/{variant}: texts drawn over each other {report['overlaps']}"
    assert not report["outside"], f"{name}/{variant}: texts cut by the edge {report['outside']}"
    width, height = fig.get_size_inches()
    if variant == "slide":
        assert (width, height) == pytest.approx(figures.SLIDE_SIZE_IN)
        assert width / height == pytest.approx(16 / 9, rel=2e-3)
        assert report["min_font_pt"] >= figures.SLIDE_MIN_PT
    else:
        assert width <= figures.PAPER_MAX_WIDTH_IN
        assert report["min_font_pt"] >= figures.PAPER_MIN_PT


def test_overlap_check_catches_overlapping_text() -> None:
    """The checker is not vacuous: two labels at one spot overlap, a label off the canvas is out."""
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.5, 0.5, "first label", transform=ax.transAxes)
    ax.text(0.52, 0.5, "second label", transform=ax.transAxes)
    fig.text(1.2, 0.5, "off the canvas")
    report = figures.layout_report(fig)
    assert ["first label", "second label"] in report["overlaps"]
    assert report["outside"] == ["off the canvas"]


def test_figure3_is_two_by_two_on_paper() -> None:
    fig = plots.figure3(DF, "paper")
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    cols = {round(ax.get_position().x0, 3) for ax in fig.axes}
    assert len(fig.axes) == 4 and len(rows) == 2 and len(cols) == 2


def test_accuracy_axis_zooms_to_kept_runs_and_marks_the_others() -> None:
    fig = plots.figure2(DF, "paper")
    low, high = fig.axes[1].get_ylim()
    kept = DF.loc[DF["category"] == "kept", "test_acc"]
    assert low <= kept.min() and high >= kept.max()
    assert low > 0.9, "the collapsed run at 0.1 must not stretch the axis"
    edge = [c for c in fig.axes[1].collections if c.get_offsets().shape[0] and
            np.allclose(np.asarray(c.get_offsets())[:, 1], low)]
    assert edge, "the collapsed run is not marked on the lower edge"


def test_landscape_slices_share_one_colour_scale() -> None:
    fig = plots.landscape_slices(DF.iloc[2], DF.iloc[-1], "paper")
    contours = [c for ax in fig.axes[1:3] for c in ax.collections if hasattr(c, "levels")]
    assert len(contours) == 2
    assert np.array_equal(contours[0].levels, contours[1].levels)
    assert contours[0].get_clim() == contours[1].get_clim()


def _deuteranope_lab(hex_colour: str) -> np.ndarray:
    """CIELAB of a colour as a deuteranope sees it (Machado et al. 2009, severity 1)."""
    rgb = np.asarray(to_rgb(hex_colour))
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    machado = np.array([[0.367322, 0.860646, -0.227968],
                        [0.280085, 0.672501, 0.047413],
                        [-0.011820, 0.042940, 0.968881]])
    seen = np.clip(machado @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ seen / np.array([0.9505, 1.0, 1.089])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_palette_is_distinguishable_for_deuteranopes() -> None:
    labs = [_deuteranope_lab(c) for c in figures.PALETTE]
    distances = [np.linalg.norm(a - b) for i, a in enumerate(labs) for b in labs[i + 1:]]
    assert min(distances) > 15, f"closest pair ΔE = {min(distances):.1f}"
    # the check can fail: seaborn's orange and vermillion are nearly one colour to a deuteranope
    assert np.linalg.norm(_deuteranope_lab("#de8f05") - _deuteranope_lab("#d55e00")) < 15


@pytest.mark.parametrize("n, paper, slide", [(1, (1, 1), (1, 1)), (3, (1, 3), (1, 3)),
                                             (4, (2, 2), (2, 2)), (6, (2, 3), (2, 3))])
def test_grid_per_variant(n: int, paper: tuple, slide: tuple) -> None:
    assert figures.grid(n, "paper") == paper and figures.grid(n, "slide") == slide


@pytest.mark.parametrize("bad", [("panels", 0), ("variant", "poster")])
def test_bad_layout_request_raises(bad) -> None:
    with pytest.raises(ConfigError):
        figures.grid(1 if bad[0] == "variant" else bad[1], bad[1] if bad[0] == "variant" else "paper")


def test_table_puts_measured_columns_first_with_readable_headers_and_no_bare_index() -> None:
    frame = DF[["width", "learning_rate", "extra", "r_ig", "test_acc"]].iloc[:3]
    html = plots.table(frame).to_html()
    headers = [h for h in ("test accuracy", "R_IG", "width", ">h<") if h in html]
    assert headers == ["test accuracy", "R_IG", "width", ">h<"]
    assert html.index("test accuracy") < html.index("R_IG") < html.index("width")
    assert "slice_1d" not in html, "dict-valued record columns are dropped"
    assert 'class="row_heading' not in html, "a bare 0…N index is shown"
    grouped = DF.groupby(["width", "learning_rate"])[["test_acc"]].mean()
    html = plots.table(grouped).to_html()
    assert html.index("test accuracy") < html.index(">width<") and "0.97" in html


def _crowded(variant: str) -> plt.Figure:
    """Three panels in a row with log axes spanning less than a decade: matplotlib then labels
    the minor ticks 2, 3, 4, 6 × 10ᵏ, which run into each other at a slide's font size."""
    fig, axes = figures.subplots(3, variant)
    for ax in axes:
        ax.loglog([1.7e-5, 6.2e-5], [2.1e-2, 4.3e-2], "o-")
        ax.set_title("a panel")
    return fig


def test_colliding_tick_labels_are_blanked_and_nothing_else() -> None:
    with figures.style("slide"):
        raw = _crowded("slide")
    assert figures.layout_report(raw)["overlaps"], "the example must collide before blanking"
    fig = figures.render(_crowded, "slide", figures.label_text("cpu"))
    report = figures.layout_report(fig)
    assert not report["overlaps"], report["overlaps"]
    for ax in fig.axes:  # every axis still has labelled ticks to read values from
        for axis in (ax.xaxis, ax.yaxis):
            low, high = axis.get_view_interval()
            labels = [t.get_text() for t in axis.get_ticklabels(which="both")
                      if t.get_text() and low <= t.get_position()[axis is ax.yaxis] <= high]
            assert len(labels) >= 2, f"an axis was left with fewer than two labelled ticks: {labels}"
    # a blanked label stays blank when the figure is saved (it is the axis's formatter that blanks)
    svg = io.BytesIO()
    fig.savefig(svg, format="svg")
    assert not figures.layout_report(fig)["overlaps"]


def test_blanking_leaves_overlaps_of_other_texts_to_the_report() -> None:
    def draw(variant):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.text(0.5, 0.5, "first label", transform=ax.transAxes)
        ax.text(0.52, 0.5, "second label", transform=ax.transAxes)
        return fig

    fig = figures.render(draw, "paper", "profile: smoke")
    assert ["first label", "second label"] in figures.layout_report(fig)["overlaps"]
