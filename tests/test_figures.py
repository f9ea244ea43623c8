"""igrlib.io.figures: three files per figure, a profile label on it, an index entry, clean failures."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from igrlib.io import figures
from igrlib.config import ConfigError


@pytest.fixture
def figdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IGR_FIGURES_DIR", str(tmp_path / "figs"))
    return tmp_path / "figs"


@pytest.fixture
def fig():
    figures.use_style()
    figure, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [0, 1, 4])
    yield figure
    plt.close(figure)


def labels(figure) -> list[str]:
    return [t.get_text() for t in figure.texts if t.get_gid() == figures.LABEL_GID]


def test_save_writes_three_files_and_an_index_entry(figdir: Path, fig) -> None:
    paths = figures.save(fig, "fig2a", profile="cpu", caption="R_IG against λ")
    assert paths == {fmt: figdir / f"fig2a.{fmt}" for fmt in ("pdf", "svg", "png")}
    assert paths["pdf"].read_bytes().startswith(b"%PDF")
    assert b"<svg" in paths["svg"].read_bytes()
    with Image.open(paths["png"]) as png:
        dpi = png.info["dpi"]
        assert png.width > 4 * figures.PNG_DPI * 0.8  # a 4-inch-wide figure at 300 dpi
    assert np.allclose(dpi, (figures.PNG_DPI, figures.PNG_DPI), atol=0.5)
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not list(figdir.glob(".tmp-*")), "temporary files left behind"

    entry = json.loads((figdir / "index.json").read_text())["fig2a"]
    assert entry["caption"] == "R_IG against λ" and entry["profile"] == "cpu"
    assert entry["dataset"] is None
    assert entry["files"] == {"pdf": "fig2a.pdf", "svg": "fig2a.svg", "png": "fig2a.png"}
    prov = entry["provenance"]
    assert prov["igrlib_version"] and prov["date"] and "git_commit" in prov
    assert prov["packages"]["jax"]
    assert figures.read_index(figdir) == json.loads((figdir / "index.json").read_text())


def test_label_names_profile_and_dataset_and_is_replaced_not_stacked(figdir: Path, fig) -> None:
    figures.save(fig, "cifar-acc", profile="smoke", caption="accuracy",
                 dataset="CIFAR-10 (JPEG copy)")
    assert labels(fig) == ["profile: smoke · CIFAR-10 (JPEG copy)"]
    # matplotlib writes each text's string as a comment beside its glyph paths
    assert "profile: smoke · CIFAR-10 (JPEG copy)" in (figdir / "cifar-acc.svg").read_text()
    figures.save(fig, "cifar-acc", profile="paper", caption="accuracy")
    assert labels(fig) == ["profile: paper"]
    svg = (figdir / "cifar-acc.svg").read_text()
    assert "profile: paper" in svg and "profile: smoke" not in svg
    assert figures.read_index(figdir)["cifar-acc"]["profile"] == "paper"


def test_the_label_is_drawn_in_the_png(figdir: Path, fig) -> None:
    """The saved PNG differs from the same figure with a transparent label only in the corner."""
    paths = figures.save(fig, "with-label", profile="smoke", caption="c")
    with Image.open(paths["png"]) as png:
        with_label = np.asarray(png.convert("L"), dtype=float)
    (label,) = [t for t in fig.texts if t.get_gid() == figures.LABEL_GID]
    label.set_alpha(0)  # keeps the tight bounding box, draws nothing
    fig.savefig(figdir / "bare.png", dpi=figures.PNG_DPI)
    with Image.open(figdir / "bare.png") as png:
        bare = np.asarray(png.convert("L"), dtype=float)
    assert with_label.shape == bare.shape
    rows, cols = np.nonzero(np.abs(with_label - bare) > 50)
    h, w = bare.shape
    assert rows.size > 50, "no label ink in the saved PNG"
    assert rows.min() > 0.85 * h and cols.min() > 0.5 * w, "ink outside the bottom-right corner"


def test_index_keeps_other_figures(figdir: Path, fig) -> None:
    figures.save(fig, "a-one", profile="smoke", caption="first")
    figures.save(fig, "b-two", profile="cpu", caption="second")
    index = figures.read_index(figdir)
    assert sorted(index) == ["a-one", "b-two"]
    assert index["a-one"]["caption"] == "first"


def test_save_does_not_close_or_hide_the_figure(figdir: Path, fig) -> None:
    figures.save(fig, "still-open", profile="smoke", caption="c")
    assert plt.fignum_exists(fig.number)
    assert len(fig.axes) == 1 and fig.axes[0].lines


@pytest.mark.parametrize("fig_id", ["Fig2", "fig_2", "fig 2", "", "-fig", "fig--2", "fig-", "a/b", 3])
def test_bad_id_raises_before_writing(figdir: Path, fig, fig_id) -> None:
    with pytest.raises(ConfigError, match="figure id"):
        figures.save(fig, fig_id, profile="smoke", caption="c")
    assert not figdir.exists()
    assert not labels(fig)


@pytest.mark.parametrize("profile", ["gpu", "", None, "Smoke"])
def test_bad_profile_raises(figdir: Path, fig, profile) -> None:
    with pytest.raises(ConfigError, match="profile"):
        figures.save(fig, "ok-id", profile=profile, caption="c")
    assert not figdir.exists()


@pytest.mark.parametrize("kwargs", [{"caption": "  "}, {"caption": "c", "dataset": ""}])
def test_empty_caption_or_dataset_raises(figdir: Path, fig, kwargs) -> None:
    with pytest.raises(ConfigError):
        figures.save(fig, "ok-id", profile="smoke", **kwargs)


def test_failed_save_keeps_the_old_file(figdir: Path, fig, monkeypatch: pytest.MonkeyPatch) -> None:
    figures.save(fig, "stable", profile="smoke", caption="c")
    before = (figdir / "stable.pdf").read_bytes()

    def broken(*args, **kwargs):
        Path(args[0]).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        figures.save(fig, "stable", profile="cpu", caption="c")
    assert (figdir / "stable.pdf").read_bytes() == before
    assert not list(figdir.glob(".tmp-*"))
    assert figures.read_index(figdir)["stable"]["profile"] == "smoke"


def test_saving_twice_is_byte_identical(figdir: Path, fig) -> None:
    first = {f: p.read_bytes() for f, p in figures.save(fig, "same", profile="smoke", caption="c").items()}
    second = {f: p.read_bytes() for f, p in figures.save(fig, "same", profile="smoke", caption="c").items()}
    assert first == second
