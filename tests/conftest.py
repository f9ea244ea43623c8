"""Shared fixtures: a sandbox for figures and results, nbval runs, and one smoke build of the book.

Every test session writes figures and results into temporary folders (``IGR_FIGURES_DIR``,
``IGR_RESULTS_DIR``), so tests never touch the user's ``figures/`` or results store.

Each chapter is executed once per session, under nbval (:func:`nbval`); the smoke build of the
book (:func:`smoke_book`) takes the executed notebooks from its jupyter-cache, primed with what
nbval produced, instead of executing every chapter a second time. A chapter that failed under
nbval is not primed, so the build executes it and fails too.

``IGR_TOC`` points the book tests at another table of contents, e.g. to check one chapter while
writing it: ``IGR_TOC=/tmp/my_toc.yml pytest tests/test_notebooks.py tests/test_book.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))  # book_toc: what the toc lists, which pages are chapters
from book_toc import BOOK, chapters  # noqa: E402

VENV_BIN = Path(sys.executable).parent
TOC = Path(os.environ.get("IGR_TOC", ROOT / "_toc.yml")).resolve()
#: Where CI artifacts go (the build log, the browser screenshot).
ARTIFACTS = ROOT / "build"
BUILD_TIMEOUT_S = 1800
CELL_TIMEOUT_S = 1800


@pytest.fixture(scope="session", autouse=True)
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point figures and results at temporary folders for the whole session."""
    root = tmp_path_factory.mktemp("igr-sandbox")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IGR_FIGURES_DIR", str(root / "figures"))
        mp.setenv("IGR_RESULTS_DIR", str(root / "results"))
        yield root


@pytest.fixture(scope="session")
def book_env(sandbox: Path) -> dict[str, str]:
    """Environment for executing chapters: the smoke profile, the sandbox, this venv first on PATH.

    ``MPLBACKEND`` is dropped: with a non-inline backend the chapters' figures become text.
    """
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["IGR_PROFILE"] = "smoke"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def to_ipynb(chapter: str, folder: Path) -> Path:
    """Convert ``book/<chapter>.md`` with jupytext to ``folder/<chapter>.ipynb``."""
    notebook = jupytext.read(BOOK / f"{chapter}.md")
    notebook.metadata.setdefault("language_info", {"name": "python"})  # papermill needs it
    path = folder / f"{chapter}.ipynb"
    jupytext.write(notebook, path)
    return path


@dataclass(frozen=True)
class NbvalRun:
    """One chapter under ``pytest --nbval-lax``: exit status, output, executed notebook if passed."""

    chapter: str
    returncode: int
    output: str
    executed: Path | None
    seconds: float


@pytest.fixture(scope="session")
def nbval(book_env: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], NbvalRun]:
    """``nbval(chapter)`` runs the chapter at smoke under nbval, once per session, in a subprocess."""
    folder = tmp_path_factory.mktemp("nbval")
    env = dict(book_env, PYTHONPATH=os.pathsep.join(
        p for p in (str(SCRIPTS), book_env.get("PYTHONPATH")) if p))
    runs: dict[str, NbvalRun] = {}

    def run(chapter: str) -> NbvalRun:
        if chapter not in runs:
            work = folder / chapter
            work.mkdir()
            cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--current-env",
                   f"--nbval-cell-timeout={CELL_TIMEOUT_S}", "-p", "no:cacheprovider",
                   "-p", "nbval_capture", f"--nbval-save-dir={work / 'executed'}",
                   "-q", "--rootdir", str(work), str(to_ipynb(chapter, work))]
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            executed = work / "executed" / f"{chapter}.ipynb"
            runs[chapter] = NbvalRun(chapter, proc.returncode, proc.stdout + proc.stderr,
                                     executed if executed.exists() else None,
                                     time.perf_counter() - start)
        return runs[chapter]

    return run


def prime_cache(cache_dir: Path, runs: list[NbvalRun]) -> None:
    """Store the executed notebooks in the jupyter-cache the book build will read."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_dir)
    for run in runs:
        if run.executed is not None:
            cache.cache_notebook_bundle(
                CacheBundleIn(nbformat.read(run.executed, as_version=4),
                              uri=str(BOOK / f"{run.chapter}.md"),
                              data={"execution_seconds": run.seconds}),
                check_validity=False, overwrite=True)


@pytest.fixture(scope="session")
def smoke_book(book_env: dict[str, str], nbval: Callable[[str], NbvalRun],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the whole book at the smoke profile, as `make book` does, into a temporary folder.

    Returns the HTML folder. The build log is kept as ``build/book-smoke.log``.
    """
    out = tmp_path_factory.mktemp("book")
    # book/_ext/igr_book.py keeps one cache per profile, beside the HTML folder
    prime_cache(out / "_build" / ".jupyter_cache" / "smoke", [nbval(c) for c in chapters(TOC)])
    cmd = [str(VENV_BIN / "jupyter-book"), "build", "-W", "-n", "--keep-going",
           "--path-output", str(out), "--toc", str(TOC), str(ROOT)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=book_env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    seconds = time.perf_counter() - start
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "book-smoke.log"
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n"
                   f"exit {proc.returncode} after {seconds:.0f} s\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        pytest.fail(f"smoke build failed (exit {proc.returncode}, log in {log}):\n{tail}")
    return out / "_build" / "html"
