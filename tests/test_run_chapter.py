"""scripts/run_chapter.py: output names per parameters; execute into a temporary notebook, move
into place only on success, keep a failure as <name>.failed.ipynb without touching a good one."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import run_chapter  # scripts/ is on sys.path (tests/conftest.py)


def test_output_names_differ_by_parameters() -> None:
    assert run_chapter.default_output("egr", "paper", {}) == run_chapter.RUNS / "egr-paper.ipynb"
    assert run_chapter.default_output("mnist_igr", "cpu", {"seeds": 3, "widths": [50, 200]}).name \
        == "mnist_igr-cpu-seeds3-widths.50.200.ipynb"
    assert run_chapter.summary({"seeds": 3}) != run_chapter.summary({"seeds": [3]})
    long = {"widths": list(range(50, 2000, 50))}
    name = run_chapter.summary(long)
    assert name.startswith("p") and len(name) == 9
    assert name != run_chapter.summary({"widths": list(range(50, 2000, 100))})


def _notebook(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)
    return path


def _outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.book
def test_success_moves_into_place_and_failure_never_replaces_it(tmp_path, capsys) -> None:
    output = tmp_path / "runs" / "ch-smoke.ipynb"
    good = _notebook(tmp_path / "good.ipynb", "print('good run')")
    assert run_chapter.execute(good, output, {}) == 0
    assert "good run" in _outputs(output)
    bad = _notebook(tmp_path / "bad.ipynb", "print('bad run'); raise RuntimeError('boom')")
    assert run_chapter.execute(bad, output, {}) == 1
    assert "good run" in _outputs(output)                      # the good notebook is intact
    failed = output.with_name("ch-smoke.failed.ipynb")
    assert "bad run" in _outputs(failed)
    assert "boom" in capsys.readouterr().err
    assert sorted(p.name for p in output.parent.iterdir()) == ["ch-smoke.failed.ipynb", "ch-smoke.ipynb"]
    assert run_chapter.execute(good, output, {}) == 0          # a new success clears the stale failure
    assert sorted(p.name for p in output.parent.iterdir()) == ["ch-smoke.ipynb"]
