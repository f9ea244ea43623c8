"""Run the benchmark suite, print the targets table, save ``bench/results/<machine>.json``.

    .venv/bin/python -m bench.run            # the full suite (make bench), < 15 min on 2 cores
    .venv/bin/python -m bench.run --quick    # tiny sizes, to check that everything runs
    .venv/bin/python bench/run.py --sections step,roofline

PyTorch gets as many intra-op threads as this process has cores (XLA's CPU client uses one per
core), and ``OMP_WAIT_POLICY=PASSIVE`` unless set: on a machine shared with other work, OpenMP's
default busy-waiting threads make PyTorch up to 10x slower, which would flatter igrlib.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Before torch loads its OpenMP runtime, which reads the variable once.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import book, conv, eigen, executors, grid, machine, penalty, probes, roofline, step, targets, torch_loop  # noqa: E402
from igrlib.io import atomic, paths, results  # noqa: E402

SECTIONS = ("step", "penalty", "roofline", "grid", "eigen", "conv", "probes", "executors", "book")
RESULTS = paths.PROJECT_ROOT / "bench" / "results"
QUICK_RESULTS = paths.PROJECT_ROOT / "build" / "bench"

_STEPS = {50: 20, 200: 8, 800: 3}
#: Full sizes. Step, penalty and roofline share widths and steps per call, so the
#: penalty's plain step and the roofline's loops reuse the step section's compiled programs;
#: at the quick sizes the curvature section's training also reuses the grid's one-run program.
FULL: dict[str, dict[str, Any]] = {
    "step": dict(widths=(50, 200, 800), steps=_STEPS, repeats=9),
    "penalty": dict(widths=(50, 200, 800), steps=_STEPS, repeats=9, mu=0.01),
    "roofline": dict(width=800, steps=_STEPS[800], repeats=7, matmul_n=2048),
    "grid": dict(widths=(50, 100, 200), runs={50: 16, 100: 8, 200: 8},
                 learning_rates=(0.1, 0.05, 0.02, 0.01), repeats=5, n_train=5000, n_test=1000,
                 batch_size=512, epochs=2, eval_every=2),
    "eigen": dict(width=200, n_train=10_000, hvp_batch=1000, train_epochs=6, learning_rate=0.1,
                  ref_iters=24, power_max=100),
    "conv": dict(width=0.0625, steps=8, repeats=7, batch_size=64),
    "probes": dict(width=100, runs=8, n_train=10_000, n_val=5_000, n_test=10_000, batch_size=512,
                   epochs=20, eval_every=2, repeats=3),
    "executors": dict(epochs=(1, 4, 16), programs=4, runs=2, width=16, n_train=2048, n_test=512,
                      batch_size=128, repeats=3, noop_programs=8),
    "book": {},
}
QUICK: dict[str, dict[str, Any]] = {
    "step": dict(widths=(16,), steps={16: 2}, repeats=2, batch_size=32),
    "penalty": dict(widths=(16,), steps={16: 2}, repeats=2, batch_size=32,
                    methods=("hvp", "finite_difference")),
    "roofline": dict(width=16, steps=2, repeats=2, matmul_n=128, batch_size=32),
    "grid": dict(widths=(16,), runs={16: 4}, learning_rates=(0.1, 0.05), repeats=1, n_train=256,
                 n_test=64, batch_size=64, epochs=2, eval_every=1),
    "eigen": dict(width=16, n_train=256, hvp_batch=128, train_epochs=2, learning_rate=0.1,
                  ref_iters=8, power_max=10, batch_size=64, n_test=64, eval_every=1),
    "conv": dict(width=0.0625, steps=2, repeats=1, batch_size=8),
    "probes": dict(width=16, runs=2, n_train=256, n_val=64, n_test=64, batch_size=64, epochs=5,
                   eval_every=1, repeats=1),
    "executors": dict(epochs=(1, 3), programs=2, runs=2, width=16, n_train=256, n_test=64,
                      batch_size=64, repeats=1, noop_programs=4),
    "book": {},
}
RUNNERS = {"step": step.run, "penalty": penalty.run, "roofline": roofline.run, "grid": grid.run,
           "eigen": eigen.run, "conv": conv.run, "executors": executors.run, "probes": probes.run, "book": book.run}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/<machine>.json; with --quick "
                             "build/bench/<machine>-quick.json)")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="the book's build folder to read chapter times from (default _build)")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown or not args.sections:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def run(sections: list[str], quick: bool = False, build_dir: Path | None = None) -> dict[str, Any]:
    """Run ``sections`` and return the results: machine, settings, sections, targets."""
    started = time.perf_counter()
    load_start = machine.load_average()
    threads = machine.cores()
    torch_loop.set_threads(threads)
    description = machine.describe()
    sizes = QUICK if quick else FULL
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in sections:
        kwargs = dict(sizes[name])
        if name == "book":
            kwargs["build_dir"] = build_dir
        print(f"[bench] {name} ...", flush=True)
        t0 = time.perf_counter()
        out[name] = RUNNERS[name](**kwargs)
        seconds[name] = time.perf_counter() - t0
        print(f"[bench] {name}: {seconds[name]:.0f} s (load average {machine.load_average()})",
              flush=True)
    return {
        "machine": {**description, "slug": machine.slug(description),
                    "load_average_start": load_start, "load_average_end": machine.load_average()},
        "threads": {"jax": threads, "torch": threads,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "quick": quick,
        "section_seconds": seconds,
        "wall_s": time.perf_counter() - started,
        "sections": out,
        "targets": targets.check(out),
    }


def main(argv: list[str] | None = None) -> Path:
    """Run, print the targets table, write the JSON; return its path."""
    args = parse_args(argv)
    res = run(args.sections, args.quick, args.build_dir)
    slug = res["machine"]["slug"]
    output = args.output or (QUICK_RESULTS / f"{slug}-quick.json" if args.quick else RESULTS / f"{slug}.json")
    atomic.write_text(output, json.dumps(res, indent=1, sort_keys=True) + "\n")
    print(targets.table(res["targets"]))
    print(f"machine: {res['machine']['cpu_model']}, {res['machine']['cores']} cores; load average "
          f"{res['machine']['load_average_start']} -> {res['machine']['load_average_end']}; "
          f"{res['wall_s']:.0f} s")
    print(f"saved {output}")
    return output


if __name__ == "__main__":
    main()
