"""Training: (mini-batch) gradient descent through optax, a grid of runs as one program.

One :class:`TrainConfig` describes one run. :func:`train_group` trains several runs that differ
only in learning rate, seed and penalty rate μ as ONE jitted program (``jax.vmap`` over the runs,
``lax.scan`` over the steps between evaluations), and returns one :class:`RunResult` each.

The step of a run is ``θ ← θ − h·(∇E + 2μ·H∇E)`` (plain SGD/GD when μ = 0; heavy-ball momentum
when ``momentum > 0``), with ``E`` the mean cross-entropy of the mini-batch (the whole training set
for ``optimizer="gd"``).

Run status (PAPER.md's protocol needs runs that fail to be recorded, not dropped):

* ``diverged``: the loss or the update became NaN/inf at step k; the run's parameters freeze at
  their last finite value.
* ``collapsed``: after reaching ≥ 50 % training accuracy the run fell back to chance
  (training accuracy ≤ 2/C and loss within 0.25 nats of ln C) without any NaN.
* ``ok``: otherwise. ``selections`` holds, for each training-accuracy threshold, the evaluation
  of maximal test accuracy among those at or above the threshold (the paper keeps networks at
  100 % training accuracy and reports each at its maximal test accuracy).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm  # plain text bar: tqdm.auto warns in kernels without ipywidgets

from igrlib.maths import loops, losses, models
from igrlib.config import ConfigError, check_choice, check_keys, check_positive
from igrlib.io.data import DATASETS, Dataset

OPTIMIZERS = ("sgd", "gd")
REGULARIZERS = ("none", "egr")
#: Fields that may differ inside one vmapped group; every other field must be equal.
VMAP_FIELDS = ("learning_rate", "seed", "mu")
EVAL_CHUNK = 5000


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Every field is validated on construction (a :class:`ConfigError`).

    Units: ``learning_rate`` h and ``mu`` are in parameter units per loss-gradient unit;
    ``epochs`` are passes over the training set (for ``optimizer="gd"`` one epoch is one
    full-batch step); ``eval_every`` is in epochs.
    """

    dataset: str = "mnist"
    model: str = "mlp"
    width: int = 200
    depth: int = 5
    activation: str = "relu"
    width_multiplier: float = 1.0
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    batch_size: int = 512
    epochs: int = 10
    eval_every: int = 1
    seed: int = 0
    regularizer: str = "none"
    mu: float = 0.0
    penalty_method: str = "hvp"
    n_train: int | None = None
    n_test: int | None = None
    thresholds: tuple[float, ...] = (1.0, 0.99)
    patience: int | None = None

    def __post_init__(self) -> None:
        check_choice(self.dataset, DATASETS, "dataset")
        check_choice(self.model, models.MODELS, "model")
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        check_choice(self.regularizer, REGULARIZERS, "regularizer")
        check_choice(self.penalty_method, losses.PENALTY_METHODS, "penalty method")
        check_positive(self.learning_rate, "learning_rate")
        for name in ("width", "batch_size", "epochs", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.depth, int) or self.depth < 0:
            raise ConfigError(f"depth must be an integer >= 0, got {self.depth!r}")
        if isinstance(self.width_multiplier, bool) or not (
                isinstance(self.width_multiplier, (int, float)) and 0 < self.width_multiplier <= 8):
            raise ConfigError(f"width_multiplier must be a number in (0, 8], got {self.width_multiplier!r}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.regularizer == "egr":
            check_positive(self.mu, "mu")
        elif self.mu != 0:
            raise ConfigError("mu is only used with regularizer='egr'; set it to 0 or choose 'egr'")
        thresholds = tuple(float(t) for t in self.thresholds)
        if not thresholds or any(not 0 < t <= 1 for t in thresholds):
            raise ConfigError(f"thresholds must be training accuracies in (0, 1], got {self.thresholds!r}")
        object.__setattr__(self, "thresholds", thresholds)
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 0):
            raise ConfigError(f"patience must be None or an integer >= 0, got {self.patience!r}")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be None or a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a plain dict, naming any key that is not a field."""
        check_keys(values, [f.name for f in dataclasses.fields(cls)], "training config")
        values = dict(values)
        if "thresholds" in values:
            values["thresholds"] = tuple(values["thresholds"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (thresholds as a list)."""
        out = dataclasses.asdict(self)
        out["thresholds"] = list(self.thresholds)
        return out

    def group_key(self) -> tuple:
        """Everything but :data:`VMAP_FIELDS`: runs with equal keys can train as one program."""
        return tuple(v for k, v in sorted(self.to_dict().items()) if k not in VMAP_FIELDS
                     and k != "thresholds") + (self.thresholds,)

    def build_model(self) -> models.Model:
        """The model this config trains (one shared object per architecture, so that jitted
        functions built from it are compiled once)."""
        if self.model == "mlp":
            return _model("mlp", width=self.width, depth=self.depth, activation=self.activation)
        return _model("resnet18", width_multiplier=self.width_multiplier)

    def program_key(self) -> "TrainConfig":
        """This config with the vmapped fields set to placeholders: equal for every run that can
        share one compiled training program."""
        return dataclasses.replace(self, learning_rate=1.0, seed=0,
                                   mu=1.0 if self.regularizer == "egr" else 0.0)


@functools.lru_cache(maxsize=32)
def _model(name: str, **kwargs: Any) -> models.Model:
    return models.build(name, **kwargs)


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
    """What one run produced: status, per-evaluation history, selections and final parameters."""

    config: TrainConfig
    status: str
    status_step: int | None
    history: dict[str, list[float]]
    selections: dict[float, Selection]
    params: Any
    state: Any
    num_params: int
    wall_time_s: float
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Loss and evaluation over a whole split


def make_loss_fn(model: models.Model):
    """``(θ, state, x, y) -> (E, (new_state, logits))`` with E the mean cross-entropy (nats)."""

    def loss_fn(params, state, x, y):
        logits, new_state = model.apply(params, state, x, True)
        return losses.cross_entropy(logits, y), (new_state, logits)

    return loss_fn


class Split(NamedTuple):
    """A data split padded to whole chunks: ``x`` (n_chunks, chunk, ...), ``y`` and weights ``w``
    (1 for real rows, 0 for padding) of shape (n_chunks, chunk), and ``n`` the real row count."""

    x: jax.Array
    y: jax.Array
    w: jax.Array
    n: jax.Array


def split(x: np.ndarray, y: np.ndarray, chunk: int = EVAL_CHUNK) -> Split:
    """Pad (x, y) to a multiple of ``chunk`` rows and reshape into a :class:`Split`.

    Splits are passed to jitted functions as arguments, never closed over: a closed-over array
    becomes an XLA constant and compile time grows with the data set.
    """
    n = len(x)
    chunk = min(chunk, n)
    n_chunks = math.ceil(n / chunk)
    pad = n_chunks * chunk - n
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    yp = np.concatenate([y, np.zeros(pad, y.dtype)]) if pad else y
    return Split(
        jnp.asarray(xp).reshape((n_chunks, chunk) + x.shape[1:]),
        jnp.asarray(yp).reshape(n_chunks, chunk),
        jnp.asarray(w).reshape(n_chunks, chunk),
        jnp.asarray(float(n), jnp.float32),
    )


def split_eval_fn(model: models.Model):
    """``(θ, state, split) -> (loss, accuracy)``: mean cross-entropy (nats) and accuracy over a
    whole :class:`Split` in evaluation mode (batch-norm running statistics)."""

    def evaluate(params, state, data: Split):
        def body(acc, batch):
            xb, yb, wb = batch
            logits, _ = model.apply(params, state, xb, False)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
            hit = (jnp.argmax(logits, -1) == yb).astype(jnp.float32)
            return (acc[0] + jnp.sum(nll * wb), acc[1] + jnp.sum(hit * wb)), None

        (loss_sum, hit_sum), _ = loops.scan(body, (0.0, 0.0), (data.x, data.y, data.w))
        return loss_sum / data.n, hit_sum / data.n

    return evaluate


def full_batch_grad_fn(model: models.Model):
    """``(θ, state, split) -> (E, ∇E)`` of the mean cross-entropy over a whole :class:`Split`,
    evaluation mode, accumulated over chunks so memory does not grow with the split.
    R_IG is ``losses.r_ig(∇E)`` of the result."""

    def value_and_grad(params, state, data: Split):
        def chunk_loss(p, xb, yb, wb):
            logits, _ = model.apply(p, state, xb, False)
            return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, yb) * wb) / data.n

        def body(acc, batch):
            v, g = jax.value_and_grad(chunk_loss)(params, *batch)
            return (acc[0] + v, jax.tree_util.tree_map(jnp.add, acc[1], g)), None

        zero = (0.0, jax.tree_util.tree_map(jnp.zeros_like, params))
        (value, grad), _ = loops.scan(body, zero, (data.x, data.y, data.w))
        return value, grad

    return value_and_grad


# --------------------------------------------------------------------------------------------
# The vmapped training program


def _check_group(configs: Sequence[TrainConfig]) -> None:
    if not configs:
        raise ConfigError("train_group needs at least one config")
    keys = {c.group_key() for c in configs}
    if len(keys) != 1:
        raise ConfigError(
            f"a group's runs may differ only in {VMAP_FIELDS}; got {len(keys)} different settings"
        )


def _steps_per_epoch(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    if cfg.optimizer == "gd":
        return 1, n_train
    if cfg.batch_size > n_train:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the training set size {n_train}")
    return n_train // cfg.batch_size, cfg.batch_size


def _tree_where(mask, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(mask, a, b), new, old)


@functools.lru_cache(maxsize=16)
def _build_program(cfg: TrainConfig, n_train: int, batched: bool = True):
    """Jitted, vmapped functions ``init``, ``advance`` (eval_every epochs) and ``evaluate`` for
    every group sharing ``cfg.program_key()`` (cached, so each compiles once per process);
    ``batched=False`` builds them for a group of one, without ``vmap``."""
    model = cfg.build_model()
    steps, batch = _steps_per_epoch(cfg, n_train)
    loss_fn = make_loss_fn(model)
    eval_split = split_eval_fn(model)
    momentum = cfg.momentum or None

    def make_tx(lr):
        return optax.sgd(lr, momentum=momentum)

    def init(seed, lr, x_example):
        key = jax.random.key(seed)
        init_key, data_key = jax.random.split(key)
        params, state = model.init(init_key, x_example)
        return dict(params=params, state=state, opt=make_tx(lr).init(params), data_key=data_key,
                    bad_step=jnp.int32(-1), step=jnp.int32(0))

    def indices(carry, first_epoch):
        """The mini-batch example indices of ``eval_every`` epochs: (eval_every·steps, batch)."""
        def epoch_indices(epoch):
            if cfg.optimizer == "gd":
                return jnp.arange(n_train)[None]
            perm = jax.random.permutation(jax.random.fold_in(carry["data_key"], epoch), n_train)
            return perm[: steps * batch].reshape(steps, batch)

        epochs = first_epoch + jnp.arange(cfg.eval_every)
        return jax.vmap(epoch_indices)(epochs).reshape(cfg.eval_every * steps, batch)

    def step(c, ids, lr, mu, active, x_train, y_train):
        tx = make_tx(lr)
        xb, yb = x_train[ids], y_train[ids]
        if cfg.regularizer == "none":
            (loss, (new_state, _)), total = jax.value_and_grad(loss_fn, has_aux=True)(
                c["params"], c["state"], xb, yb)
        else:
            grad_fn = losses.penalized_value_and_grad(loss_fn, mu, cfg.penalty_method)
            (loss, (new_state, _)), _, total = grad_fn(c["params"], c["state"], xb, yb)
        updates, new_opt = tx.update(total, c["opt"], c["params"])
        new_params = optax.apply_updates(c["params"], updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(losses.sq_norm(updates))
        alive = active & (c["bad_step"] < 0)
        ok = alive & finite
        return dict(
            params=_tree_where(ok, new_params, c["params"]),
            state=_tree_where(ok, new_state, c["state"]),
            opt=_tree_where(ok, new_opt, c["opt"]),
            data_key=c["data_key"],
            bad_step=jnp.where(alive & ~finite, c["step"], c["bad_step"]),
            step=c["step"] + alive.astype(jnp.int32),
        )

    def advance(carry, lr, mu, active, first_epoch, x_train, y_train):
        def body(c, ids):
            return step(c, ids, lr, mu, active, x_train, y_train), None

        return jax.lax.scan(body, carry, indices(carry, first_epoch))[0]

    def evaluate(carry, train_split, test_split):
        train_loss, train_acc = eval_split(carry["params"], carry["state"], train_split)
        test_loss, test_acc = eval_split(carry["params"], carry["state"], test_split)
        return dict(train_loss=train_loss, train_acc=train_acc, test_loss=test_loss, test_acc=test_acc)

    # A group of one runs the unbatched functions on a leading axis of length 1: XLA on CPU lowers
    # a convolution vmapped over its weights to a grouped convolution, several times slower.
    batched_fn = jax.vmap if batched else _as_batch_of_one
    evaluate_fn = jax.jit(batched_fn(evaluate, in_axes=(0, None, None)))
    init_fn = jax.jit(batched_fn(init, in_axes=(0, 0, None)))
    if not _steps_in_python(cfg):
        advance_fn = jax.jit(batched_fn(advance, in_axes=(0, 0, 0, 0, None, None, None)),
                             donate_argnums=0)
        return init_fn, advance_fn, evaluate_fn, steps
    # Convolutions inside an XLA loop body run several times slower on CPU than the same
    # convolutions outside one (jax-ml/jax#12868; 6x for the CIFAR ResNet-18 here), so a
    # convolutional network takes its steps from a Python loop over one jitted step.
    indices_fn = jax.jit(batched_fn(indices, in_axes=(0, None)))
    step_fn = jax.jit(batched_fn(step, in_axes=(0, 0, 0, 0, 0, None, None)), donate_argnums=0)

    def advance_in_python(carry, lr, mu, active, first_epoch, x_train, y_train):
        idx = indices_fn(carry, first_epoch)
        for k in range(idx.shape[1]):
            carry = step_fn(carry, idx[:, k], lr, mu, active, x_train, y_train)
        return carry

    return init_fn, advance_in_python, evaluate_fn, steps


def _steps_in_python(cfg: TrainConfig) -> bool:
    """Whether training steps loop in Python rather than in ``lax.scan`` (see :func:`_build_program`)."""
    return cfg.model != "mlp" and jax.default_backend() == "cpu"


def _as_batch_of_one(fn, in_axes):
    """``fn`` with the signature of ``jax.vmap(fn, in_axes)`` restricted to a batch of size 1."""

    def wrapped(*args):
        args = [x if axis is None else jax.tree.map(lambda a: a[0], x) for x, axis in zip(args, in_axes)]
        return jax.tree.map(lambda a: a[None], fn(*args))

    return wrapped


def _collapsed(train_acc: float, train_loss: float, peak_acc: float, num_classes: int) -> bool:
    chance_loss = math.log(num_classes)
    return peak_acc >= 0.5 and train_acc <= 2 / num_classes and abs(train_loss - chance_loss) < 0.25


def train_group(
    configs: Sequence[TrainConfig], data: Dataset, progress: bool = True
) -> list[RunResult]:
    """Train runs that differ only in ``learning_rate``, ``seed`` and ``mu`` as one vmapped program.

    Evaluates (train/test loss and accuracy over the whole splits) at epoch 0 and every
    ``eval_every`` epochs; stops a run at divergence, collapse, or ``patience`` evaluations
    after it reached the first threshold without a better test accuracy; stops the group when
    no run is active.
    """
    _check_group(configs)
    cfg = configs[0]
    if cfg.dataset != data.name:
        raise ConfigError(f"config asks for dataset {cfg.dataset!r} but got {data.name!r}")
    for field_name, array in (("n_train", data.x_train), ("n_test", data.x_test)):
        wanted = getattr(cfg, field_name)
        if wanted is not None and wanted != len(array):
            raise ConfigError(f"config says {field_name}={wanted} but the data has {len(array)} rows; "
                              f"load it with data.load(..., {field_name}={wanted})")
    start = time.perf_counter()
    model = cfg.build_model()
    init, advance, evaluate, steps = _build_program(cfg.program_key(), len(data.x_train),
                                                    batched=len(configs) > 1)
    lrs = jnp.asarray([c.learning_rate for c in configs], jnp.float32)
    mus = jnp.asarray([c.mu for c in configs], jnp.float32)
    seeds = jnp.asarray([c.seed for c in configs], jnp.uint32)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    train_split = split(data.x_train, data.y_train)
    test_split = split(data.x_test, data.y_test)
    carry = init(seeds, lrs, x_train[:2])
    n = len(configs)
    num_classes = data.num_classes

    history: list[dict[str, list[float]]] = [
        {k: [] for k in ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc")}
        for _ in range(n)
    ]
    status = ["ok"] * n
    status_step: list[int | None] = [None] * n
    active = np.ones(n, bool)
    peak = np.zeros(n)
    best: list[dict[float, tuple[float, int]]] = [{} for _ in range(n)]  # threshold -> (acc, eval)
    best_params: dict[float, Any] = {}
    since_best = np.zeros(n, int)
    select = jax.jit(lambda mask, new, old: _tree_where_rows(mask, new, old))

    def record(epoch: int) -> None:
        nonlocal best_params
        metrics = jax.device_get(evaluate(carry, train_split, test_split))
        bad = np.asarray(jax.device_get(carry["bad_step"]))
        for i in range(n):
            if not active[i]:
                continue
            row = {k: float(v[i]) for k, v in metrics.items()}
            h = history[i]
            h["epoch"].append(epoch)
            h["step"].append(int(epoch * steps))
            for k, v in row.items():
                h[k].append(v)
            if bad[i] >= 0:
                status[i], status_step[i], active[i] = "diverged", int(bad[i]), False
                continue
            peak[i] = max(peak[i], row["train_acc"])
            if _collapsed(row["train_acc"], row["train_loss"], peak[i], num_classes):
                status[i], status_step[i], active[i] = "collapsed", int(epoch * steps), False
                continue
            since_best[i] += 1
        for t in cfg.thresholds:
            improved = np.zeros(n, bool)
            for i in range(n):
                h = history[i]
                if not h["epoch"] or h["epoch"][-1] != epoch or status[i] != "ok":
                    continue
                if h["train_acc"][-1] >= t and h["test_acc"][-1] > best[i].get(t, (-1.0, 0))[0]:
                    best[i][t] = (h["test_acc"][-1], len(h["epoch"]) - 1)
                    improved[i] = True
                    if t == cfg.thresholds[0]:
                        since_best[i] = 0
            snapshot = {"params": carry["params"], "state": carry["state"]}
            if t not in best_params:
                best_params[t] = jax.tree_util.tree_map(jnp.copy, snapshot)
            elif improved.any():
                best_params[t] = select(jnp.asarray(improved), snapshot, best_params[t])
        if cfg.patience is not None:
            for i in range(n):
                if active[i] and cfg.thresholds[0] in best[i] and since_best[i] > cfg.patience:
                    active[i] = False

    record(0)
    bar = tqdm(total=cfg.epochs, desc=f"{model.name} x{n}", disable=not progress, leave=False)
    epoch = 0
    while epoch < cfg.epochs and active.any():
        carry = advance(carry, lrs, mus, jnp.asarray(active), epoch, x_train, y_train)
        epoch += cfg.eval_every
        record(epoch)
        bar.update(cfg.eval_every)
        bar.set_postfix(best_test=max((h["test_acc"][-1] for h in history if h["test_acc"]),
                                      default=float("nan")))
    bar.close()
    wall = time.perf_counter() - start

    host_params = jax.device_get(carry["params"])
    host_state = jax.device_get(carry["state"])
    host_best = jax.device_get(best_params)
    m = models.num_params(jax.tree_util.tree_map(lambda a: a[0], host_params))
    results = []
    for i, c in enumerate(configs):
        sels = {}
        for t, (_, k) in best[i].items():
            h = history[i]
            sels[t] = Selection(
                threshold=t, eval_index=k, epoch=h["epoch"][k], step=h["step"][k],
                metrics={key: h[key][k] for key in ("train_loss", "train_acc", "test_loss", "test_acc")},
                params=_row(host_best[t]["params"], i), state=_row(host_best[t]["state"], i),
            )
        results.append(RunResult(
            config=c, status=status[i], status_step=status_step[i], history=history[i],
            selections=sels, params=_row(host_params, i), state=_row(host_state, i),
            num_params=m, wall_time_s=wall / n,
        ))
    return results


def _row(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a[i]), tree)


def _tree_where_rows(mask: jax.Array, new: Any, old: Any) -> Any:
    def pick(a, b):
        m = mask.reshape((-1,) + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree_util.tree_map(pick, new, old)


def train(config: TrainConfig, data: Dataset, progress: bool = True) -> RunResult:
    """Train one run (a group of one)."""
    return train_group([config], data, progress)[0]
