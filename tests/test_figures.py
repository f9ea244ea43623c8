"""igrlib.io.figures: two variants × three files per figure, per profile, a corner label, an index
entry with both provenances, no rewrite of an unchanged figure, clean failures."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from igrlib.config import ConfigError
from igrlib.io import figures


@pytest.fixture
def figdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IGR_FIGURES_DIR", str(tmp_path / "figs"))
    figures.use_style()
    yield tmp_path / "figs"
    plt.close("all")


def draw(variant: str, slope: float = 2.0):
    fig, (ax,) = figures.subplots(1, variant)
    ax.plot([0, 1, 2], [0, slope, 2 * slope])
    ax.set(xlabel="x", ylabel="y")
    return fig


def labels(figure) -> list[str]:
    return [t.get_text() for t in figure.texts if t.get_gid() == figures.LABEL_GID]


def test_save_writes_both_variants_per_profile_and_an_index_entry(figdir: Path) -> None:
    fig = figures.save(draw, "fig2a", profile="cpu", caption="R_IG against λ")
    folder = figdir / "cpu"
    for variant, stem in (("paper", "fig2a"), ("slide", "fig2a-slide")):
        assert (folder / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        svg = (folder / f"{stem}.svg").read_text()
        assert "<text" in svg and "profile: cpu" in svg, "SVG text must be real text"
        for fmt in figures.FORMATS:
            assert stat.S_IMODE((folder / f"{stem}.{fmt}").stat().st_mode) == 0o644
    with Image.open(folder / "fig2a-slide.png") as png:
        assert np.allclose(png.info["dpi"], (figures.PNG_DPI,) * 2, atol=0.5)
        assert png.width / png.height == pytest.approx(16 / 9, rel=2e-3)
        assert png.width == pytest.approx(figures.SLIDE_SIZE_IN[0] * figures.PNG_DPI, rel=1e-3)
    assert not list(folder.glob(".tmp-*")), "temporary files left behind"
    assert plt.fignum_exists(fig.number), "the paper figure stays open for the notebook"
    assert len(plt.get_fignums()) == 1, "the slide figure is closed"

    entry = figures.read_index("cpu")["fig2a"]
    assert entry == json.loads((folder / "index.json").read_text())["fig2a"]
    assert entry["caption"] == "R_IG against λ" and entry["profile"] == "cpu"
    assert entry["variants"]["slide"]["files"]["png"] == "fig2a-slide.png"
    drawn = entry["variants"]["paper"]["drawn"]
    assert drawn["igrlib_version"] and drawn["date"] and "git_commit" in drawn
    assert entry["variants"]["slide"]["layout"]["min_font_pt"] >= figures.SLIDE_MIN_PT
    assert entry["runs"] is None


def test_profiles_never_share_files(figdir: Path) -> None:
    figures.save(draw, "same-id", profile="cpu", caption="cpu figure")
    cpu_png = (figdir / "cpu" / "same-id.png").read_bytes()
    figures.save(lambda v: draw(v, slope=-1.0), "same-id", profile="smoke", caption="smoke figure")
    assert (figdir / "cpu" / "same-id.png").read_bytes() == cpu_png
    assert figures.read_index("cpu")["same-id"]["caption"] == "cpu figure"
    assert figures.read_index("smoke")["same-id"]["caption"] == "smoke figure"


def test_unchanged_figure_is_not_rewritten_a_changed_one_is(figdir: Path) -> None:
    figures.save(draw, "stable", profile="smoke", caption="c")
    files = sorted((figdir / "smoke").glob("stable*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    drawn = figures.read_index("smoke")["stable"]["variants"]["paper"]["drawn"]
    figures.save(draw, "stable", profile="smoke", caption="new caption")
    assert {p: p.stat().st_mtime_ns for p in files} == before
    entry = figures.read_index("smoke")["stable"]
    assert entry["caption"] == "new caption" and entry["variants"]["paper"]["drawn"] == drawn
    figures.save(lambda v: draw(v, slope=5.0), "stable", profile="smoke", caption="c")
    assert (figdir / "smoke" / "stable.svg").stat().st_mtime_ns != before[figdir / "smoke" / "stable.svg"]


def test_runs_provenance_is_summarised(figdir: Path) -> None:
    cpu = {"device": {"count": 1, "kind": "cpu"}, "host_cpus": 2}
    runs = pd.DataFrame({"provenance": [
        {"git_commit": "abc", "date": "2026-11-20T10:00:00+00:00", **cpu},
        {"git_commit": "def", "date": "2026-11-21T09:00:00+00:00", **cpu},
        {"git_commit": "abc", "date": "2026-11-19T08:00:00+00:00", **cpu}]})
    figures.save(draw, "with-runs", profile="cpu", caption="c", runs=runs)
    summary = figures.read_index("cpu")["with-runs"]["runs"]
    assert summary == {"n": 3, "commits": ["abc", "def"], "first": "2026-11-19T08:00:00+00:00",
                       "last": "2026-11-21T09:00:00+00:00", "machines": ["1 × cpu (2 host CPUs)"]}
    assert figures.runs_sentence(summary) == \
        "rendered 3 stored records computed 2026-11-19 – 2026-11-21 at commits abc, def"
    assert figures.runs_sentence(None) == "no stored runs: computed as the chapter executed, or read from its own files"


def test_label_names_profile_and_dataset_in_the_bottom_right_corner(figdir: Path) -> None:
    fig = figures.save(draw, "cifar-acc", profile="smoke", caption="accuracy",
                       dataset="CIFAR-10 (JPEG copy)")
    assert labels(fig) == ["profile: smoke · CIFAR-10 (JPEG copy)"]
    slide = figures.render(draw, "slide", "profile: paper")
    (label,) = [t for t in slide.texts if t.get_gid() == figures.LABEL_GID]
    assert label.get_fontsize() >= figures.SLIDE_MIN_PT
    box = label.get_window_extent(slide.canvas.get_renderer())
    width, height = slide.canvas.get_width_height()
    assert box.x1 <= width and box.x0 > width / 2 and 0 <= box.y0 and box.y1 < 0.1 * height


def test_the_label_is_drawn_in_the_slide_png(figdir: Path) -> None:
    """The saved slide differs from the same drawing without a label only in the bottom corner."""
    figures.save(draw, "with-label", profile="smoke", caption="c")
    with Image.open(figdir / "smoke" / "with-label-slide.png") as png:
        with_label = np.asarray(png.convert("L"), dtype=float)
    bare = figures.render(draw, "slide", " ")
    bare.savefig(figdir / "bare.png", dpi=figures.PNG_DPI)
    with Image.open(figdir / "bare.png") as png:
        bare_px = np.asarray(png.convert("L"), dtype=float)
    rows, cols = np.nonzero(np.abs(with_label - bare_px) > 50)
    h, w = bare_px.shape
    assert rows.size > 50, "no label ink in the saved PNG"
    assert rows.min() > 0.9 * h and cols.min() > 0.5 * w, "ink outside the bottom-right corner"


def test_save_needs_a_drawing_function(figdir: Path) -> None:
    fig, _ = plt.subplots()
    with pytest.raises(ConfigError, match="draw\\(variant\\)"):
        figures.save(fig, "a-figure", profile="smoke", caption="c")
    with pytest.raises(ConfigError, match="must return a matplotlib Figure"):
        figures.save(lambda v: None, "a-figure", profile="smoke", caption="c")
    assert not (figdir / "smoke" / "a-figure.png").exists()


@pytest.mark.parametrize("fig_id", ["Fig2", "fig_2", "fig 2", "", "-fig", "fig--2", "fig-", "a/b", 3])
def test_bad_id_raises_before_drawing(figdir: Path, fig_id) -> None:
    with pytest.raises(ConfigError, match="figure id"):
        figures.save(draw, fig_id, profile="smoke", caption="c")
    assert not figdir.exists() and not plt.get_fignums()


@pytest.mark.parametrize("profile", ["gpu", "", None, "Smoke"])
def test_bad_profile_raises(figdir: Path, profile) -> None:
    with pytest.raises(ConfigError, match="profile"):
        figures.save(draw, "ok-id", profile=profile, caption="c")
    assert not figdir.exists()


@pytest.mark.parametrize("kwargs", [{"caption": "  "}, {"caption": "c", "dataset": ""}])
def test_empty_caption_or_dataset_raises(figdir: Path, kwargs) -> None:
    with pytest.raises(ConfigError):
        figures.save(draw, "ok-id", profile="smoke", **kwargs)


def test_failed_save_keeps_the_old_files(figdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures.save(draw, "stable", profile="smoke", caption="c")
    before = (figdir / "smoke" / "stable.pdf").read_bytes()

    def broken(self, target, *args, **kwargs):
        if isinstance(target, str):
            Path(target).write_bytes(b"half a file")
            raise OSError("disk full")
        return real(self, target, *args, **kwargs)

    real = plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        figures.save(lambda v: draw(v, slope=7.0), "stable", profile="smoke", caption="c")
    assert (figdir / "smoke" / "stable.pdf").read_bytes() == before
    assert not list((figdir / "smoke").glob(".tmp-*"))


def test_saving_twice_is_byte_identical(figdir: Path) -> None:
    figures.save(draw, "same", profile="smoke", caption="c")
    first = {p.name: p.read_bytes() for p in (figdir / "smoke").glob("same*")}
    for p in (figdir / "smoke").glob("same*"):
        p.unlink()  # force a rewrite
    figures.save(draw, "same", profile="smoke", caption="c")
    second = {p.name: p.read_bytes() for p in (figdir / "smoke").glob("same*")}
    assert first == second and len(first) == 6


def test_check_script_fails_on_an_illegible_saved_figure(figdir: Path) -> None:
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import check_figures

    figures.save(draw, "clean", profile="cpu", caption="a legible figure")
    assert figures.illegible("cpu") == {} and check_figures.main(["cpu"]) == 0

    def crowded(variant: str):
        fig, (ax,) = figures.subplots(1, variant)
        ax.text(0.5, 0.5, "first label", transform=ax.transAxes)
        ax.text(0.51, 0.5, "second label", transform=ax.transAxes)
        return fig

    figures.save(crowded, "crowded", profile="cpu", caption="two labels at one spot")
    problems = figures.illegible("cpu")
    assert set(problems) == {"crowded/paper", "crowded/slide"}
    assert problems["crowded/slide"]["overlaps"] == [["first label", "second label"]]
    assert check_figures.main(["cpu"]) == 1
    assert figures.illegible("smoke") == {}, "profiles are checked apart"
