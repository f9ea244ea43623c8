"""Every chapter of the toc, executed at the smoke profile under nbval, and its first-cell checks.

nbval reads ``.ipynb`` only, so each MyST chapter is converted with jupytext into a temporary
folder and run by ``pytest --nbval-lax`` in a subprocess (see ``conftest.nbval``): a cell that
raises fails the chapter; outputs are compared only in cells marked ``# NBVAL_CHECK_OUTPUT``;
the chapters' claims are checked by their own assert cells. The smoke build of the book reuses
these executions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import papermill
import pytest
from book_toc import BOOK, chapters
from conftest import TOC, NbvalRun, to_ipynb

pytestmark = pytest.mark.book

CHAPTERS = chapters(TOC)


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_the_toc_lists_chapters() -> None:
    assert CHAPTERS, f"no executable chapter in {TOC}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_passes_nbval(chapter: str, nbval: Callable[[str], NbvalRun]) -> None:
    run = nbval(chapter)
    tail = "\n".join(run.output.splitlines()[-80:])
    assert run.returncode == 0, f"nbval failed for {chapter} (exit {run.returncode}):\n{tail}"
    assert " passed" in run.output, tail
    assert run.executed is not None, f"{chapter}: nbval passed but kept no executed notebook"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_bad_profile_fails_in_the_first_cell(chapter: str, book_env: dict[str, str],
                                             tmp_path: Path, monkeypatch) -> None:
    """A bogus profile stops the chapter at the first cell after the parameters, with ConfigError."""
    for key, value in book_env.items():
        monkeypatch.setenv(key, value)
    notebook = to_ipynb(chapter, tmp_path)
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"),
                                   parameters={"profile": "bogus"}, cwd=str(BOOK),
                                   kernel_name="python3", progress_bar=False)
    assert err.value.ename == "ConfigError" and "bogus" in err.value.evalue
    cells = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    params = next(i for i, c in enumerate(cells) if "parameters" in tags(c))
    assert err.value.source == cells[params + 1].source, \
        f"{chapter}: the bad profile was not caught by the first cell after the parameters"
