"""Section 5: achieved FLOP/s of a training step against the machine's own dense-matmul FLOP/s.

FLOPs of one SGD step of an MLP with layer sizes ``d_0 → d_1 → … → d_L`` on a batch of ``B``,
counting matrix products only (bias adds, activations and the update are ``O(B·Σd)`` or
``O(m)``, lower order):

* forward ``F = 2·B·Σ_l d_{l−1}·d_l``;
* backward ``≈ 2F`` (one product for the weight gradient and one for the input gradient per
  layer; the first layer's input gradient, which is not needed, is counted too);
* step ``≈ 3F``.

The ceiling is the FLOP/s of ``jnp.dot`` of two ``n×n`` float32 matrices (``2n³`` FLOPs),
timed interleaved with the steps in the same process; the fraction is paired by repeat.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bench import jax_loops, timing


def mlp_step_flops(width: int, batch_size: int, depth: int = 5, in_dim: int = 784,
                   num_classes: int = 10) -> float:
    """``3·2·B·Σ_l d_{l−1}·d_l``: matmul FLOPs of one forward+backward step (see module doc)."""
    sizes = [in_dim] + [width] * depth + [num_classes]
    forward = 2 * batch_size * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 3.0 * forward


def matmul_case(n: int, seed: int = 0) -> timing.Case:
    """One ``n×n @ n×n`` float32 product per call."""
    ka, kb = jax.random.split(jax.random.key(seed))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return timing.Case("matmul", lambda: dot(a, b).block_until_ready(), 1)


def run(width: int, steps: int, repeats: int, matmul_n: int, batch_size: int = 512) -> dict[str, Any]:
    """igrlib's and the plain Haiku loop's step at ``width`` vs the matmul, interleaved."""
    x, y = jax_loops.random_data(steps * batch_size, seed=width)
    cases = [
        jax_loops.igrlib_loop(jax_loops.igrlib_config(width, len(x), batch_size=batch_size), x, y),
        jax_loops.haiku_loop(width, x, y, batch_size=batch_size),
        matmul_case(matmul_n),
    ]
    times = timing.interleaved(cases, repeats)
    step_flops = mlp_step_flops(width, batch_size)
    matmul_flops = 2.0 * matmul_n**3
    return {
        "settings": {"width": width, "depth": 5, "batch_size": batch_size, "steps_per_call": steps,
                     "repeats": repeats, "matmul_n": matmul_n, "dtype": "float32"},
        "step_gflop": step_flops / 1e9,
        "matmul_gflop_per_s": matmul_flops / times.median("matmul") / 1e9,
        "gflop_per_s": {k: step_flops / times.median(k) / 1e9 for k in ("igrlib", "haiku")},
        # (F / t_step,r) / (2n³ / t_matmul,r), median over repeats
        "fraction_of_matmul": {k: step_flops / matmul_flops * times.ratio("matmul", k)
                               for k in ("igrlib", "haiku")},
        "cases": times.summary(),
    }
