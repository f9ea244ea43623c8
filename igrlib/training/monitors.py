"""A run's status from what its evaluations show (numpy only: no JAX, no training code).

Statuses, each recorded with the optimizer step where it was decided and a reason:

* ``diverged``: the loss or the update became NaN/inf (the step is the first non-finite one),
  *or* a finite blow-up: the full-training-split loss stayed above ``blowup_factor`` times its
  value at initialisation for ``blowup_evals`` consecutive evaluations (networks under large-step
  gradient descent can hold losses far above chance without ever producing a NaN);
* ``dead``: training accuracy never exceeded ``dead_accuracy`` (in units of the chance accuracy
  1/C) during the first ``dead_evals`` evaluations after initialisation: the run never left chance;
* ``collapsed``: after reaching ``collapse_peak`` training accuracy, it fell back to chance
  (training accuracy ≤ 2/C and loss within 0.25 nats of ln C);
* ``ok``: none of these (yet).

A run with a final status stops early; the program freezes it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from igrlib.config import ConfigError, check_int, check_keys, check_number

STATUSES: tuple[str, ...] = ("ok", "diverged", "dead", "collapsed")


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds of the status rules (see the module docstring); units as named."""

    blowup_factor: float = 10.0
    blowup_evals: int = 3
    dead_evals: int = 10
    dead_accuracy: float = 1.5
    collapse_peak: float = 0.5

    def __post_init__(self) -> None:
        if check_number(self.blowup_factor, "blowup_factor") <= 1:
            raise ConfigError(f"blowup_factor must be > 1, got {self.blowup_factor!r}")
        check_int(self.blowup_evals, "blowup_evals", 1)
        check_int(self.dead_evals, "dead_evals", 1)
        if check_number(self.dead_accuracy, "dead_accuracy") <= 1:
            raise ConfigError(f"dead_accuracy is in units of chance accuracy and must be > 1, got {self.dead_accuracy!r}")
        if not 0 < check_number(self.collapse_peak, "collapse_peak") <= 1:
            raise ConfigError(f"collapse_peak must be a training accuracy in (0, 1], got {self.collapse_peak!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MonitorConfig":
        check_keys(values, [f.name for f in dataclasses.fields(cls)], "monitor")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Verdict(NamedTuple):
    """A final status, the optimizer step where it was decided, and why."""

    status: str
    step: int
    reason: str


class Monitor:
    """Follows one run's evaluations and decides its status (see the module docstring)."""

    def __init__(self, config: MonitorConfig, num_classes: int):
        self.config = config
        self.num_classes = num_classes
        self.initial_loss: float | None = None
        self.evals = 0
        self.above = 0
        self.peak_acc = 0.0

    def update(self, step: int, train_loss: float, train_acc: float,
               nonfinite_step: int | None = None) -> Verdict | None:
        """Take one evaluation (at optimizer ``step``; ``nonfinite_step`` the first step whose loss
        or update was not finite, if any) and return a :class:`Verdict` once the run has a final
        status, else None."""
        cfg, chance = self.config, 1.0 / self.num_classes
        if nonfinite_step is not None:
            return Verdict("diverged", int(nonfinite_step), "the loss or the update became NaN/inf")
        if not math.isfinite(train_loss):
            return Verdict("diverged", step, f"training-split loss {train_loss} is not finite")
        if self.initial_loss is None:
            self.initial_loss = train_loss
        self.peak_acc = max(self.peak_acc, train_acc)
        self.above = self.above + 1 if train_loss > cfg.blowup_factor * self.initial_loss else 0
        if self.above >= cfg.blowup_evals:
            return Verdict("diverged", step,
                           f"training loss {train_loss:.3g} above {cfg.blowup_factor:g}x its initial "
                           f"{self.initial_loss:.3g} for {cfg.blowup_evals} evaluations")
        if (self.peak_acc >= cfg.collapse_peak and train_acc <= 2 * chance
                and abs(train_loss - math.log(self.num_classes)) < 0.25):
            return Verdict("collapsed", step,
                           f"fell back to chance (accuracy {train_acc:.3f}) after a peak of {self.peak_acc:.3f}")
        if self.evals == cfg.dead_evals and self.peak_acc <= cfg.dead_accuracy * chance:
            return Verdict("dead", step,
                           f"training accuracy never above {cfg.dead_accuracy:g}x chance "
                           f"({self.peak_acc:.3f}) in {cfg.dead_evals} evaluations")
        self.evals += 1
        return None
