"""The training program: a group of runs of one architecture and update rule, as one program.

:class:`Program` is built once per (architecture, update rule and its static options, data
shapes, schedule) and cached, so each of its functions compiles once per process. It

* ``init``\\ s a group of runs (one per seed and vmapped hyperparameter values: the learning rate
  and the rule's vmappable hyperparameters live in the optimizer state, so one compiled update
  serves every run);
* ``advance``\\ s them ``eval_every`` epochs: ``lax.scan`` over the steps for MLPs; for
  convolutional networks on CPU a Python loop over one jitted step (a convolution inside an XLA
  loop body runs several times slower there, jax-ml/jax#12868);
* ``evaluate``\\ s them on whole splits (loss and accuracy, evaluation mode);
* ``probe``\\ s them (:mod:`igrlib.training.probes`).

:func:`train_group` drives a program: it evaluates every ``eval_every`` epochs, probes every
``probe_every`` evaluations, decides each run's status with :mod:`igrlib.training.monitors`
(stopping runs that diverged, died or collapsed), keeps for each training-accuracy threshold
the checkpoint selected by the config's rule, and stops a run ``patience`` evaluations after its
last improvement at the first threshold.

One step of a run: with ``g = ∇E_B(θ)`` the gradient of the mean cross-entropy on the batch
``B`` (a shuffled mini-batch, or the whole training split when ``batch_size`` is None),
``(u, s) ← rule.update(g, s, θ, value_fn=E_B, grad_fn=∇E_B, loss_on=ℓ, batch=B)`` and
``θ ← θ + u``, where ``ℓ(p, x, y)`` is the mean loss of p on any examples (x, y) at the step's
batch-norm state: the one interface of every rule (:func:`igrlib.training.methods.update_args`),
through which a micro-batch rule cuts B into parts and plain rules ignore what they do not read.
A step whose loss or update is not finite is not applied, and the run is marked diverged at that
step.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from igrlib.config import ConfigError
from igrlib.io.data import Dataset
from igrlib.io.progress import Progress
from igrlib.maths import losses, models, objectives
from igrlib.training import methods
from igrlib.training import probes as probes_mod
from igrlib.training.config import TrainConfig
from igrlib.training.monitors import Monitor, MonitorConfig

#: The per-evaluation metrics every run records (``val_*`` only with a validation split).
EVAL_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


@dataclass
class Selection:
    """The evaluation chosen for one training-accuracy threshold, and its parameters."""

    threshold: float
    eval_index: int
    epoch: int
    step: int
    metrics: dict[str, float]
    params: Any
    state: Any


@dataclass
class RunResult:
    """What one run produced: status (with the step and reason), per-evaluation history (and
    probes, under ``probe_*`` keys), selections and final parameters."""

    config: TrainConfig
    status: str
    status_step: int | None
    status_reason: str | None
    history: dict[str, list[float]]
    selections: dict[float, Selection]
    params: Any
    state: Any
    num_params: int
    wall_time_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _tree_where(mask, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(mask, a, b), new, old)


def _as_batch_of_one(fn, in_axes):
    """``fn`` with the signature of ``jax.vmap(fn, in_axes)`` restricted to a batch of size 1:
    XLA on CPU lowers a convolution vmapped over its weights to a grouped convolution, several
    times slower, so a group of one runs unbatched."""

    def wrapped(*args):
        args = [x if axis is None else jax.tree.map(lambda a: a[0], x) for x, axis in zip(args, in_axes)]
        return jax.tree.map(lambda a: a[None], fn(*args))

    return wrapped


class Program:
    """The compiled functions of one group shape (see the module docstring). Build it with
    :func:`program`, which caches one per key."""

    def __init__(self, key: TrainConfig, n_train: int, batched: bool, steps_in_python: bool | None = None):
        self.config = key
        self.model = key.build_model()
        self.rule = key.rule
        if key.full_batch:
            self.steps_per_epoch, self.batch = 1, n_train
        else:
            if key.batch_size > n_train:
                raise ConfigError(f"batch_size {key.batch_size} exceeds the training set size {n_train}")
            self.steps_per_epoch, self.batch = n_train // key.batch_size, key.batch_size
        key.rule.check_batch(self.batch, key.hparams)  # full batch: n_train is known only here
        self.n_train = n_train
        # None: a Python loop exactly where it is faster (convolutions on CPU)
        self.steps_in_python = (key.model != "mlp" and jax.default_backend() == "cpu"
                                if steps_in_python is None else steps_in_python)
        self.batched = batched
        self._build()

    def _build(self) -> None:
        cfg, model, rule = self.config, self.model, self.rule
        loss_fn = objectives.loss_fn(model, is_training=True)
        eval_split = objectives.split_eval_fn(model)
        options = {k: v for k, v in cfg.hparams.items() if k not in rule.vmappable}
        tx = rule.transform(**cfg.vmapped(), **options)  # placeholders: values come from the state
        steps, batch, n_train, full = self.steps_per_epoch, self.batch, self.n_train, cfg.full_batch

        def init(seed, hp, x_example):
            init_key, data_key = jax.random.split(jax.random.key(seed))
            params, state = model.init(init_key, x_example)
            opt = rule.transform(**hp, **options).init(params)
            return dict(params=params, state=state, opt=opt, data_key=data_key,
                        bad_step=jnp.int32(-1), step=jnp.int32(0))

        def indices(carry, first_epoch):
            """Example indices of ``eval_every`` epochs of steps, ``(eval_every·steps, batch)``
            (one dummy row per step for full-batch training, which needs none)."""
            if full:
                return jnp.zeros((cfg.eval_every, 1), jnp.int32)

            def epoch_indices(epoch):
                perm = jax.random.permutation(jax.random.fold_in(carry["data_key"], epoch), n_train)
                return perm[: steps * batch].reshape(steps, batch)

            epochs = first_epoch + jnp.arange(cfg.eval_every)
            return jax.vmap(epoch_indices)(epochs).reshape(cfg.eval_every * steps, batch)

        def step(c, ids, active, x_train, y_train):
            xb, yb = (x_train, y_train) if full else (x_train[ids], y_train[ids])
            params, state = c["params"], c["state"]
            (loss, (new_state, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, xb, yb)

            def loss_on(p, x, y):
                return loss_fn(p, state, x, y)[0]

            updates, new_opt = tx.update(grads, c["opt"], params, **methods.update_args(loss_on, (xb, yb)))
            finite = jnp.isfinite(loss) & jnp.isfinite(losses.sq_norm(updates))
            alive = active & (c["bad_step"] < 0)
            ok = alive & finite
            return dict(
                params=_tree_where(ok, optax.apply_updates(params, updates), params),
                state=_tree_where(ok, new_state, state),
                opt=_tree_where(ok, new_opt, c["opt"]),
                data_key=c["data_key"],
                bad_step=jnp.where(alive & ~finite, c["step"], c["bad_step"]),
                step=c["step"] + alive.astype(jnp.int32),
            )

        def advance(carry, active, first_epoch, x_train, y_train):
            def body(c, ids):
                return step(c, ids, active, x_train, y_train), None

            return jax.lax.scan(body, carry, indices(carry, first_epoch))[0]

        def evaluate(carry, splits):
            out = {}
            for name, data in splits.items():
                out[f"{name}_loss"], out[f"{name}_acc"] = eval_split(carry["params"], carry["state"], data)
            return out

        vmap = jax.vmap if self.batched else _as_batch_of_one
        self.init = jax.jit(vmap(init, in_axes=(0, 0, None)))
        self.evaluate = jax.jit(vmap(evaluate, in_axes=(0, None)))
        if not self.steps_in_python:
            self.advance = jax.jit(vmap(advance, in_axes=(0, 0, None, None, None)), donate_argnums=0)
            return
        indices_fn = jax.jit(vmap(indices, in_axes=(0, None)))
        step_fn = jax.jit(vmap(step, in_axes=(0, 0, 0, None, None)), donate_argnums=0)

        def advance_in_python(carry, active, first_epoch, x_train, y_train):
            idx = indices_fn(carry, first_epoch)
            for k in range(idx.shape[1]):
                carry = step_fn(carry, idx[:, k], active, x_train, y_train)
            return carry

        self.advance = advance_in_python


@functools.lru_cache(maxsize=16)
def program(key: TrainConfig, n_train: int, batched: bool = True) -> Program:
    """The :class:`Program` of ``key`` (a :meth:`TrainConfig.program_key`), cached per process."""
    return Program(key, n_train, batched)


def check_group(configs: Sequence[TrainConfig], data: Dataset) -> None:
    """Raise :class:`ConfigError` unless ``configs`` can train as one group on ``data``."""
    if not configs:
        raise ConfigError("train_group needs at least one config")
    if len({c.group_key() for c in configs}) != 1:
        raise ConfigError("a group's runs may differ only in the seed, the learning rate and the "
                          "update rule's vmappable hyperparameters")
    cfg = configs[0]
    if cfg.dataset != data.name:
        raise ConfigError(f"config asks for dataset {cfg.dataset!r} but got {data.name!r}")
    for name, array in (("n_train", data.x_train), ("n_test", data.x_test)):
        wanted = getattr(cfg, name)
        if wanted is not None and wanted != len(array):
            raise ConfigError(f"config says {name}={wanted} but the data has {len(array)} rows; "
                              f"load it with data.load(..., {name}={wanted})")
    if cfg.n_val != len(data.x_val):
        raise ConfigError(f"config says n_val={cfg.n_val} but the data has {len(data.x_val)} "
                          f"validation rows; load it with data.load(..., n_val={cfg.n_val})")


class _Selector:
    """For each threshold, the evaluation of maximal selection metric among those at or above
    it, and a copy of its parameters (kept on the device, one row per run)."""

    def __init__(self, thresholds: tuple[float, ...], metric: str, n: int):
        self.thresholds, self.metric = thresholds, metric
        self.best: list[dict[float, tuple[float, int]]] = [{} for _ in range(n)]
        self.params: dict[float, Any] = {}
        self.since_best = np.zeros(n, int)
        self._select = jax.jit(_tree_where_rows)

    def update(self, carry: dict, history: list[dict], fresh: np.ndarray) -> None:
        """Consider the latest evaluation of the runs marked ``fresh`` (evaluated and still ok)."""
        self.since_best[fresh] += 1
        snapshot = {"params": carry["params"], "state": carry["state"]}
        for t in self.thresholds:
            improved = np.zeros(len(fresh), bool)
            for i in np.flatnonzero(fresh):
                h = history[i]
                value = h[self.metric][-1]
                if h["train_acc"][-1] >= t and value > self.best[i].get(t, (-math.inf, 0))[0]:
                    self.best[i][t] = (value, len(h["epoch"]) - 1)
                    improved[i] = True
                    if t == self.thresholds[0]:
                        self.since_best[i] = 0
            if t not in self.params:
                self.params[t] = jax.tree_util.tree_map(jnp.copy, snapshot)
            elif improved.any():
                self.params[t] = self._select(jnp.asarray(improved), snapshot, self.params[t])


def _tree_where_rows(mask: jax.Array, new: Any, old: Any) -> Any:
    def pick(a, b):
        return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree_util.tree_map(pick, new, old)


def _row(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a[i]), tree)


def train_group(configs: Sequence[TrainConfig], data: Dataset, progress: bool = True) -> list[RunResult]:
    """Train runs that differ only in their vmapped fields as one program; one result each.

    Evaluates (loss and accuracy on the training, validation and test splits) at epoch 0 and
    every ``eval_every`` epochs, probes every ``probe_every`` evaluations, and stops a run when
    its monitor gives it a final status or its patience runs out; stops when no run is active.
    """
    check_group(configs, data)
    cfg = configs[0]
    start = time.perf_counter()
    prog = program(cfg.program_key(), len(data.x_train), batched=len(configs) > 1)
    n = len(configs)
    seeds = jnp.asarray([c.seed for c in configs], jnp.uint32)
    hps = {k: jnp.asarray([c.vmapped()[k] for c in configs], jnp.float32) for k in cfg.vmapped()}
    runs_sharding = _runs_sharding(n) if prog.batched else None
    if runs_sharding is not None:
        # every per-run array follows its seed onto one device; jit propagates the placement
        seeds, hps = jax.device_put((seeds, hps), runs_sharding)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    splits = {"train": objectives.split(data.x_train, data.y_train),
              "test": objectives.split(data.x_test, data.y_test)}
    if cfg.n_val:
        splits["val"] = objectives.split(data.x_val, data.y_val)
    probe_data = probes_mod.ProbeData(data.x_train, data.y_train, cfg.probe_examples,
                                      batch_size=cfg.batch_size) if cfg.probe_every else None
    carry = prog.init(seeds, hps, x_train[:2])

    history: list[dict[str, list]] = [{"epoch": [], "step": []} for _ in range(n)]
    status: list[str] = ["ok"] * n
    status_step: list[int | None] = [None] * n
    reason: list[str | None] = [None] * n
    monitors = [Monitor(MonitorConfig.from_dict(cfg.monitor), data.num_classes) for _ in range(n)]
    active = np.ones(n, bool)
    selector = _Selector(cfg.thresholds, "val_acc" if cfg.selection == "validation" else "test_acc", n)

    def record(epoch: int, eval_index: int) -> None:
        metrics = jax.device_get(prog.evaluate(carry, splits))
        bad = np.asarray(jax.device_get(carry["bad_step"]))
        fresh = active.copy()
        for i in np.flatnonzero(active):
            h = history[i]
            h["epoch"].append(epoch)
            h["step"].append(epoch * prog.steps_per_epoch)
            for k, v in metrics.items():
                h.setdefault(k, []).append(float(v[i]))
            verdict = monitors[i].update(h["step"][-1], h["train_loss"][-1], h["train_acc"][-1],
                                         int(bad[i]) if bad[i] >= 0 else None)
            if verdict is not None:
                status[i], status_step[i], reason[i] = verdict
                active[i] = fresh[i] = False
        selector.update(carry, history, fresh)
        if probe_data is not None and eval_index % cfg.probe_every == 0:
            _probe(prog, carry, configs, probe_data, history, fresh, eval_index)
        if cfg.patience is not None:
            for i in np.flatnonzero(active):
                if cfg.thresholds[0] in selector.best[i] and selector.since_best[i] > cfg.patience:
                    active[i] = False

    record(0, 0)
    bar = Progress(f"{prog.model.name} {cfg.method} x{n}", total=cfg.epochs, runs=n) if progress else None
    epoch, eval_index = 0, 0
    while epoch < cfg.epochs and active.any():
        carry = prog.advance(carry, jnp.asarray(active), epoch, x_train, y_train)
        epoch += cfg.eval_every
        eval_index += 1
        record(epoch, eval_index)
        if bar is not None:
            best = max((h["test_acc"][-1] for h in history if h.get("test_acc")), default=float("nan"))
            bar.update(min(epoch, cfg.epochs), int(active.sum()), best_test=best)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - start

    host = jax.device_get({"params": carry["params"], "state": carry["state"]})
    best_params = jax.device_get(selector.params)
    m = models.num_params(_row(host["params"], 0))
    results = []
    for i, c in enumerate(configs):
        h = history[i]
        sels = {}
        for t, (_, k) in selector.best[i].items():
            sels[t] = Selection(
                threshold=t, eval_index=k, epoch=h["epoch"][k], step=h["step"][k],
                metrics={key: h[key][k] for key in EVAL_METRICS if key in h},
                params=_row(best_params[t]["params"], i), state=_row(best_params[t]["state"], i))
        results.append(RunResult(
            config=c, status=status[i], status_step=status_step[i], status_reason=reason[i],
            history=h, selections=sels, params=_row(host["params"], i), state=_row(host["state"], i),
            num_params=m, wall_time_s=wall / n))
    return results


def _runs_sharding(n: int) -> jax.sharding.NamedSharding | None:
    """The placement of a group of ``n`` runs over the local devices (the leading, per-run axis
    split over a one-dimensional mesh), or None when there is one device or ``n`` does not divide
    evenly over them: a vmapped group then runs as one SPMD program, each device training its
    share of the runs, with numbers equal to the unsharded program's."""
    devices = jax.local_devices()
    if len(devices) < 2 or n % len(devices):
        return None
    mesh = jax.sharding.Mesh(np.asarray(devices), ("runs",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))


def _probe(prog: Program, carry: dict, configs: Sequence[TrainConfig], data: probes_mod.ProbeData,
           history: list[dict], which: np.ndarray, eval_index: int) -> None:
    """Run the probes on the runs marked ``which`` and append them to their histories."""
    cfg = configs[0]
    for i in np.flatnonzero(which):
        c, h = configs[i], history[i]
        key = jax.random.fold_in(jax.random.key(c.seed + 104_729), eval_index)
        found = probes_mod.measure(prog.model, _device_row(carry["params"], i), _device_row(carry["state"], i),
                                   data, key, cfg.probes, cfg.probe_lanczos_iters, cfg.probe_trace_samples,
                                   on_host=prog.steps_in_python)
        found["train_loss"] = h["train_loss"][-1]
        if "lambda_max" in found:
            lam = found["lambda_max"]
            found["h_lambda_max"] = c.learning_rate * lam
            stability = c.rule.stability(c.learning_rate, lam, **c.hparams)
            found["stability"] = float(stability) if stability is not None else None
        h.setdefault("probe_epoch", []).append(h["epoch"][-1])
        h.setdefault("probe_step", []).append(h["step"][-1])
        for k, v in found.items():
            h.setdefault(f"probe_{k}", []).append(v)


def _device_row(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def train(config: TrainConfig, data: Dataset, progress: bool = True) -> RunResult:
    """Train one run (a group of one)."""
    return train_group([config], data, progress)[0]

