"""What the GPU recipe reads off the toc: which chapters run a ``paper`` grid."""

from __future__ import annotations

import importlib

from book_toc import chapters, experiments, paper_chapters


def test_experiment_imports_are_read_with_their_aliases(tmp_path, monkeypatch):
    import book_toc
    (tmp_path / "x.md").write_text("from igrlib.experiments import edge_of_stability as eos, mnist_mlp\n")
    monkeypatch.setattr(book_toc, "BOOK", tmp_path)
    assert experiments("x") == ["edge_of_stability", "mnist_mlp"]


def test_every_chapter_with_a_paper_profile_is_run_by_the_gpu_recipe():
    listed = set(paper_chapters())
    for chapter in chapters():
        modules = [importlib.import_module(f"igrlib.experiments.{m}") for m in experiments(chapter)]
        if any("paper" in getattr(m, "PROFILES", {}) for m in modules):
            assert chapter in listed, f"{chapter} has a paper profile but no grid the GPU recipe sees"
