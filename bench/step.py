"""Section 1: igrlib's training step vs a hand-written PyTorch loop and a plain Haiku+optax loop.

Per width, the three loops train the same 5-hidden-layer MLP with SGD on mini-batches of random
MNIST-shaped data, timed interleaved. Reported: milliseconds and steps per second of each, the
ratios ``t_igrlib / t_torch`` (target ≤ 1) and ``t_igrlib / t_haiku`` (igrlib's own overhead),
and the matmul GFLOP/s each achieves (:func:`bench.roofline.mlp_step_flops`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench import jax_loops, roofline, timing, torch_loop


def cases(width: int, steps: int, batch_size: int) -> list[timing.Case]:
    """igrlib, Haiku+optax and PyTorch loops of ``steps`` steps per call on the same data."""
    x, y = jax_loops.random_data(steps * batch_size, seed=width)
    return [
        jax_loops.igrlib_loop(jax_loops.igrlib_config(width, len(x), batch_size=batch_size), x, y),
        jax_loops.haiku_loop(width, x, y, batch_size=batch_size),
        torch_loop.torch_loop(width, x, y, batch_size=batch_size),
    ]


def measure(width: int, steps: int, repeats: int, batch_size: int = 512) -> dict[str, Any]:
    """One width: each loop runs ``steps`` steps per call, ``repeats`` interleaved calls."""
    times = timing.interleaved(cases(width, steps, batch_size), repeats)
    flops = roofline.mlp_step_flops(width, batch_size)
    return {
        "width": width,
        "cases": times.summary(),
        "gflop_per_s": {k: flops / times.median(k) / 1e9 for k in times.per_step},
        "igrlib_over_torch": times.ratio("igrlib", "torch"),
        "igrlib_over_haiku": times.ratio("igrlib", "haiku"),
    }


def run(widths: Sequence[int], steps: Mapping[int, int], repeats: int,
        batch_size: int = 512) -> dict[str, Any]:
    """Every width; ``steps[width]`` steps per timed call."""
    return {
        "settings": {"widths": list(widths), "depth": 5, "batch_size": batch_size,
                     "steps_per_call": {str(w): steps[w] for w in widths}, "repeats": repeats,
                     "optimizer": "sgd", "data": "random, 784 features, 10 classes"},
        "rows": [measure(w, steps[w], repeats, batch_size) for w in widths],
    }
