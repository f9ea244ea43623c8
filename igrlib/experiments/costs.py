"""What each experiment grid costs: runs, optimizer steps, estimated FLOPs, measured CPU time.

Computed from each experiment's ``grid(profile)``, so the table cannot drift from the grids:

* steps of a run: ``epochs · ceil(n / batch_size)`` with ``n`` its training examples; an upper
  bound, since a run may stop early (divergence, patience);
* forward FLOPs per example ``F``: XLA's own count (``cost_analysis``) of the model's forward
  pass on one example, lowered but not compiled;
* FLOPs of a run: ``3F`` per example of a plain step (forward and backward, the backward about
  twice the forward), ``9F`` of an EGR step (its Hessian-vector product costs about two
  gradients), times ``batch_size · steps``; plus ``F`` per example of each evaluation (the
  training subset and the test set every ``eval_every`` epochs). Curvature and robustness
  measurements after training are not counted (a few hundred gradient-sized passes);
* measured CPU time: the sum of ``provenance.wall_time_s`` over the records stored under
  ``data/results/cpu/<experiment>/`` of the ``cpu`` grid's runs (training time each run's share of
  its group);
* one modern GPU: ``FLOPs / GPU_FLOPS``, an *assumed* sustained float32 rate, not a measurement.
  It is a lower bound where kernels are too small to fill the GPU (narrow MLPs).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import pandas as pd

from igrlib.config import PROFILES
from igrlib.io import paths
from igrlib.io.results import run_id
from igrlib.maths import models

#: assumed sustained float32 rate of one modern data-centre GPU (FLOP/s): about a third of an
#: H100's 67 TFLOP/s float32 peak without tensor cores
GPU_FLOPS = 20e12
#: training-split sizes when a config trains on the full split (``n_train`` None)
FULL_TRAIN = {"mnist": 60_000, "cifar10": 50_000}
FULL_TEST = {"mnist": 10_000, "cifar10": 10_000}
INPUT_SHAPE = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
#: per example of a step, in forward passes: a gradient 3; EGR, a gradient and a Hessian-vector
#: product, 9; SAM and the gradient-norm penalty, two gradients, 6; the explicit variance penalty,
#: the batch's gradient, the micro-batch gradients and the backward pass through them, 12; every
#: other rule one gradient
STEP_FORWARDS = {"egr": 9, "sam": 6, "gnp": 6, "var_penalty": 12}


@functools.lru_cache(maxsize=None)
def forward_flops(model: str, dataset: str, width: int = 0, depth: int = 0,
                  activation: str = "relu", width_multiplier: float = 1.0) -> float:
    """XLA's FLOP count of one example's forward pass through the model (lowered, not run)."""
    net = (models.mlp(width, depth, activation=activation) if model == "mlp"
           else models.resnet18(width_multiplier))
    x = jax.ShapeDtypeStruct((1, *INPUT_SHAPE[dataset]), jnp.float32)
    params, state = jax.eval_shape(net.init, jax.random.key(0), x)
    lowered = jax.jit(lambda p, s, xs: net.apply(p, s, xs, False)[0]).lower(params, state, x)
    analysis = lowered.cost_analysis()
    if isinstance(analysis, Sequence):  # some jax versions return one dict per device
        analysis = analysis[0]
    return float(analysis["flops"])


def run_cost(train: dict[str, Any]) -> dict[str, float]:
    """``{"steps": ..., "flops": ...}`` of one run's training and evaluations (see module doc)."""
    n_train = train.get("n_train") or FULL_TRAIN[train["dataset"]]
    n_test = train.get("n_test") or FULL_TEST[train["dataset"]]
    batch = train.get("batch_size") or n_train  # None: full-batch training, one step an epoch
    steps = train["epochs"] * math.ceil(n_train / batch)
    f = forward_flops(train["model"], train["dataset"], train.get("width", 0), train.get("depth", 0),
                      train.get("activation", "relu"), train.get("width_multiplier", 1.0))
    per_step = STEP_FORWARDS.get(train.get("method", "sgd"), 3) * f * batch
    evaluations = train["epochs"] // max(train.get("eval_every", 1), 1)
    evaluated = n_train + n_test + (train.get("n_val") or 0)
    return {"steps": steps, "flops": steps * per_step + evaluations * f * evaluated}


def measured_seconds(experiment: str, profile: str = "cpu", root: Path | None = None,
                     ids: Collection[str] | None = None) -> tuple[int, float]:
    """(records, summed ``provenance.wall_time_s``) under ``<results>/<profile>/<experiment>/``,
    only those of the run ``ids`` when given (a store may also hold a second seed set)."""
    folder = (root or paths.results_dir()) / profile / experiment
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
               if ids is None or p.stem in ids]
    return len(records), sum(r.get("provenance", {}).get("wall_time_s") or 0.0 for r in records)


def table(chapters: dict[str, Any], root: Path | None = None) -> pd.DataFrame:
    """One row per chapter and profile: runs, steps, FLOPs, measured ``cpu`` time (committed
    records), and the GPU estimate. ``chapters`` maps a chapter name to its experiment module
    (anything with ``NAME`` and ``grid(profile)``); ``root`` is the results store (default:
    the project's ``data/results``, whatever ``$IGR_RESULTS_DIR`` says)."""
    rows = []
    for chapter, module in chapters.items():
        for profile in PROFILES:
            costs = [run_cost(config["train"]) for config in module.grid(profile)]
            flops = sum(c["flops"] for c in costs)
            row = {"chapter": chapter, "profile": profile, "runs": len(costs),
                   "steps (at most)": sum(c["steps"] for c in costs), "PFLOP": flops / 1e15,
                   "cpu here, measured (min)": None,
                   "one GPU, estimated (h)": flops / GPU_FLOPS / 3600}
            if profile == "cpu":
                ids = {run_id(config) for config in module.grid("cpu")}
                count, seconds = measured_seconds(module.NAME, "cpu", root, ids)
                row["cpu here, measured (min)"] = seconds / 60 if count else None
            rows.append(row)
    return pd.DataFrame(rows)
