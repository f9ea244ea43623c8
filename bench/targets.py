"""The benchmark targets, checked against a results dict of :mod:`bench.run`.

Each target is a measured value, a comparison and a limit:

* training step: ``t_igrlib / t_torch ≤ 1`` at every width;
* penalty: ``t_igrlib,hvp / t_torch,double-backprop ≤ 1`` at every width, and
  ``t_finite-difference / t_plain ≤ 2.1`` at the widest width (800);
* grid: the grid runner's speed-up over sequential runs ``≥ 1`` at every width, and ``≥ 1.5`` for
  the grid of the narrowest width (16 runs at width 50);
* curvature: ``k_lanczos / k_power ≤ 1/3``;
* roofline: the width-800 step at ``≥ 0.70`` of the dense-matmul FLOP/s;
* convolutions (CPU): igrlib's ResNet-18 step ``≤ 1.1×`` a Python loop of one jitted step;
* probes: training with the ``cpu`` profile's default probes ``≤ 1.25×`` training without;
* executors: a sweep of the longest programs on a fresh pool of two worker processes ``≤ 1×``
  the same sweep in this process.

A section absent from the results contributes no target.
"""

from __future__ import annotations

import operator
from typing import Any

OPS = {"<=": operator.le, ">=": operator.ge}


def target(tid: str, section: str, what: str, value: float | None, op: str, limit: float) -> dict[str, Any]:
    """One target's record; ``met`` is False when the value is missing."""
    met = value is not None and OPS[op](value, limit)
    return {"id": tid, "section": section, "what": what, "value": value, "op": op,
            "limit": limit, "met": bool(met)}


def check(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target that the sections present allow to check."""
    out = []
    if "step" in sections:
        for row in sections["step"]["rows"]:
            w = row["width"]
            out.append(target(f"step-vs-torch-w{w}", "step", f"igrlib step / PyTorch step, width {w}",
                              row["igrlib_over_torch"], "<=", 1.0))
    if "penalty" in sections:
        rows = sections["penalty"]["rows"]
        for row in rows:
            w = row["width"]
            out.append(target(f"hvp-vs-torch-w{w}", "penalty",
                              f"igrlib HVP penalty step / PyTorch double backprop, width {w}",
                              row["hvp_over_torch_double_backprop"], "<=", 1.0))
        widest = max(rows, key=lambda r: r["width"])
        out.append(target(f"fd-over-plain-w{widest['width']}", "penalty",
                          f"finite-difference penalty step / plain step, width {widest['width']}",
                          widest["over_plain"]["finite_difference"], "<=", 2.1))
    if "grid" in sections:
        rows = sections["grid"]["rows"]
        for row in rows:
            w = row["width"]
            out.append(target(f"grid-not-slower-w{w}", "grid",
                              f"grid runner speed-up over sequential runs, width {w} ({row['runs']} runs)",
                              row["speedup_vs_sequential"]["runner"], ">=", 1.0))
        narrow = min(rows, key=lambda r: r["width"])
        out.append(target(f"grid-speedup-w{narrow['width']}", "grid",
                          f"grid runner speed-up, {narrow['runs']} runs at width {narrow['width']}",
                          narrow["speedup_vs_sequential"]["runner"], ">=", 1.5))
    if "eigen" in sections:
        e = sections["eigen"]
        out.append(target("lanczos-hvps", "eigen",
                          f"HVPs to rel. error {e['settings']['rtol']:g}: Lanczos / power iteration",
                          e["hvp_ratio"], "<=", 1 / 3))
    if "roofline" in sections:
        r = sections["roofline"]
        out.append(target(f"roofline-w{r['settings']['width']}", "roofline",
                          f"width-{r['settings']['width']} igrlib step FLOP/s / matmul FLOP/s",
                          r["fraction_of_matmul"]["igrlib"], ">=", 0.70))
    if "conv" in sections and "skipped" not in sections["conv"]:
        c = sections["conv"]
        out.append(target("conv-step-overhead", "conv",
                          f"ResNet-18 x{c['settings']['width']:g} step: igrlib / Python loop of a jitted step",
                          c["igrlib_over_python_loop"], "<=", 1.1))
    if "probes" in sections:
        p = sections["probes"]
        out.append(target("probe-overhead", "probes",
                          f"training with default probes / without, {p['settings']['runs']} runs "
                          f"at width {p['settings']['width']}",
                          p["overhead_ratio"], "<=", 1.25))
    if "executors" in sections:
        x = sections["executors"]
        out.append(target("executors-longest", "executors",
                          f"sweep of {x['settings']['programs']} programs of {x['settings']['epochs'][-1]} "
                          "epochs: 2 fresh worker processes / in-process",
                          x["longest_process_cold_over_inline"], "<=", 1.0))
    return out


def table(targets: list[dict[str, Any]]) -> str:
    """A plain-text table: what, measured, limit, met."""
    width = max((len(t["what"]) for t in targets), default=10)
    lines = [f"{'target':<{width}}  {'measured':>9}  {'limit':>8}  met"]
    for t in targets:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"{t['what']:<{width}}  {value:>9}  {t['op']} {t['limit']:<5.3g}  "
                     f"{'yes' if t['met'] else 'NO'}")
    met = sum(t["met"] for t in targets)
    lines.append(f"{met} of {len(targets)} targets met")
    return "\n".join(lines)
