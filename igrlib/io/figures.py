"""Figure style and export for talks: stable files, a visible profile label, an index.

:func:`save` writes ``<figures_dir>/<id>.pdf``, ``.svg`` and a 300-dpi ``.png`` (see
:func:`igrlib.io.paths.figures_dir`, moved by ``IGR_FIGURES_DIR``) and records the figure's caption,
profile, data set and provenance in ``<figures_dir>/index.json``, which the book's gallery page
renders. The book's own image copies are content-hashed by myst-nb, so only these paths are
stable to cite.

Every figure carries a small corner label naming the profile that produced it (and the data set
when given, e.g. "CIFAR-10 (JPEG copy)"), so a slide can never pass a smoke-scale plot off as the
paper-scale one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure

import igrlib
from igrlib.io import paths, results
from igrlib.config import PROFILES, ConfigError, check_choice

FORMATS: tuple[str, ...] = ("pdf", "svg", "png")
PNG_DPI = 300
INDEX_NAME = "index.json"
#: The ``gid`` of the corner label, so saving a figure twice replaces its label.
LABEL_GID = "igr-profile-label"
_FIG_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

#: Stable output: no creation dates in the files, so re-saving an unchanged figure changes no byte.
_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}


def use_style() -> None:
    """Apply the book's one plotting style: seaborn's colour-blind-safe palette, readable fonts.

    Sequential colour maps stay ``viridis`` (perceptually uniform and colour-blind safe). PDF
    fonts are TrueType (type 42) so slides can edit the text.
    """
    # seaborn pulls in pandas and pyplot; only styling needs it, not saving or the index
    import seaborn as sns

    sns.set_theme(
        context="notebook",
        style="whitegrid",
        palette="colorblind",
        font_scale=1.0,
        rc={
            "figure.figsize": (6.4, 4.2),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 9,
            "image.cmap": "viridis",
            "savefig.bbox": "tight",
            "pdf.fonttype": 42,
        },
    )


def label_text(profile: str, dataset: str | None = None) -> str:
    """The corner label: ``"profile: smoke"``, or ``"profile: cpu · CIFAR-10 (JPEG copy)"``."""
    return f"profile: {profile}" + (f" · {dataset}" if dataset else "")


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


def _stamp(fig: Figure, text: str) -> None:
    for old in [t for t in fig.texts if t.get_gid() == LABEL_GID]:
        old.remove()
    # just below the figure, where no axis label can sit; the tight bounding box of every save
    # (and of the notebooks' inline images) grows to include it
    fig.text(0.995, -0.005, text, ha="right", va="top", fontsize=7, color="0.35",
             gid=LABEL_GID)


def _write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; figures are for sharing and serving
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _savefig(fig: Figure, path: Path, fmt: str) -> None:
    # fontTools warns "'created' timestamp seems very low" on every TrueType font it subsets
    # for the PDF; it is noise in a chapter's output, not a problem with the figure.
    logging.getLogger("fontTools").setLevel(logging.ERROR)

    def write(tmp: str) -> None:
        # a fixed hash salt makes the SVG's element ids reproducible
        with mpl.rc_context({"svg.hashsalt": path.stem}):
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI if fmt == "png" else "figure",
                        metadata=_METADATA[fmt])

    _write_atomic(path, write)


def read_index(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """The figure index ``{id: entry}`` of ``directory`` (default: the figures folder); ``{}`` if none.

    An entry holds ``caption``, ``profile``, ``dataset``, ``files`` (format -> file name, relative
    to the folder) and ``provenance`` (git commit, date, package versions, device, igrlib version).
    """
    file = (directory or paths.figures_dir()) / INDEX_NAME
    if not file.exists():
        return {}
    return json.loads(file.read_text())


def _record(directory: Path, fig_id: str, entry: dict[str, Any]) -> None:
    # an exclusive lock makes the read-modify-write safe when two notebooks save at once
    with open(directory / ".index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        index = read_index(directory)
        index[fig_id] = entry
        text = json.dumps(index, indent=1, sort_keys=True) + "\n"
        _write_atomic(directory / INDEX_NAME, lambda tmp: Path(tmp).write_text(text))


def save(fig: Figure, fig_id: str, *, profile: str, caption: str,
         dataset: str | None = None) -> dict[str, Path]:
    """Export ``fig`` as ``<figures_dir>/<fig_id>.{pdf,svg,png}`` and record it in ``index.json``.

    ``fig_id`` is lower-case letters, digits and hyphens (``"fig2a"``, ``"tour-modified-loss"``);
    ``profile`` one of :data:`igrlib.config.PROFILES`; ``dataset`` an optional data-set label for
    the corner stamp. The only change to ``fig`` is the corner label (replaced if already there),
    so the notebook still shows the figure, label included. Each file is written to a temporary
    name and renamed, so a reader never sees half a file. Returns ``{format: path}``.
    """
    _check_inputs(fig_id, profile, caption, dataset)
    directory = paths.figures_dir()
    directory.mkdir(parents=True, exist_ok=True)
    _stamp(fig, label_text(profile, dataset))
    written = {fmt: directory / f"{fig_id}.{fmt}" for fmt in FORMATS}
    for fmt, path in written.items():
        _savefig(fig, path, fmt)
    prov = results.provenance()
    prov.pop("wall_time_s")
    prov["igrlib_version"] = igrlib.__version__
    _record(directory, fig_id, {
        "caption": caption.strip(),
        "profile": profile,
        "dataset": dataset,
        "files": {fmt: path.name for fmt, path in written.items()},
        "provenance": prov,
    })
    return written
