"""What the network experiments share: config layout, grouping, train-then-measure.

A run's config is ``{"train": TrainConfig fields, "measure": MeasureConfig fields}``; its record
holds the selected checkpoint's metrics (the evaluation of maximal validation accuracy, or of
maximal test accuracy under the paper's rule, among those at or above the first
training-accuracy threshold), the measurements there, the metrics at the other thresholds, the
whole evaluation history and the probes along the trajectory.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import pandas as pd

from igrlib.io import data as data_mod
from igrlib.maths import losses
from igrlib.config import ConfigError
from igrlib.measurement.measure import MeasureConfig, measure
from igrlib.io.results import canonical, run_id
from igrlib.sweep import Outcome
from igrlib.training.config import TrainConfig
from igrlib.training.program import EVAL_METRICS, RunResult, train_group


def make_grid(base: Mapping[str, Any], axes: Mapping[str, Sequence[Any]],
              measure_config: MeasureConfig) -> list[dict[str, Any]]:
    """Every combination of ``axes`` over ``base``, validated now, before any compute; the last
    axis varies fastest. Keys that are not :class:`TrainConfig` fields (``mu``, ``beta``, …) are
    hyperparameters of the update rule and go into ``hparams``."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    grid = []
    for values in itertools.product(*axes.values()):
        merged = {**base, **dict(zip(axes, values))}
        hparams = {**merged.pop("hparams", {}), **{k: merged.pop(k) for k in list(merged) if k not in fields}}
        train_cfg = TrainConfig.from_dict({**merged, "hparams": hparams})
        grid.append({"train": train_cfg.to_dict(), "measure": measure_config.to_dict()})
    if not grid:
        raise ConfigError("the grid is empty: every axis needs at least one value")
    return grid


def train_config(config: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict(config["train"])


def group_key(config: Mapping[str, Any]) -> Hashable:
    """Runs that can share one compiled, vmapped program (one job of a sweep). A ResNet is never
    vmapped (a group of one on every device, see :func:`group_size`), so each of its runs is a
    program of its own and a cluster gets one job per run instead of a chain of them."""
    cfg = train_config(config)
    key = (cfg.group_key(), canonical(config["measure"]))
    return key + (canonical(config["train"]),) if cfg.model == "resnet18" else key


def group_size(config: Mapping[str, Any]) -> int:
    """Runs per program. On a GPU, batch many; on a CPU, vmap only small MLPs, where it pays
    (bench/ measures the crossover: batched matmuls of wide layers run slower than a loop)."""
    cfg = train_config(config)
    if jax.default_backend() != "cpu":
        return 1 if cfg.model == "resnet18" else 16
    if cfg.model == "mlp" and cfg.width <= 100:
        return 8
    return 1


def load_data(cfg: TrainConfig) -> data_mod.Dataset:
    return data_mod.load(cfg.dataset, n_train=cfg.n_train, n_test=cfg.n_test, n_val=cfg.n_val)


def outcome(result: RunResult, data: data_mod.Dataset, measure_config: MeasureConfig) -> Outcome:
    """Measure a trained run at its selected checkpoint and package it as an :class:`Outcome`.

    The checkpoint is the selection at the first threshold; when that threshold was never
    reached, the selection at the next threshold that was, else the final parameters; the
    record says which (``selected_at``: the threshold, or ``"final"``).
    """
    cfg = result.config
    metrics: dict[str, Any] = {
        "num_params": result.num_params,
        "lambda": losses.igr_lambda(cfg.learning_rate, result.num_params),
        "epochs_run": result.history["epoch"][-1] if result.history["epoch"] else 0,
        "final_train_acc": result.history["train_acc"][-1],
        "final_test_acc": result.history["test_acc"][-1],
        "dataset_label": data.label,
    }
    for t in cfg.thresholds:
        sel = result.selections.get(t)
        tag = f"{t:g}".replace(".", "p")
        metrics[f"reached_{tag}"] = sel is not None
        if sel is not None:
            metrics[f"test_acc_at_{tag}"] = sel.metrics["test_acc"]
            metrics[f"epoch_at_{tag}"] = sel.epoch
    chosen = next((result.selections[t] for t in cfg.thresholds if t in result.selections), None)
    if chosen is None:
        params, state, selected_at = result.params, result.state, "final"
        metrics.update({k: result.history[k][-1] for k in EVAL_METRICS if k in result.history})
        metrics["selected_epoch"] = metrics["epochs_run"]
    else:
        params, state, selected_at = chosen.params, chosen.state, chosen.threshold
        metrics.update(chosen.metrics)
        metrics["selected_epoch"] = chosen.epoch
    metrics["selected_at"] = selected_at
    metrics["selection"] = cfg.selection
    extra: dict[str, Any] = {"status_reason": result.status_reason}
    if result.status == "ok":
        found, measured = measure(cfg.build_model(), params, state, data, measure_config,
                               jax.random.key(cfg.seed + 7919))
        metrics.update(found)
        extra.update(measured)
    return Outcome(status=result.status, metrics=metrics, history=result.history, extra=extra,
                   status_step=result.status_step, wall_time_s=result.wall_time_s)


def run_group(configs: Sequence[Mapping[str, Any]], progress: bool = True) -> list[Outcome]:
    """Train a group as one program, then measure each run; one :class:`Outcome` per config.
    ``progress`` prints plain progress lines (:mod:`igrlib.io.progress`)."""
    train_cfgs = [train_config(c) for c in configs]
    measure_config = MeasureConfig(**{**configs[0]["measure"], "sigmas": tuple(configs[0]["measure"]["sigmas"])})
    data = load_data(train_cfgs[0])
    results = train_group(train_cfgs, data, progress=progress)
    return [outcome(r, data, measure_config) for r in results]


#: Config columns that identify a run in a trajectory frame, where a frame has them.
RUN_COLUMNS = ("id", "method", "width", "width_multiplier", "learning_rate", "mu", "seed", "status")


def trajectories(runs: pd.DataFrame) -> pd.DataFrame:
    """The probes of every run as a tidy frame: one row per (run, probe evaluation, quantity),
    columns :data:`RUN_COLUMNS` (those present), ``step``, ``epoch``, ``quantity`` (the probe's
    name without its ``probe_`` prefix: ``train_loss``, ``r_ig``, ``lambda_max``,
    ``h_lambda_max``, ``stability``, ``hessian_trace``, ``hessian_trace_se``, ``param_norm``) and
    ``value``. Runs recorded without probes contribute no rows."""
    rows = []
    for _, run in runs.iterrows():
        h = run["history"]
        if "probe_step" not in h:
            continue
        ident = {c: run[c] for c in RUN_COLUMNS if c in run.index}
        for name, values in h.items():
            if not name.startswith("probe_") or name in ("probe_step", "probe_epoch"):
                continue
            for step, epoch, value in zip(h["probe_step"], h["probe_epoch"], values):
                rows.append({**ident, "step": step, "epoch": epoch, "quantity": name[len("probe_"):],
                             "value": value})
    return pd.DataFrame(rows, columns=[*[c for c in RUN_COLUMNS if c in runs.columns],
                                       "step", "epoch", "quantity", "value"])


def history_frame(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Long table of every evaluation of every run: the run's ``columns``, ``epoch`` and the
    per-evaluation metrics of its history. Probes (``probe_*``) run at their own cadence, so their
    lists are shorter; they are left to :func:`trajectories`."""
    frames = []
    for _, run in runs.iterrows():
        h = pd.DataFrame({k: v for k, v in run["history"].items() if not k.startswith("probe_")})
        for col in columns:
            h[col] = run[col]
        frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclasses.dataclass(frozen=True)
class Computations:
    """A results-store experiment whose every config is one computation, not a training run:
    ``compute(config) -> (metrics, history)``, timed (``wall_time_s``, seconds) and stored as an
    ``ok`` record, each config a program of its own. Timings and float64 studies are of this kind."""

    NAME: str
    compute: Callable[[Mapping[str, Any]], tuple[dict[str, Any], dict[str, Any]]]

    def group_key(self, config: Mapping[str, Any]) -> str:
        return run_id(config)

    def group_size(self, config: Mapping[str, Any]) -> int:
        return 1

    def run_group(self, configs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        outcomes = []
        for config in configs:
            began = time.perf_counter()
            metrics, history = self.compute(config)
            outcomes.append(Outcome("ok", metrics=metrics, history=history,
                                    wall_time_s=time.perf_counter() - began))
        return outcomes


def loss_crossing(loss: Sequence[float], level: float) -> tuple[int, float] | None:
    """Where a run's training loss (nats) first falls to ``level``: ``(i, w)`` with ``i`` the first
    index with ``loss[i] ≤ level`` and ``w`` the weight of point ``i`` in the interpolation linear
    in log E between points ``i − 1`` and ``i`` (1 at the first point, after a non-finite loss or
    between equal losses); None if the loss never gets there. Runs compared at one ``level`` are
    compared at equal fit (matched training loss)."""
    loss = np.asarray(loss, float)
    hit = np.flatnonzero(np.isfinite(loss) & (loss <= level))
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0 or not np.isfinite(loss[i - 1]):
        return i, 1.0
    lo, hi = np.log(loss[i]), np.log(loss[i - 1])
    return i, float((hi - np.log(level)) / (hi - lo)) if hi > lo else 1.0


def at_crossing(values: Sequence[float] | None, where: tuple[int, float] | None, log: bool = False) -> float:
    """``values`` read at a :func:`loss_crossing` ``(i, w)``: ``(1 − w)·v[i−1] + w·v[i]``, in log v
    when ``log`` (quantities that vary over decades); NaN when there is no crossing or no values."""
    if where is None or values is None:
        return float("nan")
    i, w = where
    v = np.asarray([np.nan if x is None else x for x in values], float)
    if i == 0 or w == 1.0:
        return float(v[i])
    a, b = (np.log(v[i - 1]), np.log(v[i])) if log else (v[i - 1], v[i])
    out = (1 - w) * a + w * b
    return float(np.exp(out) if log else out)


def paired_differences(frame: pd.DataFrame, x: str, low: Any, high: Any, y: str, scale: float = 1.0) -> list[float]:
    """Per seed, ``scale·(y(x = high) − y(x = low))``, over the seeds that have both (runs of one
    seed share initialisation and data order, so the difference is the effect of ``x`` alone)."""
    cells = frame.pivot_table(index="seed", columns=x, values=y, aggfunc="mean")
    if low not in cells or high not in cells:
        return []
    return (scale * (cells[high] - cells[low])).dropna().tolist()
