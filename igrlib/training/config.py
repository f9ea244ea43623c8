"""One training run's configuration: data, architecture, update rule, schedule, probes, monitors.

A :class:`TrainConfig` is validated on construction (a :class:`~igrlib.config.ConfigError`, before
any compute) and is the ``train`` section of a run's record, so every field is a plain JSON value.
Runs that differ only in the *vmapped* fields (:meth:`TrainConfig.vmapped`: the seed, the learning
rate and the method's vmappable hyperparameters) share one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from igrlib.config import ConfigError, check_choice, check_int, check_keys, check_number, check_positive
from igrlib.io.data import DATASETS
from igrlib.maths import models
from igrlib.training import methods
from igrlib.training.monitors import MonitorConfig
from igrlib.training.probes import PROBES

SELECTIONS: tuple[str, ...] = ("validation", "test")


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Units: ``learning_rate`` h in parameter units per loss-gradient unit; ``epochs`` are passes
    over the training set (with ``batch_size=None``, full-batch training, one epoch is one step);
    ``eval_every`` is in epochs and ``probe_every`` in evaluations (0: no probes).

    ``method`` names an update rule of :mod:`igrlib.training.methods` and ``hparams`` its
    hyperparameters other than h (validated and completed with the rule's defaults, so the record
    says exactly what ran). ``n_val`` training images that are not trained on form the validation
    split; ``selection`` says which split picks the reported checkpoint among the evaluations at
    or above each training-accuracy threshold: ``"validation"`` (maximal validation accuracy,
    the default) or ``"test"`` (maximal test accuracy, the paper's rule). ``patience`` stops a
    run that many evaluations after its last improvement at the first threshold.
    """

    dataset: str = "mnist"
    model: str = "mlp"
    width: int = 200
    depth: int = 5
    activation: str = "relu"
    width_multiplier: float = 1.0
    method: str = "sgd"
    learning_rate: float = 0.01
    hparams: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int | None = 512
    epochs: int = 10
    eval_every: int = 1
    seed: int = 0
    n_train: int | None = None
    n_val: int = 0
    n_test: int | None = None
    thresholds: tuple[float, ...] = (1.0, 0.99)
    patience: int | None = None
    selection: str = "validation"
    probe_every: int = 0
    probes: tuple[str, ...] = ("r_ig", "lambda_max", "trace", "param_norm")
    probe_examples: int = 1024
    probe_lanczos_iters: int = 20
    probe_trace_samples: int = 10
    monitor: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice(self.dataset, DATASETS, "dataset")
        check_choice(self.model, models.MODELS, "model")
        rule = methods.get(self.method)
        if not isinstance(self.hparams, Mapping):
            raise ConfigError(f"hparams must be a mapping of hyperparameter names to values, got {self.hparams!r}")
        object.__setattr__(self, "hparams", _Frozen(rule.hyperparams(self.hparams)))
        check_positive(self.learning_rate, "learning_rate")
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        for name in ("width", "epochs", "eval_every", "probe_examples", "probe_lanczos_iters"):
            check_int(getattr(self, name), name, 1)
        check_int(self.depth, "depth", 0)
        check_int(self.probe_trace_samples, "probe_trace_samples", 2)
        check_int(self.probe_every, "probe_every", 0)
        check_int(self.batch_size, "batch_size", 1, optional=True)
        if rule.batch == "full" and self.batch_size is not None:
            raise ConfigError(f"method {self.method!r} takes the full batch: set batch_size=None")
        if rule.batch == "mini" and self.batch_size is None:
            raise ConfigError(f"method {self.method!r} takes mini-batches: give a batch_size "
                              "(or use 'gd' for full-batch gradient descent)")
        multiplier = check_number(self.width_multiplier, "width_multiplier")
        if not 0 < multiplier <= 8:
            raise ConfigError(f"width_multiplier must be a number in (0, 8], got {self.width_multiplier!r}")
        thresholds = tuple(check_number(t, "threshold") for t in self.thresholds)
        if not thresholds or any(not 0 < t <= 1 for t in thresholds):
            raise ConfigError(f"thresholds must be training accuracies in (0, 1], got {self.thresholds!r}")
        object.__setattr__(self, "thresholds", thresholds)
        check_int(self.patience, "patience", 0, optional=True)
        check_int(self.n_train, "n_train", 1, optional=True)
        if (self.batch_size or self.n_train) is not None:  # full batch with n_train None: the program checks
            rule.check_batch(self.batch_size or self.n_train, self.hparams)
        check_int(self.n_test, "n_test", 1, optional=True)
        check_int(self.n_val, "n_val", 0)
        check_int(self.seed, "seed", 0)
        check_choice(self.selection, SELECTIONS, "selection rule")
        if self.selection == "validation" and self.n_val == 0:
            raise ConfigError("selection='validation' needs a validation split: set n_val > 0 "
                              "(or selection='test', the paper's max-test-accuracy rule)")
        probes = tuple(self.probes)
        for name in probes:
            check_choice(name, PROBES, "probe")
        object.__setattr__(self, "probes", probes)
        if not isinstance(self.monitor, Mapping):
            raise ConfigError(f"monitor must be a mapping of MonitorConfig fields, got {self.monitor!r}")
        object.__setattr__(self, "monitor", _Frozen(MonitorConfig.from_dict(self.monitor).to_dict()))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a plain dict (a record's ``train`` section), naming any unknown key."""
        check_keys(values, [f.name for f in dataclasses.fields(cls)], "training config")
        values = dict(values)
        for name in ("thresholds", "probes"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(hparams=dict(self.hparams), monitor=dict(self.monitor),
                   thresholds=list(self.thresholds), probes=list(self.probes))
        return out

    @property
    def rule(self) -> methods.Method:
        """The update rule."""
        return methods.get(self.method)

    @property
    def full_batch(self) -> bool:
        """Whether each step uses the whole training split."""
        return self.batch_size is None

    def vmapped(self) -> dict[str, float]:
        """The values of the fields that may differ between runs of one program: the learning
        rate and the method's vmappable hyperparameters (the seed too, handled apart)."""
        out = {"learning_rate": self.learning_rate}
        out.update({k: v for k, v in self.hparams.items() if k in self.rule.vmappable})
        return out

    def program_key(self) -> "TrainConfig":
        """This config with the seed and the vmapped values set to fixed placeholders: equal for
        every run that can share one compiled training program."""
        placeholders = {k: v for k, v in self.rule.hyperparams({}).items() if k in self.rule.vmappable}
        return dataclasses.replace(self, seed=0, learning_rate=1.0,
                                   hparams={**self.hparams, **placeholders})

    def group_key(self) -> tuple:
        """Hashable; equal for configs that can train as one vmapped group."""
        key = self.program_key()
        return tuple((f.name, getattr(key, f.name)) for f in dataclasses.fields(key))

    def build_model(self) -> models.Model:
        """The model this config trains (one shared object per architecture, so that jitted
        functions built from it compile once)."""
        if self.model == "mlp":
            return _model("mlp", width=self.width, depth=self.depth, activation=self.activation)
        return _model("resnet18", width_multiplier=self.width_multiplier)


class _Frozen(dict):
    """A read-only, hashable dict (so a config with mapping fields stays hashable)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a config's mapping fields are read-only")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _readonly  # type: ignore[assignment]


@functools.lru_cache(maxsize=32)
def _model(name: str, **kwargs: Any) -> models.Model:
    return models.build(name, **kwargs)
