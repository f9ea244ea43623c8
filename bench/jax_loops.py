"""Training loops in JAX to time: igrlib's own program, and a plain Haiku+optax loop without igrlib.

Both train the same network (``depth`` hidden ReLU layers of ``width`` units and a linear
read-out on flattened inputs) with SGD on mini-batches drawn from a fresh permutation of the
training set each epoch; one call of the returned :class:`~bench.timing.Case` runs one epoch of
``len(x) // batch_size`` steps.
"""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.timing import Case
from igrlib.maths import losses
from igrlib.training.config import TrainConfig
from igrlib.training.program import program

NUM_CLASSES = 10


def random_data(n: int, dim: int = 784, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` standard-normal inputs of ``dim`` features and uniform labels in 0..9 (MNIST's
    shapes; the speed of a step does not depend on the values)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim), dtype=np.float32),
            rng.integers(0, NUM_CLASSES, n).astype(np.int32))


def igrlib_config(width: int, n_train: int, *, depth: int = 5, batch_size: int = 512,
                  penalty_method: str | None = None, learning_rate: float = 0.01,
                  mu: float = 0.01) -> TrainConfig:
    """The :class:`TrainConfig` of one epoch of mini-batch SGD, or with ``penalty_method`` of
    EGR (mini-batch SGD on ``E + μ‖∇E‖²``, the product ``H∇E`` formed by that method)."""
    method = dict(method="sgd") if penalty_method is None else dict(
        method="egr", hparams={"mu": mu, "penalty_method": penalty_method})
    return TrainConfig(width=width, depth=depth, batch_size=batch_size, learning_rate=learning_rate,
                       n_train=n_train, epochs=1, eval_every=1, selection="test", **method)


def igrlib_loop(cfg: TrainConfig, x: np.ndarray, y: np.ndarray, runs: int = 1,
                name: str = "igrlib") -> Case:
    """igrlib's training program for ``runs`` copies of ``cfg`` (differing in seed): one call is
    one jitted ``advance`` over an epoch, exactly what :func:`igrlib.training.program.train_group`
    calls between evaluations."""
    prog = program(cfg.program_key(), len(x), batched=runs > 1)
    seeds = jnp.arange(runs, dtype=jnp.uint32)
    hps = {k: jnp.full(runs, v, jnp.float32) for k, v in cfg.vmapped().items()}
    active = jnp.ones(runs, bool)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    state = {"carry": prog.init(seeds, hps, xd[:2]), "epoch": 0}

    def call() -> None:
        state["carry"] = prog.advance(state["carry"], active, state["epoch"], xd, yd)
        state["epoch"] += 1
        jax.block_until_ready(state["carry"])

    return Case(name, call, prog.steps_per_epoch)


def haiku_mlp(width: int, depth: int = 5) -> hk.Transformed:
    """``depth`` hidden ReLU layers of ``width`` units and a linear read-out, as plain Haiku."""
    def forward(x):
        return hk.nets.MLP([width] * depth + [NUM_CLASSES])(x.reshape(x.shape[0], -1))

    return hk.without_apply_rng(hk.transform(forward))


@functools.lru_cache(maxsize=8)
def _haiku_program(width: int, depth: int, learning_rate: float):
    """The network, optimiser and jitted step, built once per setting. The data are arguments
    of the step, not constants closed over, so its compilation does not grow with them."""
    net = haiku_mlp(width, depth)
    tx = optax.sgd(learning_rate)

    def loss_fn(p, xb, yb):
        return losses.cross_entropy(net.apply(p, xb), yb)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, opt_state, x, y, idx):
        loss, grads = jax.value_and_grad(loss_fn)(p, x[idx], y[idx])
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    return net, tx, step


def haiku_loop(width: int, x: np.ndarray, y: np.ndarray, *, depth: int = 5, batch_size: int = 512,
               learning_rate: float = 0.01, seed: int = 0, name: str = "haiku") -> Case:
    """The loop a researcher writes without igrlib: a jitted Haiku+optax SGD step called once per
    mini-batch from Python, indices from a NumPy permutation."""
    net, tx, step = _haiku_program(width, depth, learning_rate)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    params = net.init(jax.random.key(seed), xd[:2])
    steps = len(x) // batch_size
    rng = np.random.default_rng(seed)
    state = {"params": params, "opt": tx.init(params)}

    def call() -> None:
        perm = rng.permutation(len(x))[: steps * batch_size].reshape(steps, batch_size)
        p, o = state["params"], state["opt"]
        for idx in perm:
            p, o, _ = step(p, o, xd, yd, idx)
        state["params"], state["opt"] = jax.block_until_ready((p, o))

    return Case(name, call, steps)
