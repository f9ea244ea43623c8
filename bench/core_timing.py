"""Step-time numbers: epoch time and the cost of the penalty gradient.

Run: ``.venv/bin/python bench/core_timing.py [--widths 50 200 800] [--reps 20]``.

(a) Seconds per epoch of mini-batch SGD on the full MNIST training set (60,000 images, batch
    512, 117 steps), 5-hidden-layer ReLU MLP, one run, through the training program's own
    jitted, scanned ``advance`` (:func:`igrlib.training.program.program`). The first epoch
    (compile) is reported apart; the figure is the mean of epochs 2 and 3. One evaluation (loss and accuracy on the full train and test splits) is
    timed too.
(b) Time of one jitted SGD step of E + μ‖∇E‖² (EGR, μ = 0.01) with each penalty-gradient method,
    divided by the time of one plain SGD step, on the same batch of 512 MNIST images. After a
    warm-up call, the cases are called in turn (plain, hvp, double_backprop, finite_difference,
    plain, …) ``reps`` times; each ratio is the median over repeats of t_method / t_plain within
    the repeat, which cancels most of the drift in speed on a shared machine.

The load average is printed at the start and the end: on a shared 2-core machine the absolute
times scale with it; the ratios much less.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from igrlib.io import data
from igrlib.maths import losses, objectives
from igrlib.training.config import TrainConfig
from igrlib.training.program import program

BATCH = 512
MU = 0.01
STEP_LR = 0.01


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def epoch_times(width: int, mnist: data.Dataset) -> dict[str, float]:
    """Seconds for: the first epoch (with compile), epochs 2 and 3 (mean), one evaluation."""
    cfg = TrainConfig(width=width, depth=5, batch_size=BATCH, epochs=3, learning_rate=0.1,
                      selection="test")
    prog = program(cfg.program_key(), len(mnist.x_train), batched=False)
    x, y = jnp.asarray(mnist.x_train), jnp.asarray(mnist.y_train)
    one = jnp.ones(1, bool)
    hps = {k: jnp.asarray([v], jnp.float32) for k, v in cfg.vmapped().items()}
    carry = prog.init(jnp.zeros(1, jnp.uint32), hps, x[:2])
    jax.block_until_ready(carry)
    times = []
    for epoch in range(3):
        start = time.perf_counter()
        carry = prog.advance(carry, one, epoch, x, y)
        jax.block_until_ready(carry)
        times.append(time.perf_counter() - start)
    splits = {"train": objectives.split(mnist.x_train, mnist.y_train),
              "test": objectives.split(mnist.x_test, mnist.y_test)}
    _timed(lambda: prog.evaluate(carry, splits))  # compile
    eval_s = _timed(lambda: prog.evaluate(carry, splits))
    steps = prog.steps_per_epoch
    return {"steps": steps, "first_epoch_s": times[0], "epoch_s": float(np.mean(times[1:])),
            "eval_s": eval_s}


def step_functions(width: int, xb: jax.Array, yb: jax.Array):
    """Jitted single SGD steps ``params -> params``: plain, then one per penalty method."""
    model = TrainConfig(width=width, depth=5, selection="test").build_model()
    params, state = model.init(jax.random.key(0), xb[:2])
    loss_fn = objectives.loss_fn(model)
    tx = optax.sgd(STEP_LR)
    opt = tx.init(params)

    def apply(p, g):
        updates, _ = tx.update(g, opt, p)
        return optax.apply_updates(p, updates)

    def plain(p):
        _, g = jax.value_and_grad(loss_fn, has_aux=True)(p, state, xb, yb)
        return apply(p, g)

    def penalised(method: str):
        grad_fn = losses.penalized_value_and_grad(loss_fn, MU, method)

        def step(p):
            _, _, total = grad_fn(p, state, xb, yb)
            return apply(p, total)

        return step

    fns = {"plain": jax.jit(plain)}
    fns.update({m: jax.jit(penalised(m)) for m in losses.PENALTY_METHODS})
    return params, fns


def step_ratios(width: int, xb: jax.Array, yb: jax.Array, reps: int) -> dict[str, float]:
    """Milliseconds per plain step, and the median per-repeat ratio t_method / t_plain."""
    params, fns = step_functions(width, xb, yb)
    compile_s = {name: _timed(lambda f=f: f(params)) for name, f in fns.items()}
    for f in fns.values():  # a second warm-up: first executions can still allocate
        _timed(lambda f=f: f(params))
    per_rep = {name: [] for name in fns}
    for _ in range(reps):
        for name, f in fns.items():
            per_rep[name].append(_timed(lambda f=f: f(params)))
    plain = np.asarray(per_rep["plain"])
    out = {"plain_ms": 1e3 * float(np.median(plain))}
    for name in losses.PENALTY_METHODS:
        out[f"{name}_ms"] = 1e3 * float(np.median(per_rep[name]))
        out[name] = float(np.median(np.asarray(per_rep[name]) / plain))
    out["compile_s"] = sum(compile_s.values())
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[50, 200, 800])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)

    print(f"# core timing: {platform.node()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"on {jax.devices()[0].platform}; {_load()}")
    mnist = data.load("mnist")
    xb, yb = jnp.asarray(mnist.x_train[:BATCH]), jnp.asarray(mnist.y_train[:BATCH])

    print("\n## (a) MNIST, 5-hidden-layer MLP, SGD, batch 512 (117 steps per epoch)\n")
    print("| width | s/epoch (epochs 2-3) | first epoch incl. compile (s) | one full evaluation (s) |")
    print("|---|---|---|---|")
    for width in args.widths:
        t = epoch_times(width, mnist)
        print(f"| {width} | {t['epoch_s']:.2f} | {t['first_epoch_s']:.1f} | {t['eval_s']:.2f} |",
              flush=True)

    print(f"\n## (b) one SGD step of E + μ‖∇E‖² / one plain step (batch 512, median of "
          f"{args.reps} interleaved repeats)\n")
    methods = losses.PENALTY_METHODS
    print("| width | plain (ms) | " + " | ".join(f"{m} (ms)" for m in methods) + " | "
          + " | ".join(f"{m} ratio" for m in methods) + " |")
    print("|---|---|" + "---|" * (2 * len(methods)))
    for width in args.widths:
        r = step_ratios(width, xb, yb, args.reps)
        print(f"| {width} | {r['plain_ms']:.1f} | "
              + " | ".join(f"{r[f'{m}_ms']:.1f}" for m in methods) + " | "
              + " | ".join(f"{r[m]:.2f}" for m in methods) + " |", flush=True)
    print(f"\n# end; {_load()}")


if __name__ == "__main__":
    main()
