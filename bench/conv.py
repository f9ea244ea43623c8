"""Section 7: the ResNet-18 training step on CPU: igrlib's program vs the same step in ``lax.scan``
and in a Python loop of one jitted step.

XLA on CPU runs a convolution inside a loop body several times slower than outside one
(jax-ml/jax#12868), so igrlib trains convolutional networks on CPU from a Python loop over one
jitted step (:attr:`igrlib.training.program.Program.steps_in_python`). This section measures that choice: seconds
per SGD step of the CIFAR ResNet-18 (width multiplier ``width``) on mini-batches of random
CIFAR-shaped data, for

* ``igrlib``: one call of igrlib's ``advance`` over ``steps`` steps (a group of one run);
* ``python_loop``: ``steps`` calls of a jitted plain SGD step (the reference);
* ``scan``: the same steps in one jitted ``lax.scan``.

Reported: milliseconds per step, ``t_igrlib / t_python_loop`` (target ≤ 1.1: igrlib's own
overhead) and ``t_scan / t_python_loop`` (what the loop costs XLA here).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bench import timing
from igrlib.maths import models, objectives
from igrlib.training.config import TrainConfig
from igrlib.training.program import program


def _data(n: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.standard_normal((n, 32, 32, 3)), jnp.float32),
            jnp.asarray(np.arange(n) % 10, jnp.int32))


def cases(width: float, steps: int, batch_size: int, learning_rate: float = 0.01) -> list[timing.Case]:
    """The three loops over the same ``steps`` batches of ``batch_size`` images."""
    n = steps * batch_size
    x, y = _data(n)
    cfg = TrainConfig(dataset="cifar10", model="resnet18", width_multiplier=width,
                      batch_size=batch_size, n_train=n, learning_rate=learning_rate, selection="test")
    prog = program(cfg.program_key(), n, batched=False)
    hps = {k: jnp.asarray([v], jnp.float32) for k, v in cfg.vmapped().items()}
    active = jnp.ones(1, bool)
    state = {"carry": prog.init(jnp.zeros(1, jnp.uint32), hps, x[:2]), "epoch": 0}

    def igrlib() -> None:
        state["carry"] = prog.advance(state["carry"], active, state["epoch"], x, y)
        state["epoch"] += 1
        jax.block_until_ready(state["carry"])

    model = models.resnet18(width)
    loss_fn = objectives.loss_fn(model)
    ids = jnp.arange(n).reshape(steps, batch_size)

    def sgd_step(carry, batch_ids):
        params, model_state = carry
        (loss, (new_state, _)), grad = jax.value_and_grad(loss_fn, has_aux=True)(
            params, model_state, x[batch_ids], y[batch_ids])
        return (jax.tree.map(lambda p, g: p - learning_rate * g, params, grad), new_state), loss

    one_step = jax.jit(sgd_step, donate_argnums=0)
    scanned = jax.jit(lambda carry: jax.lax.scan(sgd_step, carry, ids)[0], donate_argnums=0)
    ref = {"loop": model.init(jax.random.key(0), x[:2]), "scan": model.init(jax.random.key(0), x[:2])}

    def python_loop() -> None:
        for k in range(steps):
            ref["loop"] = one_step(ref["loop"], ids[k])[0]
        jax.block_until_ready(ref["loop"])

    def scan() -> None:
        ref["scan"] = scanned(ref["scan"])
        jax.block_until_ready(ref["scan"])

    return [timing.Case("igrlib", igrlib, steps), timing.Case("python_loop", python_loop, steps),
            timing.Case("scan", scan, steps)]


def run(width: float, steps: int, repeats: int, batch_size: int = 64) -> dict[str, Any]:
    """Time the three loops interleaved, ``repeats`` rounds of ``steps`` steps each."""
    if jax.default_backend() != "cpu":
        return {"settings": {"width": width}, "skipped": f"backend {jax.default_backend()}, not cpu"}
    times = timing.interleaved(cases(width, steps, batch_size), repeats)
    return {
        "settings": {"model": "resnet18", "width": width, "batch_size": batch_size,
                     "steps_per_call": steps, "repeats": repeats, "optimizer": "sgd",
                     "data": "random, 32x32x3, 10 classes"},
        "cases": times.summary(),
        "igrlib_over_python_loop": times.ratio("igrlib", "python_loop"),
        "scan_over_python_loop": times.ratio("scan", "python_loop"),
    }
