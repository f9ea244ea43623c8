"""The book's table of contents: which pages it lists and which of them are executable chapters.

Shared by ``scripts/run_chapter.py`` and the tests, so both agree on what a chapter is.
"""

from __future__ import annotations

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
