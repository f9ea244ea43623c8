"""The book's table of contents: which pages it lists, which of them are executable chapters, and
which chapters run a ``paper`` grid (what the GPU recipe runs).

Shared by ``scripts/run_chapter.py``, ``scripts/gpu_recipe.sh`` and the tests, so all agree on
what a chapter is.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
TOC = ROOT / "_toc.yml"


def toc_files(toc: Path = TOC) -> list[str]:
    """Every ``root:`` and ``file:`` entry of a Jupyter Book toc, in order, as written there."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    found.append(str(node[key]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(toc.read_text()))
    return found


def is_notebook(path: Path) -> bool:
    """True for a MyST notebook: a ``.md`` file whose front matter declares jupytext and a kernel."""
    text = path.read_text()
    if not text.startswith("---"):
        return False
    front = yaml.safe_load(text.split("---", 2)[1]) or {}
    return "jupytext" in front and "kernelspec" in front


def chapters(toc: Path = TOC) -> list[str]:
    """Names (file stems) of the toc's executable chapters, in toc order, e.g. ``["tour", ...]``."""
    names = []
    for entry in toc_files(toc):
        path = ROOT / f"{entry.removesuffix('.md')}.md"
        if path.exists() and is_notebook(path):
            names.append(path.stem)
    return names


def experiments(chapter: str) -> list[str]:
    """The ``igrlib.experiments`` modules a chapter imports (``from igrlib.experiments import a,
    b as c``: the module names, not their aliases)."""
    text = (BOOK / f"{chapter}.md").read_text()
    found: list[str] = []
    for names in re.findall(r"^\s*from igrlib\.experiments import ([\w, ]+)$", text, flags=re.M):
        found += [n.split()[0] for n in names.split(",") if n.strip()]
    return found


def paper_chapters(toc: Path = TOC) -> list[str]:
    """The chapters that run a ``paper`` grid: those importing an experiment module with a
    ``grid`` function and a ``"paper"`` entry in its ``PROFILES``. These are what a GPU must run;
    the other chapters compute in seconds to minutes wherever the book is built. Imports igrlib
    (and so JAX), hence only here, not at module level."""
    import importlib

    def has_paper_grid(module: str) -> bool:
        mod = importlib.import_module(f"igrlib.experiments.{module}")
        return callable(getattr(mod, "grid", None)) and "paper" in getattr(mod, "PROFILES", {})

    return [c for c in chapters(toc) if any(has_paper_grid(m) for m in experiments(c))]


if __name__ == "__main__":
    # `python scripts/book_toc.py [--paper]`: the chapters (or those with a paper grid), one a line
    print("\n".join(paper_chapters() if "--paper" in sys.argv[1:] else chapters()))
