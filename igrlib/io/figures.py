"""Figure style and export: a paper and a slide variant of every figure, per profile, indexed.

:func:`save` takes a *drawing function* ``draw(variant) -> Figure`` and calls it twice:

* ``"paper"``: the figure the book shows, at most :data:`PAPER_MAX_WIDTH_IN` wide, panels laid
  out for the page's text column (2×2 rather than 4×1);
* ``"slide"``: 16:9 at :data:`SLIDE_SIZE_IN` inches (13.33 × 7.5, a widescreen slide), every
  text at least :data:`SLIDE_MIN_PT` points, panels re-laid out by the drawing function
  (:func:`grid` and :func:`subplots` choose the layout for a panel count).

Each variant is written as ``<figures_dir>/<profile>/<id>[-slide].{pdf,svg,png}`` (SVG with real
text, PNG at :data:`PNG_DPI` dpi) and recorded in ``<figures_dir>/<profile>/index.json`` with the
caption, data set, a SHA-256 of the rendered SVG and two provenances: the commit that drew the
figure and a summary of the stored runs it shows (``runs=``). Profiles never share files, so a
``smoke`` re-run cannot replace a ``cpu`` figure; a variant whose SVG hash is unchanged is not
rewritten (its files and its drawing provenance stay as they were).

Every figure carries a corner label naming the profile that produced it (and the data set when
given, e.g. "CIFAR-10 (JPEG copy)"), so a slide can never pass a smoke-scale plot off as the
paper-scale one. The palette is an Okabe–Ito subset without the orange/vermillion pair that
deuteranopes confuse (:data:`PALETTE`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import Formatter
from matplotlib.transforms import Bbox

import igrlib
from igrlib.config import PROFILES, ConfigError, check_choice
from igrlib.io import atomic, paths, results

Variant = Literal["paper", "slide"]
VARIANTS: tuple[str, ...] = ("paper", "slide")
FORMATS: tuple[str, ...] = ("pdf", "svg", "png")
PNG_DPI = 300
INDEX_NAME = "index.json"
#: 16:9 at the size of a widescreen slide, in inches.
SLIDE_SIZE_IN = (13.333, 7.5)
#: Smallest font on a slide, in points at :data:`SLIDE_SIZE_IN` (legible when projected).
SLIDE_MIN_PT = 18.0
#: Smallest font on a paper figure, in points (the book shows it at about its own size).
PAPER_MIN_PT = 8.0
#: Widest paper figure, in inches: wider ones shrink below legibility in the book's text column.
PAPER_MAX_WIDTH_IN = 10.0
#: Fraction of a slide's height kept free at the bottom for the profile label.
SLIDE_LABEL_STRIP = 0.07
#: The ``gid`` of the corner label, so saving a figure twice replaces its label.
LABEL_GID = "igr-profile-label"
#: Okabe & Ito's colour-blind-safe colours without vermillion (#D55E00), which deuteranopes
#: cannot tell from the orange, nor yellow, which vanishes on white.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#000000")
_FIG_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

#: Stable output: no creation dates in the files, so re-saving an unchanged figure changes no byte.
_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}

_BASE_RC: dict[str, Any] = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=list(PALETTE)),
    "image.cmap": "viridis",
    "pdf.fonttype": 42,      # TrueType in PDFs, so slides can edit the text
    "svg.fonttype": "none",  # real text in SVGs, not glyph outlines
    "figure.constrained_layout.use": True,
}
_VARIANT_RC: dict[str, dict[str, Any]] = {
    "paper": {"figure.figsize": (6.4, 4.2), "font.size": 10, "axes.titlesize": 11,
              "axes.labelsize": 10.5, "xtick.labelsize": 9.5, "ytick.labelsize": 9.5,
              "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 12,
              "lines.linewidth": 1.5, "lines.markersize": 5},
    "slide": {"figure.figsize": SLIDE_SIZE_IN, "font.size": SLIDE_MIN_PT,
              "axes.titlesize": 20, "axes.labelsize": 20, "xtick.labelsize": SLIDE_MIN_PT,
              "ytick.labelsize": SLIDE_MIN_PT, "legend.fontsize": SLIDE_MIN_PT,
              "legend.title_fontsize": SLIDE_MIN_PT, "figure.titlesize": 22,
              "lines.linewidth": 2.5, "lines.markersize": 8, "axes.linewidth": 1.2},
}
_LABEL_PT = {"paper": 9.0, "slide": SLIDE_MIN_PT}


def check_variant(variant: str) -> str:
    """``variant`` if it is ``"paper"`` or ``"slide"``, else a :class:`ConfigError`."""
    check_choice(variant, VARIANTS, "figure variant")
    return variant


def rc(variant: Variant = "paper") -> dict[str, Any]:
    """The matplotlib settings of one variant (fonts in points, sizes in inches)."""
    return {**_BASE_RC, **_VARIANT_RC[check_variant(variant)]}


def use_style(variant: Variant = "paper") -> None:
    """Apply the book's plotting style globally: whitegrid, :data:`PALETTE`, readable fonts.

    Sequential colour maps stay ``viridis`` (perceptually uniform and colour-blind safe).
    """
    # seaborn pulls in pandas; only the global style needs it, not saving or the index
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=list(PALETTE), rc=rc(variant))


@contextlib.contextmanager
def style(variant: Variant) -> Iterator[None]:
    """Temporarily apply one variant's settings (fonts are fixed when an artist is created)."""
    with mpl.rc_context(rc(variant)):
        yield


def grid(n: int, variant: Variant = "paper") -> tuple[int, int]:
    """``(rows, columns)`` for ``n`` panels: at most 2 columns on paper when ``n`` is 4 (2×2,
    legible in a text column), at most 3 columns on a 16:9 slide."""
    check_variant(variant)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"a figure needs at least one panel, got {n!r}")
    if n <= 3:
        return 1, n
    cols = 2 if n == 4 else 3
    return -(-n // cols), cols


def size(rows: int, cols: int, variant: Variant = "paper") -> tuple[float, float]:
    """Figure size in inches: :data:`SLIDE_SIZE_IN` for slides; on paper about 4.6 in per
    column (capped at :data:`PAPER_MAX_WIDTH_IN`) and 3.4 in per row."""
    if check_variant(variant) == "slide":
        return SLIDE_SIZE_IN
    return min(PAPER_MAX_WIDTH_IN, 1.6 + 4.2 * cols), 0.6 + 3.4 * rows


def subplots(n: int, variant: Variant = "paper", **kwargs: Any) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure with ``n`` panels laid out by :func:`grid` and :func:`size`;
    returns ``(fig, axes)`` with ``axes`` a flat array of length ``n`` (spare cells removed)."""
    rows, cols = grid(n, variant)
    kwargs.setdefault("figsize", size(rows, cols, variant))
    fig, axes = plt.subplots(rows, cols, squeeze=False, layout="constrained", **kwargs)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def label_text(profile: str, dataset: str | None = None) -> str:
    """The corner label: ``"profile: smoke"``, or ``"profile: cpu · CIFAR-10 (JPEG copy)"``."""
    return f"profile: {profile}" + (f" · {dataset}" if dataset else "")


def stamp(fig: Figure, text: str, variant: Variant = "paper") -> None:
    """Put the profile label in the bottom-right corner of ``fig`` (replacing an earlier one).

    On paper it sits just below the axes, where no axis label can be, and the tight bounding box
    of a save grows to include it. A slide keeps its exact 16:9 size, so the layout leaves a strip
    of :data:`SLIDE_LABEL_STRIP` of the height free at the bottom and the label sits in it.
    """
    for old in [t for t in fig.texts if t.get_gid() == LABEL_GID]:
        old.remove()
    if variant == "slide":
        engine = fig.get_layout_engine()
        if hasattr(engine, "set") and "rect" in engine.get():
            engine.set(rect=(0, SLIDE_LABEL_STRIP, 1, 1 - SLIDE_LABEL_STRIP))  # (x, y, w, h)
        else:
            fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, SLIDE_LABEL_STRIP + 0.08))
        y, va = 0.012, "bottom"
    else:
        y, va = -0.01, "top"
    fig.text(0.995, y, text, ha="right", va=va, fontsize=_LABEL_PT[variant], color="0.25",
             gid=LABEL_GID)


def _drawn(fig: Figure) -> list[tuple[Text, Bbox]]:
    """Every non-empty, visible text that drawing ``fig`` renders, with its window extent."""
    seen: list[tuple[Text, Bbox]] = []
    original = Text.draw

    def recording(self: Text, renderer: Any) -> None:
        original(self, renderer)
        if self.get_visible() and self.get_text().strip() and renderer is not None:
            seen.append((self, self.get_window_extent(renderer)))

    Text.draw = recording
    try:
        fig.canvas.draw()
    finally:
        Text.draw = original
    return seen


def _overlap(a: Bbox, b: Bbox, tolerance_px: float) -> bool:
    """Whether two boxes intersect by more than ``tolerance_px`` pixels both ways."""
    dx = min(a.x1, b.x1) - max(a.x0, b.x0)
    dy = min(a.y1, b.y1) - max(a.y0, b.y0)
    return dx > tolerance_px and dy > tolerance_px


class _HideLabels(Formatter):
    """``inner``'s tick labels, except an empty label at the tick values in ``hidden``."""

    def __init__(self, inner: Formatter, hidden: set[float]):
        self.inner, self.hidden = inner, hidden

    def _hides(self, x: float) -> bool:
        return any(np.isclose(x, h, rtol=1e-9, atol=0.0) for h in self.hidden)

    def set_locs(self, locs: Any) -> None:
        self.inner.set_locs(locs)

    def format_ticks(self, values: Any) -> list[str]:
        labels = self.inner.format_ticks(values)
        return ["" if self._hides(v) else s for v, s in zip(values, labels)]

    def __call__(self, x: float, pos: int | None = None) -> str:
        return "" if self._hides(x) else self.inner(x, pos)

    def get_offset(self) -> str:
        return self.inner.get_offset()

    def format_data_short(self, value: float) -> str:
        return self.inner.format_data_short(value)


def _tick_labels(fig: Figure) -> dict[int, tuple[Any, str, float]]:
    """``id(label artist) -> (axis, "major"/"minor", tick value)`` for every tick label of ``fig``."""
    out = {}
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for which, ticks in (("major", axis.get_major_ticks()), ("minor", axis.get_minor_ticks())):
                for tick in ticks:
                    for label in (tick.label1, tick.label2):
                        out[id(label)] = axis, which, tick.get_loc()
    return out


def _blank_colliding_tick_labels(fig: Figure, tolerance_px: float = 1.0, rounds: int = 3) -> list[tuple[Text, Bbox]]:
    """Blank the tick labels that would be drawn over another text; return the texts of a
    drawing of the figure as it is left (for :func:`layout_report`'s measures).

    Greedy, in the order a reader needs them: every text that is not a tick label (titles, axis
    labels, legends, the profile label) is kept; then major tick labels, then minor ones, each
    kept only if it meets no text kept before it. A blanked label keeps its tick mark, and is
    blanked through the axis's formatter (:class:`_HideLabels`), so it stays blank when the
    figure is saved. Because blanking can change a constrained layout, this repeats up to
    ``rounds`` times. Overlaps between texts that are not tick labels are left for
    :func:`layout_report` to report: those are a chapter's to fix.
    """
    for _ in range(rounds):
        ticks = _tick_labels(fig)
        drawn = _drawn(fig)
        kept = [box for text, box in drawn if id(text) not in ticks]
        order = sorted((t for t in drawn if id(t[0]) in ticks), key=lambda t: ticks[id(t[0])][1] != "major")
        hide: dict[tuple[int, str], tuple[Any, str, set[float]]] = {}
        for text, box in order:
            if any(_overlap(box, other, tolerance_px) for other in kept):
                axis, which, value = ticks[id(text)]
                hide.setdefault((id(axis), which), (axis, which, set()))[2].add(value)
            else:
                kept.append(box)
        if not hide:
            return drawn
        for axis, which, values in hide.values():
            ticker = axis.major if which == "major" else axis.minor
            current = ticker.formatter
            if isinstance(current, _HideLabels):
                current.hidden |= values
            else:
                setter = axis.set_major_formatter if which == "major" else axis.set_minor_formatter
                setter(_HideLabels(current, values))
    return _drawn(fig)


def layout_report(fig: Figure, tolerance_px: float = 1.0, edges: bool = True) -> dict[str, Any]:
    """What a reader would trip over: ``overlaps`` (pairs of drawn texts whose boxes intersect by
    more than ``tolerance_px`` pixels both ways), ``outside`` (texts cut by the canvas edge; not
    checked when ``edges`` is False, for a figure saved with a tight bounding box that grows to
    hold them) and ``min_font_pt`` (the smallest drawn text, in points)."""
    return _report(fig, _drawn(fig), tolerance_px, edges)


def _report(fig: Figure, drawn: list[tuple[Text, Bbox]], tolerance_px: float, edges: bool) -> dict[str, Any]:
    texts = [(t.get_text(), t.get_fontsize(), box) for t, box in drawn]
    width, height = fig.canvas.get_width_height()
    overlaps, outside = [], []
    for i, (a, _, box_a) in enumerate(texts):
        if edges and (box_a.x0 < -tolerance_px or box_a.y0 < -tolerance_px
                      or box_a.x1 > width + tolerance_px or box_a.y1 > height + tolerance_px):
            outside.append(a)
        overlaps += [[a, b] for b, _, box_b in texts[i + 1:] if _overlap(box_a, box_b, tolerance_px)]
    return {"overlaps": overlaps, "outside": outside,
            "min_font_pt": min((size for _, size, _ in texts), default=None)}


def _check_inputs(fig_id: str, profile: str, caption: str, dataset: str | None) -> None:
    if not isinstance(fig_id, str) or not _FIG_ID.fullmatch(fig_id):
        raise ConfigError(
            f"figure id must be lower-case letters, digits and single hyphens, got {fig_id!r}"
        )
    check_choice(profile, PROFILES, "profile")
    if not isinstance(caption, str) or not caption.strip():
        raise ConfigError(f"figure {fig_id!r} needs a non-empty caption")
    if dataset is not None and (not isinstance(dataset, str) or not dataset.strip()):
        raise ConfigError(f"dataset must be None or a non-empty label, got {dataset!r}")


def _savefig(fig: Figure, target: str | io.BytesIO, fmt: str, variant: str, salt: str) -> None:
    # fontTools warns "'created' timestamp seems very low" on every TrueType font it subsets
    # for the PDF; it is noise in a chapter's output, not a problem with the figure.
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    # a fixed hash salt makes the SVG's element ids reproducible; a slide keeps its 16:9 canvas
    with mpl.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none", "pdf.fonttype": 42}):
        fig.savefig(target, format=fmt, dpi=PNG_DPI if fmt == "png" else "figure",
                    metadata=_METADATA[fmt], bbox_inches="tight" if variant == "paper" else None)


def file_name(fig_id: str, variant: Variant, fmt: str) -> str:
    """``"<id>.<fmt>"`` for the paper variant, ``"<id>-slide.<fmt>"`` for the slide."""
    return f"{fig_id}{'' if variant == 'paper' else '-' + variant}.{fmt}"


def directory(profile: str) -> Path:
    """A profile's figure folder: ``<figures_dir>/<profile>`` (see :func:`paths.figures_dir`)."""
    check_choice(profile, PROFILES, "profile")
    return paths.figures_dir() / profile


def read_index(profile: str) -> dict[str, dict[str, Any]]:
    """The figure index ``{id: entry}`` of one profile; ``{}`` if none.

    An entry holds ``caption``, ``profile``, ``dataset``, ``variants`` (``{variant: {"files":
    {format: file name relative to the profile's folder}, "sha256": hash of the SVG, "drawn":
    provenance of the drawing, "layout": :func:`layout_report`}}``) and ``runs`` (:func:`runs_summary` of the runs shown, or None).
    """
    file = directory(profile) / INDEX_NAME
    if not file.exists():
        return {}
    return json.loads(file.read_text())


def illegible(profile: str) -> dict[str, dict[str, Any]]:
    """The saved figures of ``profile`` a reader would trip over, as ``{"<id>/<variant>": what}``:
    texts drawn over each other (``overlaps``), texts cut by a slide's edge (``outside``) and a
    figure whose smallest text is below :data:`SLIDE_MIN_PT` on a slide or :data:`PAPER_MIN_PT`
    on paper (``min_font_pt``); ``{}`` if none.
    Read from the index (:func:`read_index`), so it checks exactly what the gallery offers."""
    problems = {}
    for fig_id, entry in read_index(profile).items():
        for variant, saved in entry["variants"].items():
            layout = saved["layout"]
            bad = {k: layout[k] for k in ("overlaps", "outside") if layout[k]}
            if (layout["min_font_pt"] or 0) < (SLIDE_MIN_PT if variant == "slide" else PAPER_MIN_PT):
                bad["min_font_pt"] = layout["min_font_pt"]
            if bad:
                problems[f"{fig_id}/{variant}"] = bad
    return problems


def runs_summary(runs: Any) -> dict[str, Any] | None:
    """Where the numbers of a figure came from: ``{"n", "commits", "first", "last", "machines"}``
    (the number of stored records, their distinct git commits, their earliest and latest UTC
    dates and the machines they ran on) from the ``provenance`` column of a results frame; None
    without one."""
    if runs is None or "provenance" not in getattr(runs, "columns", ()):
        return None
    provs = [p for p in runs["provenance"] if isinstance(p, dict)]
    dates = sorted(p["date"] for p in provs if p.get("date"))
    commits = sorted({p.get("git_commit") or "no commit" for p in provs})
    machines = sorted({_machine(p) for p in provs})
    return {"n": len(provs), "commits": commits, "machines": machines,
            "first": dates[0] if dates else None, "last": dates[-1] if dates else None}


def _machine(prov: dict[str, Any]) -> str:
    device = prov.get("device") or {}
    return (f"{device.get('count', '?')} × {device.get('kind', '?')}"
            f" ({prov.get('host_cpus', '?')} host CPUs)")


def runs_sentence(summary: dict[str, Any] | None) -> str:
    """``"rendered 36 stored records computed 2026-11-20 – 2026-11-21 at commit cd2817c1f0ab"``
    from a :func:`runs_summary` (every commit is listed); without one, a sentence saying so."""
    if not summary or not summary.get("n"):
        return "no stored runs: computed as the chapter executed, or read from its own files"
    dates = (summary["first"] or "?")[:10]
    if (summary["last"] or "?")[:10] != dates:
        dates += f" – {(summary['last'] or '?')[:10]}"
    noun = "commit" if len(summary["commits"]) == 1 else "commits"
    commits = ", ".join(c[:12] for c in summary["commits"])
    return f"rendered {summary['n']} stored records computed {dates} at {noun} {commits}"


def _record(folder: Path, fig_id: str, entry: dict[str, Any]) -> None:
    # an exclusive lock makes the read-modify-write safe when two notebooks save at once
    with open(folder / ".index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        file = folder / INDEX_NAME
        index = json.loads(file.read_text()) if file.exists() else {}
        index[fig_id] = entry
        text = json.dumps(index, indent=1, sort_keys=True) + "\n"
        atomic.write_text(file, text)


def _drawn_provenance() -> dict[str, Any]:
    prov = results.provenance()
    prov.pop("wall_time_s")
    prov["igrlib_version"] = igrlib.__version__
    return prov


def render(draw: Callable[[str], Figure], variant: Variant, text: str) -> Figure:
    """Call ``draw(variant)`` under the variant's style, stamp the label ``text`` on it and blank
    the tick labels that would collide with another text (:func:`_blank_colliding_tick_labels`:
    on a short log axis or a slide's larger fonts, automatic tick labels can run into each other
    at one profile's data range and not at another's)."""
    return _render(draw, variant, text)[0]


def _render(draw: Callable[[str], Figure], variant: Variant, text: str) -> tuple[Figure, list[tuple[Text, Bbox]]]:
    """:func:`render`, also returning the texts its last drawing rendered (one drawing fewer for
    :func:`save`, which measures the layout)."""
    with style(variant):
        fig = draw(variant)
        if not isinstance(fig, Figure):
            raise ConfigError(f"draw({variant!r}) must return a matplotlib Figure, got {type(fig)}")
        stamp(fig, text, variant)
        drawn = _blank_colliding_tick_labels(fig)
    return fig, drawn


def _show_in_notebook(fig: Figure) -> None:
    """In a Jupyter kernel, display ``fig`` as the cell's output and close it.

    The inline backend shows open figures at the end of a cell only when pyplot flagged a draw,
    which creating a figure inside :func:`save` does not always do; displaying it here makes the
    figure the cell's output every time, and closing it keeps it from appearing twice.
    """
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if getattr(get_ipython(), "kernel", None) is None:
        return
    display(fig)
    plt.close(fig)


def save(draw: Callable[[str], Figure], fig_id: str, *, profile: str, caption: str,
         dataset: str | None = None, runs: Any = None) -> Figure:
    """Draw and export both variants of a figure; return the paper one (left open for display).

    ``draw(variant)`` returns a new Figure for ``"paper"`` and for ``"slide"`` (a 16:9 figure,
    e.g. from :func:`subplots`); it runs under :func:`style` of that variant. ``fig_id`` is
    lower-case letters, digits and hyphens; ``profile`` one of :data:`igrlib.config.PROFILES`;
    ``dataset`` an optional label for the corner stamp; ``runs`` the results frame the figure
    shows (its ``provenance`` column is summarised in the index). Every file is written to a
    temporary name and renamed, so a reader never sees half a file; a variant whose rendered SVG
    has the hash already indexed (and whose files exist) is left untouched. The slide figure is
    closed; the paper figure is shown as the cell's output in a Jupyter kernel (and then closed),
    elsewhere it stays open.
    """
    if isinstance(draw, Figure) or not callable(draw):
        raise ConfigError("figures.save takes a function draw(variant) -> Figure, called for "
                          f"{VARIANTS}, so each variant lays out its own panels; got {type(draw)}")
    _check_inputs(fig_id, profile, caption, dataset)
    folder = directory(profile)
    label = label_text(profile, dataset)
    rendered: dict[str, tuple[Figure, bytes, dict[str, Any]]] = {}
    for variant in VARIANTS:
        fig, drawn = _render(draw, variant, label)
        report = _report(fig, drawn, 1.0, edges=variant == "slide")
        svg = io.BytesIO()
        _savefig(fig, svg, "svg", variant, fig_id)
        rendered[variant] = fig, svg.getvalue(), report
    folder.mkdir(parents=True, exist_ok=True)
    old = (read_index(profile).get(fig_id) or {}).get("variants", {})
    variants: dict[str, Any] = {}
    for variant, (fig, svg, report) in rendered.items():
        digest = hashlib.sha256(svg).hexdigest()
        files = {fmt: file_name(fig_id, variant, fmt) for fmt in FORMATS}
        previous = old.get(variant, {})
        if previous.get("sha256") == digest and all((folder / f).exists() for f in files.values()):
            variants[variant] = previous
            continue
        for fmt, name in files.items():
            if fmt == "svg":
                atomic.write_bytes(folder / name, svg)
            else:
                with atomic.target(folder / name) as tmp:
                    _savefig(fig, str(tmp), fmt, variant, fig_id)
        variants[variant] = {"files": files, "sha256": digest, "drawn": _drawn_provenance(),
                             "layout": report}
    plt.close(rendered["slide"][0])
    _show_in_notebook(rendered["paper"][0])
    entry = {"caption": caption.strip(), "profile": profile, "dataset": dataset,
             "variants": variants, "runs": runs_summary(runs)}
    _record(folder, fig_id, entry)
    return rendered["paper"][0]
