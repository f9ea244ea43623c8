"""pytest plugin for nbval runs: keep each fully passing notebook with the outputs nbval received.

    python -m pytest --nbval-lax -p nbval_capture --nbval-save-dir DIR chapter.ipynb

(with ``scripts/`` on ``PYTHONPATH``). nbval executes every cell but keeps the outputs only in
memory; this writes them, as an executed notebook ``DIR/<name>.ipynb``, when every cell passed.
``tests/conftest.py`` hands these notebooks to the smoke build of the book through its
jupyter-cache, so each chapter is executed once per test session, not once by nbval and again by
the build.

nbval executes cells with ``store_history=False``, under which IPython ignores a trailing
semicolon; the plugin drops those results as an ordinary execution would, so the book shows the
same outputs as when it executes the chapter itself.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from IPython.core.displayhook import DisplayHook


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--nbval-save-dir", default=None,
                     help="write each notebook whose cells all passed, with outputs, here")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    folder = session.config.getoption("nbval_save_dir")
    if not folder or exitstatus != 0:
        return
    notebooks: dict[str, nbformat.NotebookNode] = {}
    counts: dict[str, int] = {}
    for item in session.items:
        outputs = getattr(item, "test_outputs", None)  # set by nbval's IPyNbCell once it ran
        if outputs is None:
            return
        name = Path(str(item.parent.fspath)).name
        counts[name] = counts.get(name, 0) + 1
        if DisplayHook.semicolon_at_end_of_expression(item.cell.source):
            outputs = [o for o in outputs if o.get("output_type") != "execute_result"]
        item.cell.outputs = outputs  # item.cell is a cell of item.parent.nb
        item.cell.execution_count = counts[name]
        for out in outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = counts[name]
        notebooks[name] = item.parent.nb
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, notebook in notebooks.items():
        nbformat.write(notebook, Path(folder) / name)
