"""The benchmark suite in bench/: its helpers checked exactly, and one run of every section at
tiny sizes (``--quick``) that must write a complete JSON file. No timing is ever asserted: the
machine is shared, and speed is what the suite reports, not what the tests check.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of the repository, not an installed package

pytest.importorskip("torch", reason="the benchmarks need the bench extra: pip install -e '.[bench]'")

from bench import book, eigen, roofline, targets, timing  # noqa: E402
from bench.run import SECTIONS  # noqa: E402

QUICK_TIMEOUT_S = 1200


def test_interleaved_warms_up_then_rotates_the_order() -> None:
    calls: list[str] = []
    cases = [timing.Case(name, lambda name=name: calls.append(name), steps)
             for name, steps in (("a", 1), ("b", 2), ("c", 4))]
    times = timing.interleaved(cases, repeats=3, warmup=2)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: len(v) for k, v in times.per_step.items()} == {"a": 3, "b": 3, "c": 3}
    assert set(times.first_call_s) == {"a", "b", "c"}


def test_interleaved_rejects_bad_arguments() -> None:
    case = timing.Case("a", lambda: None)
    with pytest.raises(ValueError, match="distinct"):
        timing.interleaved([case, case], repeats=1)
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved([case], repeats=0)


def test_ratio_is_paired_by_repeat() -> None:
    # per-repeat ratios 0.5, 0.5, 3 (median 0.5); the ratio of the medians would be 3/2
    times = timing.Timings({"a": np.array([1.0, 10.0, 3.0]), "b": np.array([2.0, 20.0, 1.0])}, {})
    assert times.ratio("a", "b") == 0.5
    assert times.median("a") / times.median("b") == 1.5


def test_step_flops_count_every_matmul() -> None:
    # layers 3→2→4, batch 1: forward 2·(3·2 + 2·4) = 28, step 3 × 28
    assert roofline.mlp_step_flops(2, 1, depth=1, in_dim=3, num_classes=4) == 84
    # the benchmarked width-800 MLP at batch 512
    forward = 2 * 512 * (784 * 800 + 4 * 800 * 800 + 800 * 10)
    assert roofline.mlp_step_flops(800, 512) == 3 * forward


def test_first_below_counts_products() -> None:
    assert eigen.first_below(np.array([0.5, 1e-2, 1e-4, 1e-3]), 1e-3) == 3
    assert eigen.first_below(np.array([0.5, 1e-3]), 1e-3) == 2
    assert eigen.first_below(np.array([1.0, 0.5]), 1e-3) is None


def test_targets_met_and_missed() -> None:
    sections = {
        "step": {"rows": [{"width": 50, "igrlib_over_torch": 0.9},
                          {"width": 800, "igrlib_over_torch": 1.1}]},
        "grid": {"rows": [{"width": 50, "runs": 16, "speedup_vs_sequential": {"runner": 1.4}},
                          {"width": 200, "runs": 8, "speedup_vs_sequential": {"runner": 1.0}}]},
        "eigen": {"settings": {"rtol": 1e-3}, "hvp_ratio": None},
    }
    met = {t["id"]: t["met"] for t in targets.check(sections)}
    assert met == {"step-vs-torch-w50": True, "step-vs-torch-w800": False,
                   "grid-not-slower-w50": True, "grid-not-slower-w200": True,
                   "grid-speedup-w50": False, "lanczos-hvps": False}
    assert "3 of 6 targets met" in targets.table(targets.check(sections))


def _fake_book_cache(build: Path) -> None:
    """A jupyter-cache with one executed chapter at the smoke profile, as myst-nb writes it."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    cache = get_cache(str(build / ".jupyter_cache" / "smoke"))
    cache.cache_notebook_bundle(CacheBundleIn(nb, "/somewhere/book/tour.md",
                                              data={"execution_seconds": 1.5}), check_validity=False)


def test_book_times_read_the_cache(tmp_path: Path) -> None:
    _fake_book_cache(tmp_path)
    out = book.run(tmp_path)
    assert out["profiles"]["cpu"] is None
    assert {k: v["seconds"] for k, v in out["profiles"]["smoke"].items()} == {"tour": 1.5}


def test_quick_run_writes_a_complete_json(tmp_path: Path) -> None:
    build = tmp_path / "_build"
    _fake_book_cache(build)
    output = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "bench.run", "--quick", "--output", str(output),
           "--build-dir", str(build)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "targets met" in proc.stdout and str(output) in proc.stdout

    res = json.loads(output.read_text())
    assert res["quick"] is True
    assert set(res["sections"]) == set(SECTIONS) == set(res["section_seconds"])
    m = res["machine"]
    assert m["cpu_model"] and m["cores"] >= 1 and m["slug"]
    assert len(m["load_average_start"]) == len(m["load_average_end"]) == 3
    assert res["threads"]["torch"] == res["threads"]["jax"] == m["cores"]

    ids = [t["id"] for t in res["targets"]]
    assert len(ids) == len(set(ids)) == 8
    for t in res["targets"]:
        assert isinstance(t["met"], bool)
        assert math.isfinite(t["value"]) and t["value"] > 0, t

    s = res["sections"]
    for row in s["step"]["rows"]:
        assert set(row["cases"]) == {"igrlib", "haiku", "torch"}
        assert all(c["ms"] > 0 for c in row["cases"].values())
    for row in s["penalty"]["rows"]:
        assert set(row["cases"]) == {"plain", "hvp", "finite_difference", "torch", "torch_double_backprop"}
        assert set(row["fd_error"]) == {"relu", "tanh"}
    grid_row = s["grid"]["rows"][0]
    assert grid_row["speedup_vs_sequential"]["sequential"] == 1.0
    assert grid_row["runner_is"] in {"sequential", "vmap", "runner"}
    assert set(s["conv"]["cases"]) == {"igrlib", "python_loop", "scan"}
    assert s["conv"]["igrlib_over_python_loop"] > 0
    r = s["roofline"]
    assert r["step_gflop"] == roofline.mlp_step_flops(r["settings"]["width"], r["settings"]["batch_size"]) / 1e9

    # the benchmark's convergence curves are igrlib's own methods, product for product
    e = s["eigen"]
    assert e["igrlib_check"], "neither method reached the tolerance at the quick sizes"
    products = {"lanczos": e["hvps"]["lanczos"],
                "power": min(len(e["power_rel_error"]), e["settings"]["check_iters"])}
    assert set(e["igrlib_check"]) == set(products)
    for method, check in e["igrlib_check"].items():
        assert check["num_hvps"] == products[method]
        assert abs(check["igrlib"] - check["curve"]) <= 1e-4 * abs(check["curve"]), check
    assert {k: v["seconds"] for k, v in s["book"]["profiles"]["smoke"].items()} == {"tour": 1.5}
