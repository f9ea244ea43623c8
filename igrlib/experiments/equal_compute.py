"""EGR, SAM and the gradient-norm penalty against plain SGD, at equal steps and equal gradients.

One data protocol (that of :mod:`igrlib.experiments.egr_mlp`: ReLU MLPs with ``depth`` hidden
layers on a class-balanced MNIST subset, cross-entropy, mini-batch SGD with batch 512, a
validation split that selects the reported checkpoint among the evaluations at or above the
training-accuracy threshold) and these arms, every one on the same seeds (a seed fixes the
initialisation and the data order, so arms are paired by seed):

* ``SGD h``: plain SGD at the small rate h, ``epochs`` epochs;
* ``SGD h, 2× steps``: the same with twice the epochs: the control with as many gradient
  evaluations as a two-gradient method;
* ``SGD h+4μ``: plain SGD at the rate whose implicit regularizer (h+4μ)/4·‖∇E‖² equals EGR's
  total to first order (:func:`igrlib.training.egr.lambda_equiv`);
* ``EGR (HVP)``: descent on E + μ‖∇E‖² with the exact Hessian-vector product;
* ``EGR (FD)``: the same penalty with the finite-difference product (two gradients a step);
* ``GNP``: Zhao, Zhang & Hu's penalty E + αr‖∇E‖ by their finite difference (step r);
* ``SAM-u``: SAM with the unnormalised ascent at ρ = 2μ, EGR at μ to first order
  (:mod:`igrlib.maths.sam_map`);
* ``SAM ρ``: Foret et al.'s SAM (normalised ascent) over a ρ grid; to first order EGR at the
  state-dependent μ = ρ/(2‖∇E‖).

No early stopping (``patience`` None): every run spends its whole budget, so "equal steps" holds.
Probes along training (R_IG, λ_max, tr H of the unpenalised loss) let the chapter compare arms at
a matched training loss (:func:`at_matched_loss`) rather than at the end, where the arms fit the
data to different degrees. Wall time per step is measured apart (:data:`COST`).

Profiles (:data:`PROFILES`): ``cpu`` width 50 on a 10k-image subset, 5 seeds, and a disjoint second
seed set ``seeds_b`` on which every verdict is recomputed; ``paper`` width 200 on the full training
set, 5 seeds; ``smoke`` only checks that everything runs.

The CIFAR-10 slice (:data:`CIFAR_PROFILES`, store :data:`CIFAR`): some of the arms on the
ResNet-18 of :mod:`igrlib.experiments.cifar_resnet` (``cpu``: the narrow network, a few epochs,
two seeds, every verdict about minima gated by :func:`igrlib.maths.stats.far_from_minimum`;
``paper``: every arm on the full network and training set; ``smoke``: none), its step cost timed
on the runs' own training programs (:data:`CIFAR_COST`).
"""

from __future__ import annotations

import math
import os
import types
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from igrlib import executors
from igrlib.config import ConfigError, axis_values, check_keys, check_positive, resolve_profile
from igrlib.experiments import cifar_resnet, common, egr_mlp, mnist_mlp
from igrlib.io import data
from igrlib.maths import models, stats
from igrlib.maths.objectives import loss_fn
from igrlib.measurement.measure import MeasureConfig
from igrlib.training import methods
from igrlib.training.config import TrainConfig
from igrlib.training.program import program
from igrlib.training.timing import interleaved_times

NAME = "equal_compute"

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        width=(16,), seed=(0, 1), h=0.05, mu=0.02, rho=(0.05,), gnp=dict(alpha=0.8, r=0.1),
        # each update rule is a program of its own, compiled in ~8 s of CPU: smoke runs two
        arms=("SGD h", "SGD h+4μ", "SAM ρ=0.05"),
        base=dict(epochs=2, depth=1, batch_size=256, n_train=1024, n_val=512, n_test=512, eval_every=1,
                  thresholds=(0.1,), probe_every=1, probe_examples=128, probe_lanczos_iters=4,
                  probe_trace_samples=2),
        measure=dict(curvature_examples=256, curvature_batch=128, lanczos_iters=4, trace_samples=2,
                     slope_directions=2, noise_draws=2, sigmas=(0.0,), slices=False),
        cost_batch=256, cost_repeats=3, seeds_b=(),
    ),
    "cpu": dict(
        width=(50,), seed=(0, 1, 2, 3, 4), h=0.02, mu=0.02, rho=(0.01, 0.05, 0.2),
        gnp=dict(alpha=0.8, r=0.1),
        base=dict(epochs=60, n_train=10_000, n_val=5_000, n_test=10_000, eval_every=2, patience=None,
                  thresholds=(0.95, 0.97), probe_every=3, probe_examples=512, probe_lanczos_iters=8,
                  probe_trace_samples=4),
        # the chapter reads curvature at the matched loss from the probes; the checkpoint's own
        # measurement is taken at the probes' precision (it informs only the first-order μ, via R_IG)
        measure=dict(curvature_examples=512, lanczos_iters=8, trace_samples=4,
                     slope_directions=2, noise_draws=2, sigmas=(0.0,), slices=False),
        cost_batch=512, cost_repeats=15, seeds_b=(5, 6, 7, 8, 9), workers=2,
    ),
    "paper": dict(
        width=(200,), seed=(0, 1, 2, 3, 4), h=0.005, mu=0.025, rho=(0.01, 0.05, 0.2),
        gnp=dict(alpha=0.8, r=0.1),
        base=dict(epochs=400, n_val=5_000, eval_every=2, patience=None, thresholds=(1.0, 0.99),
                  probe_every=5, probe_examples=2048),
        measure=dict(curvature_examples=10_240, trace_samples=50, noise_draws=2, sigmas=(0.0,),
                     slices=False),
        cost_batch=512, cost_repeats=11, seeds_b=(),
    ),
}
BASE = mnist_mlp.BASE
AXES = ("width", "seed")
#: Training fields a caller may override (the arms fix method, learning rate and hyperparameters).
OVERRIDABLE = ("epochs", "n_train", "n_val", "n_test", "thresholds", "probe_every", "eval_every")


def arms(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, training fields)`` of every arm of a profile's ``spec`` (see the module doc), or
    of those its ``arms`` entry names."""
    h, mu, epochs = spec["h"], spec["mu"], spec["base"]["epochs"]
    out = [
        ("SGD h", dict(method="sgd", learning_rate=h)),
        ("SGD h, 2× steps", dict(method="sgd", learning_rate=h, epochs=2 * epochs)),
        ("SGD h+4μ", dict(method="sgd", learning_rate=h + 4 * mu)),
        ("EGR (HVP)", dict(method="egr", learning_rate=h, mu=mu, penalty_method="hvp")),
        ("EGR (FD)", dict(method="egr", learning_rate=h, mu=mu, penalty_method="finite_difference")),
        ("GNP", dict(method="gnp", learning_rate=h, **spec["gnp"])),
        ("SAM-u ρ=2μ", dict(method="sam", learning_rate=h, rho=2 * mu, ascent="unnormalized")),
    ]
    out += [(f"SAM ρ={rho:g}", dict(method="sam", learning_rate=h, rho=rho, ascent="normalized"))
            for rho in spec["rho"]]
    chosen = spec.get("arms")
    if chosen is not None:
        unknown = sorted(set(chosen) - {label for label, _ in out})
        if unknown:
            raise ConfigError(f"unknown arm(s) {unknown}; the arms are {[label for label, _ in out]}")
        out = [(label, arm) for label, arm in out if label in chosen]
    return out


def sweep_options(profile: str | None) -> dict[str, Any]:
    """Keyword arguments for :func:`igrlib.sweep.run` of this chapter's grids: the profile's
    ``workers`` (``cpu``: two worker processes, one per core of the 2-core build machine, since
    one training program keeps about one core busy), unless ``$IGR_EXECUTOR`` or ``$IGR_WORKERS``
    say where sweeps run; else none (the sweep's default)."""
    workers = PROFILES[resolve_profile(profile)].get("workers")
    if workers is None or os.environ.get(executors.EXECUTOR_ENV) or os.environ.get(executors.WORKERS_ENV):
        return {}
    return dict(executor="process", workers=workers)


def _spec(profile: str | None, overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The profile's spec with ``overrides`` applied, and the axes; validated, no compute."""
    spec = dict(PROFILES[resolve_profile(profile)])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    axes = {k: axis_values(k, overrides.pop(k, spec[k])) for k in AXES}
    check_keys(overrides, ["h", "mu", "rho", *OVERRIDABLE], "equal_compute override")
    for name in ("h", "mu"):
        if name in overrides:
            check_positive(overrides[name], name)
            spec[name] = float(overrides.pop(name))
    if "rho" in overrides:
        spec["rho"] = axis_values("rho", overrides.pop("rho"))
        for rho in spec["rho"]:
            check_positive(rho, "rho")
    spec["base"] = {**spec["base"], **overrides}
    return spec, axes


def grid(profile: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The run configs of ``profile``: every arm of :func:`arms` × width × seed. ``overrides``
    replace the axes ``width`` and ``seed`` (sequences), the arms' ``h``, ``mu``, ``rho`` (a
    sequence) or training fields of :data:`OVERRIDABLE`. Validated here, before any compute."""
    spec, axes = _spec(profile, overrides)
    base = {**BASE, **spec["base"]}
    measure = MeasureConfig(**spec["measure"])
    configs = []
    for _, arm in arms(spec):
        configs += common.make_grid({**base, **arm}, dict(width=axes["width"], seed=axes["seed"]), measure)
    return configs


group_key = common.group_key
group_size = common.group_size
run_group = common.run_group


def largest_first(configs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``configs`` with the programs (:func:`group_key`) of most gradient evaluations first, each
    program's runs in their order (so its vmapped groups are unchanged): parallel workers then
    finish together instead of one running the normalised-SAM program, three arms' worth, alone
    at the end. The sweep's records do not depend on the order."""
    work: dict[Any, float] = {}
    for c in configs:
        per_step = gradients_per_step(c["train"]["method"], c["train"]["hparams"].get("penalty_method"))
        work[group_key(c)] = work.get(group_key(c), 0.0) + per_step * c["train"]["epochs"]
    return sorted(configs, key=lambda c: -work[group_key(c)])


# ---------------------------------------------------------------------------------------------
# The CIFAR-10 slice: a few arms on the narrow ResNet-18 of :mod:`igrlib.experiments.cifar_resnet`

#: The CIFAR-10 slice of each profile (None: not run): the ResNet-18 at ``width_multiplier``,
#: the ``arms`` named (of :func:`arms`, at this spec's ``h``, ``mu``, ``rho``), ``seed`` × arm.
#: ``cpu`` is a few epochs on 1,024 images; ``paper`` is the full network on the full training set
#: with every arm and ρ of the MLP grid. ``in_chapter``: whether the chapter trains the slice. At
#: ``cpu`` it does not: the slice takes about 7 minutes on 2 cores, most of it compiling the
#: ResNet's programs, which the chapter's 15-minute budget does not hold beside the MLP's two seed
#: sets; the chapter renders its stored records, and
#: ``python -m igrlib.sweep igrlib.experiments.equal_compute:CIFAR --profile cpu`` trains it.
CIFAR_PROFILES: dict[str, dict[str, Any] | None] = {
    "smoke": None,  # CI stays cheap: the slice's grid and analysis are covered by unit tests
    "cpu": dict(
        width_multiplier=0.0625, seed=(0, 1), h=0.05, mu=0.0125, rho=(0.05,), gnp=dict(alpha=0.8, r=0.1),
        arms=("SGD h", "SGD h+4μ", "EGR (FD)", "SAM ρ=0.05"),
        base=dict(epochs=4, batch_size=64, n_train=1024, n_val=500, n_test=1000, eval_every=1,
                  thresholds=(0.1,), patience=None),
        measure=dict(cifar_resnet.LIGHT_MEASURE, sigmas=(0.0,), noise_draws=2),
        cost_repeats=3, in_chapter=False,
    ),
    "paper": dict(
        width_multiplier=1.0, seed=(0, 1, 2), h=0.01, mu=0.01, rho=(0.01, 0.05, 0.2),
        gnp=dict(alpha=0.8, r=0.1),
        base=dict(epochs=200, batch_size=512, n_val=5_000, eval_every=2, patience=None,
                  thresholds=(0.99, 0.9), probe_every=5, probe_examples=1024),
        measure=cifar_resnet.PROFILES["paper"]["measure"],
        cost_repeats=3, in_chapter=True,
    ),
}


def cifar_spec(profile: str | None) -> dict[str, Any] | None:
    """The CIFAR slice of ``profile`` (:data:`CIFAR_PROFILES`), None where it is not run."""
    return CIFAR_PROFILES[resolve_profile(profile)]


def cifar_grid(profile: str | None = None, seed: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The run configs of the CIFAR slice of ``profile``: every arm of its spec × seed (``seed``
    overrides the spec's); empty where the profile runs no slice. Validated here, before any
    compute."""
    spec = cifar_spec(profile)
    if spec is None:
        return []
    seeds = axis_values("seed", spec["seed"] if seed is None else seed)
    base = {**cifar_resnet.BASE, **spec["base"], "width_multiplier": spec["width_multiplier"]}
    measure = MeasureConfig(**spec["measure"])
    configs = []
    for _, arm in arms(spec):
        configs += common.make_grid({**base, **arm}, dict(seed=seeds), measure)
    return configs


#: The slice's results store: the training experiment of this module under a store of its own.
CIFAR = types.SimpleNamespace(NAME=NAME + "_cifar", grid=cifar_grid, group_key=common.group_key,
                              group_size=common.group_size, run_group=common.run_group)


# ---------------------------------------------------------------------------------------------
# Analysis

#: The arm every comparison at equal steps is paired with, and the equal-gradient control.
BASELINE, TWICE = "SGD h", "SGD h, 2× steps"
#: Gradient evaluations of one step per update rule (a Hessian-vector product by
#: forward-over-reverse costs about two gradients: :data:`igrlib.experiments.costs.STEP_FORWARDS`).
GRADIENTS_PER_STEP = {"sgd": 1, "egr:hvp": 3, "egr:finite_difference": 2, "gnp": 2, "sam": 2}


def gradients_per_step(method: str, penalty_method: str | None = None) -> int:
    """:data:`GRADIENTS_PER_STEP` of an update rule (``penalty_method``: EGR's)."""
    return GRADIENTS_PER_STEP[f"egr:{penalty_method}" if method == "egr" else method]


def seed_set_b(profile: str | None, seeds_b: Sequence[int] | None, seeds_a: Sequence[int]) -> tuple[int, ...]:
    """:func:`mnist_mlp.seed_set_b` for this experiment's :data:`PROFILES`."""
    return mnist_mlp.seed_set_b(profile, seeds_b, seeds_a, PROFILES)


def arm_of(run: Mapping[str, Any], h: float, epochs: int) -> str:
    """The :func:`arms` label of a record's row (``h``, ``epochs``: the small rate and the
    budget of the equal-steps arms)."""
    method = run["method"]
    if method == "sgd":
        if not math.isclose(run["learning_rate"], h):
            return "SGD h+4μ"
        return TWICE if run["epochs"] > epochs else BASELINE
    if method == "egr":
        return "EGR (HVP)" if run["penalty_method"] == "hvp" else "EGR (FD)"
    if method == "gnp":
        return "GNP"
    if run["ascent"] == "unnormalized":
        return "SAM-u ρ=2μ"
    return f"SAM ρ={run['rho']:g}"


def tidy(runs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """:func:`mnist_mlp.tidy` plus ``arm`` (:func:`arm_of`), ``gradients_per_step``, the budget
    in gradient evaluations relative to ``SGD h`` (``gradient_budget``), ``grad_norm_full``
    ``= √(m·R_IG)`` at the checkpoint and the first-order EGR coefficient of each arm
    (``mu_first_order``: μ for EGR, ρ/2 for SAM-u, ρ/(2‖∇E‖) for SAM and αr/(2‖∇E‖) for GNP,
    with ‖∇E‖ the full training-split gradient norm at the checkpoint)."""
    df = mnist_mlp.tidy(runs, threshold)
    if df.empty:
        return df
    h = float(df.loc[df["method"] != "sgd", "learning_rate"].min())
    epochs = int(df.loc[df["method"] != "sgd", "epochs"].min())
    df["arm"] = [arm_of(row, h, epochs) for _, row in df.iterrows()]
    df["gradients_per_step"] = [gradients_per_step(row["method"], row.get("penalty_method"))
                                for _, row in df.iterrows()]
    df["gradient_budget"] = df["gradients_per_step"] * df["epochs"] / epochs
    df["grad_norm_full"] = np.sqrt(df["num_params"] * df["r_ig"])
    df["mu_first_order"] = first_order_mu(df, df["grad_norm_full"])
    return df


def first_order_mu(df: pd.DataFrame, grad_norm: pd.Series) -> np.ndarray:
    """The EGR coefficient μ (of ‖∇E‖²) that each row's update rule applies to first order, at
    gradient norm ``grad_norm`` (:mod:`igrlib.maths.sam_map`): μ for EGR, ρ/2 for unnormalised SAM,
    ρ/(2‖∇E‖) for normalised SAM, αr/(2‖∇E‖) for the gradient-norm penalty; NaN for SGD."""
    mu = np.where(df["method"] == "egr", df["mu"] if "mu" in df else np.nan, np.nan)
    if "rho" in df:
        mu = np.where(df["method"] == "sam", np.where(df["ascent"] == "unnormalized", df["rho"] / 2,
                                                      df["rho"] / (2 * grad_norm)), mu)
    if "alpha" in df:
        mu = np.where(df["method"] == "gnp", df["alpha"] * df["r"] / (2 * grad_norm), mu)
    return mu


def arm_order(df: pd.DataFrame) -> list[str]:
    """The arms present in ``df``, in the order of :func:`arms` (SAM by ρ)."""
    fixed = [BASELINE, TWICE, "SGD h+4μ", "EGR (HVP)", "EGR (FD)", "GNP", "SAM-u ρ=2μ"]
    sams = sorted((a for a in df["arm"].unique() if a not in fixed), key=lambda a: float(a.split("=")[1]))
    return [a for a in fixed if a in set(df["arm"])] + sams


def probe_frame(runs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The probes of every run (:func:`igrlib.experiments.common.trajectories`) with its ``arm``,
    one row per (run, probe evaluation) and a column per quantity, plus ``grad_norm = √(m·R_IG)``
    (full training split) and the first-order EGR coefficient ``mu_first_order`` there."""
    df = tidy(runs, threshold)
    traj = common.trajectories(runs)
    if traj.empty:
        return traj
    wide = traj.pivot_table(index=["id", "step", "epoch"], columns="quantity", values="value").reset_index()
    cols = ["id", "arm", "seed", "status", "category", "num_params", "method", "learning_rate", "mu_first_order"]
    extra = [c for c in ("rho", "ascent", "alpha", "r", "mu") if c in df]
    wide = wide.merge(df[cols[:-1] + extra], on="id")
    wide["grad_norm"] = np.sqrt(wide["num_params"] * wide["r_ig"])
    wide["mu_first_order"] = first_order_mu(wide, wide["grad_norm"])
    return wide.sort_values(["id", "step"]).reset_index(drop=True)


#: Quantities compared at a matched training loss.
MATCHED = ("r_ig", "lambda_max", "hessian_trace", "grad_norm")


def matched_level(probes: pd.DataFrame) -> float:
    """The matched training loss E*: the largest over runs of each run's lowest probed training
    loss, so that every run of ``probes`` passes through E* (nats)."""
    return float(probes.groupby("id")["train_loss"].min().max())


def at_matched_loss(probes: pd.DataFrame, level: float, quantities: Sequence[str] = MATCHED) -> pd.DataFrame:
    """Each run's ``quantities`` where its training loss first falls to ``level`` (nats), by
    linear interpolation in (log E, log q) between the probe evaluations on either side (the
    quantities are positive and vary over decades); one row per run with ``epoch_at_level``.
    A run whose probed loss never reaches ``level`` gets NaN."""
    check_positive(level, "matched training loss")
    rows = []
    for run_id, run in probes.groupby("id", sort=False):
        run = run.sort_values("step")
        where = common.loss_crossing(run["train_loss"].to_numpy(float), level)
        row = {"id": run_id, "epoch_at_level": common.at_crossing(run["epoch"].to_numpy(float), where)}
        for q in quantities:
            v = run[q].to_numpy(float)
            # log interpolation needs both points positive; a non-positive one leaves no value
            around = v[max(where[0] - 1, 0):where[0] + 1] if where is not None else v[:0]
            row[q] = common.at_crossing(v, where, log=True) if len(around) and (around > 0).all() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_at_loss(runs: pd.DataFrame, level: float) -> pd.DataFrame:
    """Each run's test accuracy at the evaluation where its training loss first falls to
    ``level`` (nats), interpolated linearly in log E between the evaluations on either side of
    it (evaluations are every ``eval_every`` epochs, finer than the probes): ``test_acc_at_level``,
    NaN when the run never gets there. One row per run (``id``)."""
    check_positive(level, "matched training loss")
    rows = []
    for _, run in runs.iterrows():
        h = run["history"]
        where = common.loss_crossing(h["train_loss"], level)
        rows.append({"id": run["id"], "test_acc_at_level": common.at_crossing(h["test_acc"], where)})
    return pd.DataFrame(rows, columns=["id", "test_acc_at_level"])


def matched(runs: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, float]:
    """The kept runs of :func:`tidy` with the :data:`MATCHED` quantities at the matched loss E*
    (columns ``<q>_at_level`` and ``log10_r_ig_at_level``), the test accuracy there
    (``test_acc_at_level``, :func:`accuracy_at_loss`), and E* (:func:`matched_level` over the
    kept runs)."""
    df = tidy(runs, threshold)
    kept = df[df["category"] == "kept"]
    probes = probe_frame(runs, threshold)
    probes = probes[probes["id"].isin(kept["id"])]
    level = matched_level(probes)
    at = at_matched_loss(probes, level).rename(columns={q: f"{q}_at_level" for q in MATCHED})
    out = kept.merge(at, on="id", how="left").merge(accuracy_at_loss(runs[runs["id"].isin(kept["id"])], level),
                                                     on="id", how="left")
    out["log10_r_ig_at_level"] = np.log10(out["r_ig_at_level"])
    return out, level


def _pair(frame: pd.DataFrame, arm: str, reference: str) -> pd.DataFrame:
    """The runs of ``arm`` and ``reference`` with ``x`` = 1 for the arm, 0 for the reference,
    restricted to seeds that have both (paired by seed)."""
    both = frame[frame["arm"].isin([arm, reference])]
    seeds = both.groupby("seed")["arm"].nunique()
    both = both[both["seed"].isin(seeds[seeds == 2].index)]
    return both.assign(x=(both["arm"] == arm).astype(float))


#: Equivalence margins (our choice, those of the EGR chapter): test accuracy within 0.5 % of the
#: test set, R_IG within a factor 2 (0.3 decades).
ACC_MARGIN, R_IG_MARGIN = egr_mlp.ACC_MARGIN, egr_mlp.R_IG_MARGIN


def _paired_differences(frame: pd.DataFrame, arm: str, reference: str, column: str, scale: float = 1.0) -> list[float]:
    return common.paired_differences(_pair(frame, arm, reference), "arm", reference, arm, column, scale)


def accuracy_differences(kept: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per arm and seed, the paired test-accuracy difference arm − ``reference`` in test images
    (``d``), over the kept runs ``kept`` (with ``arm``, ``seed``, ``test_acc``, ``n_test_images``).
    Against ``SGD h, 2× steps`` only the arms with at most two gradients a step (equal budgets)."""
    images = float(kept["n_test_images"].iloc[0]) if len(kept) else float(mnist_mlp.FULL_TEST)
    rows = []
    for arm in arm_order(kept):
        per_step = kept.loc[kept["arm"] == arm, "gradients_per_step"].max()
        if arm == reference or (reference == TWICE and (arm in (BASELINE, "SGD h+4μ") or per_step > 2)):
            continue
        pair = _pair(kept, arm, reference).pivot_table(index="seed", columns="arm", values="test_acc")
        if arm in pair and reference in pair:
            rows += [dict(arm=arm, seed=seed, d=images * d) for seed, d in (pair[arm] - pair[reference]).dropna().items()]
    return pd.DataFrame(rows, columns=["arm", "seed", "d"])


def findings(runs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The "What we found" table. For every arm against ``SGD h`` (equal steps): test accuracy
    rises at the selected checkpoint and at the matched training loss E* (paired effects in test
    images), R_IG, λ_max and tr H at E* fall. For every arm with at most two gradients a step against ``SGD h, 2× steps`` (equal
    gradient evaluations): test accuracy rises. Then the equivalences the first-order maps
    predict: EGR (FD) ≈ EGR (HVP), SAM-u ρ=2μ ≈ EGR (HVP), EGR (HVP) ≈ SGD h+4μ (test accuracy
    within :data:`ACC_MARGIN` of the test set, R_IG at E* within :data:`R_IG_MARGIN` decades).
    The 2× arm has no rows at E*: until SGD h's last step it is the same run (same seed, same data
    order), so it passes E* at the same point. Each trend row is a two-level within-seed test (x = 0 for the reference, 1 for the arm):
    with 5 seeds, p = 1/32 when every seed moves the predicted way."""
    kept, level = matched(runs, threshold)
    images = mnist_mlp.test_images_scale(kept)
    order = arm_order(kept)
    rows = []
    for arm in order:
        if arm == BASELINE:
            continue
        pair = _pair(kept, arm, BASELINE)
        rows.append(stats.finding(f"{arm} raises test accuracy over SGD h (equal steps)", pair, "x",
                                  "test_acc", +1, "ρ(arm, test acc)", effect=images))
        if arm == TWICE:  # its first half IS the SGD h run (same seed, same data order): same path at E*
            continue
        rows.append(stats.finding(f"{arm} raises test accuracy at E* (vs SGD h)", pair, "x",
                                  "test_acc_at_level", +1, f"ρ(arm, test acc at E = {level:.3g})", effect=images))
        for col, name in (("log10_r_ig_at_level", "R_IG"), ("lambda_max_at_level", "λ_max"),
                          ("hessian_trace_at_level", "tr H")):
            rows.append(stats.finding(f"{arm} lowers {name} at E* (vs SGD h)", pair, "x", col, -1,
                                      f"ρ(arm, {name} at E = {level:.3g})",
                                      effect=(1.0, "decades" if name == "R_IG" else name)))
    for arm in order:
        budget = kept.loc[kept["arm"] == arm, "gradients_per_step"]
        if arm in (BASELINE, TWICE, "SGD h+4μ") or budget.empty or budget.max() > 2:
            continue
        rows.append(stats.finding(f"{arm} raises test accuracy over SGD h, 2× steps (equal gradients)",
                                  _pair(kept, arm, TWICE), "x", "test_acc", +1, "ρ(arm, test acc)",
                                  effect=images))
    for arm, reference in (("EGR (FD)", "EGR (HVP)"), ("SAM-u ρ=2μ", "EGR (HVP)"), ("EGR (HVP)", "SGD h+4μ")):
        if arm not in order or reference not in order:
            continue
        rows.append(stats.equivalence_finding(
            f"{arm} ≈ {reference}: same test accuracy",
            _paired_differences(kept, arm, reference, "test_acc", images[0]), ACC_MARGIN * images[0],
            images[1], f"paired Δ test acc ({arm} − {reference})"))
        rows.append(stats.equivalence_finding(
            f"{arm} ≈ {reference}: same R_IG at E*",
            _paired_differences(kept, arm, reference, "log10_r_ig_at_level"), R_IG_MARGIN,
            "decades", f"paired Δ log10 R_IG at E* ({arm} − {reference})"))
    return stats.finish(rows, threshold)


def arms_table(runs: pd.DataFrame, threshold: float, costs: pd.DataFrame | None = None,
               table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per arm: runs and kept runs, gradients per step and the budget in gradient
    evaluations (relative to SGD h), the measured wall time per step relative to plain SGD
    (``costs``: :func:`cost_table`), mean test accuracy, the paired Δ test images against SGD h
    (mean and 95 % interval), R_IG, λ_max and tr H at the matched training loss E*, mean first-order
    μ at the checkpoint, and the verdicts of ``table`` (default :func:`findings` of ``runs``; e.g.
    :func:`mnist_mlp.with_seed_sets` of two seed sets) on accuracy (equal steps, equal gradients,
    at E*) and on R_IG at E*."""
    df = tidy(runs, threshold)
    kept, level = matched(runs, threshold)
    table = findings(runs, threshold) if table is None else table
    images = mnist_mlp.test_images_scale(kept)
    ratio = {} if costs is None else dict(zip(costs["arm"], costs["ratio_to_sgd"]))

    def verdict(claim: str) -> str:
        hit = table.loc[table["claim"] == claim, "verdict"]
        return hit.iloc[0] if len(hit) else "–"

    rows = []
    for arm in arm_order(df):
        group, good = df[df["arm"] == arm], kept[kept["arm"] == arm]
        d = _paired_differences(kept, arm, BASELINE, "test_acc", images[0]) if arm != BASELINE else []
        mean, lo, hi = stats.t_interval(d)
        rows.append({
            "arm": arm, "runs": len(group), "kept": len(good),
            "gradients / step": int(group["gradients_per_step"].iloc[0]),
            "gradient budget": float(group["gradient_budget"].iloc[0]),
            "wall time / step (× SGD)": ratio.get(arm, np.nan),
            "test acc": good["test_acc"].mean(),
            "Δ test images vs SGD h": mean, "95 % CI": (f"[{lo:+.0f}, {hi:+.0f}]" if np.isfinite(lo) else "–"),
            "test acc at E*": good["test_acc_at_level"].mean(),
            "acc verdict at E*": verdict(f"{arm} raises test accuracy at E* (vs SGD h)"),
            "R_IG at E*": good["r_ig_at_level"].mean(), "λ_max at E*": good["lambda_max_at_level"].mean(),
            "tr H at E*": good["hessian_trace_at_level"].mean(),
            "first-order μ": good["mu_first_order"].mean(),
            "acc verdict (equal steps)": verdict(f"{arm} raises test accuracy over SGD h (equal steps)"),
            "acc verdict (equal gradients)": verdict(
                f"{arm} raises test accuracy over SGD h, 2× steps (equal gradients)"),
            "R_IG verdict": verdict(f"{arm} lowers R_IG at E* (vs SGD h)"),
        })
    return pd.DataFrame(rows)


def cifar_findings(runs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The CIFAR slice's "What we found" rows: for every arm against ``SGD h`` (equal steps),
    test accuracy rises and R_IG falls at the selected checkpoints (within-seed tests, effects
    in test images and decades). Every row is a claim about minima: "not testable at this
    budget" when the runs end far from one (:func:`igrlib.maths.stats.far_from_minimum`)."""
    df = tidy(runs, threshold)
    kept = df[df["category"] == "kept"]
    images = mnist_mlp.test_images_scale(kept)
    rows = []
    for arm in arm_order(kept):
        if arm == BASELINE:
            continue
        pair = _pair(kept, arm, BASELINE)
        rows.append(stats.finding(f"{arm} raises test accuracy over SGD h (equal steps)", pair, "x", "test_acc",
                                  +1, "ρ(arm, test acc)", effect=images, about_minima=True))
        rows.append(stats.finding(f"{arm} lowers R_IG over SGD h (equal steps)", pair, "x", "log10_r_ig", -1,
                                  "ρ(arm, R_IG)", effect=(1.0, "decades"), about_minima=True))
    return stats.finish(rows, threshold)


def cifar_table(runs: pd.DataFrame, threshold: float, costs: pd.DataFrame | None = None,
                table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per arm of the CIFAR slice, at the selected checkpoints: runs and kept runs,
    gradients per step, the measured wall time per step relative to plain SGD (``costs``:
    :func:`cost_table` of the ResNet timing), mean training loss (nats, whole training subset),
    training and test accuracy, the per-seed paired Δ test images against SGD h (too few seeds
    for an interval), mean R_IG and λ_max, and the verdict on test accuracy of ``table``
    (default :func:`cifar_findings`)."""
    df = tidy(runs, threshold)
    kept = df[df["category"] == "kept"]
    table = cifar_findings(runs, threshold) if table is None else table
    images = mnist_mlp.test_images_scale(kept)[0]
    ratio = {} if costs is None else dict(zip(costs["arm"], costs["ratio_to_sgd"]))
    verdicts = dict(zip(table["claim"], table["verdict"]))
    rows = []
    for arm in arm_order(df):
        group, good = df[df["arm"] == arm], kept[kept["arm"] == arm]
        d = _paired_differences(kept, arm, BASELINE, "test_acc", images) if arm != BASELINE else []
        rows.append({
            "arm": arm, "runs": len(group), "kept": len(good),
            "gradients / step": int(group["gradients_per_step"].iloc[0]),
            "wall time / step (× SGD)": ratio.get(arm, np.nan),
            "train loss": good["train_loss_full"].mean(), "train acc": good["train_acc"].mean(),
            "test acc": good["test_acc"].mean(),
            "Δ test images vs SGD h (per seed)": ", ".join(f"{v:+.0f}" for v in d) or "–",
            "R_IG": good["r_ig"].mean(), "λ_max": good["lambda_max"].mean(),
            "acc verdict (equal steps)": verdicts.get(f"{arm} raises test accuracy over SGD h (equal steps)", "–"),
        })
    return pd.DataFrame(rows)


def describe(configs: Sequence[Mapping[str, Any]]) -> str:
    """What a grid runs, with everything that shapes its numbers (for the chapter's protocol
    paragraph and captions, so they cannot drift from the grid)."""
    trains = [c["train"] for c in configs]
    frame = pd.DataFrame([{**t, **t["hparams"]} for t in trains])
    frame["penalty_method"] = frame.get("penalty_method", pd.Series(dtype=object))
    h = float(frame.loc[frame["method"] != "sgd", "learning_rate"].min())
    epochs = int(frame.loc[frame["method"] != "sgd", "epochs"].min())
    frame["arm"] = [arm_of(row, h, epochs) for _, row in frame.iterrows()]
    seeds = sorted(int(s) for s in frame["seed"].unique())
    t0 = next(t for t in trains if t["method"] != "sgd")
    arms_text = "; ".join(
        f"{arm} ({row['method']}, h = {row['learning_rate']:g}"
        + "".join(f", {k} = {v:g}" if isinstance(v, float) else f", {k} = {v}"
                  for k, v in trains[i]["hparams"].items() if k != "fd_radius" or row["penalty_method"] == "finite_difference")
        + ")"
        for arm, (i, row) in {r["arm"]: (i, r) for i, r in frame.iterrows()}.items())
    twice = f" ({2 * epochs} for the 2× arm)" if TWICE in set(frame["arm"]) else ""
    if t0["model"] == "resnet18":
        network, full = (f"ResNet-18 at width multiplier {', '.join(f'{w:g}' for w in sorted(frame['width_multiplier'].unique()))}, "
                         f"batch {t0['batch_size']}"), (50_000, 10_000)
    else:
        network, full = f"width {sorted(int(w) for w in frame['width'].unique())}", (60_000, mnist_mlp.FULL_TEST)
    return (f"{len(configs)} runs: {arms_text}; {epochs} epochs{twice}, no early "
            f"stopping; {network}; " + mnist_mlp.protocol(t0, configs[0]["measure"], seeds, *full))


# ---------------------------------------------------------------------------------------------
# Wall time of one step of each arm's update rule


def cost_grid(profile: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """One step-cost config per width of ``profile`` (its depth): the arms' update rules
    (:func:`arms`, SGD once), ``cost_batch`` training images, ``cost_repeats`` interleaved timing
    rounds."""
    spec, axes = _spec(profile, {k: v for k, v in overrides.items() if k != "seed"})
    depth = spec["base"].get("depth", BASE["depth"])
    return [dict(width=w, depth=depth, batch=spec["cost_batch"], repeats=spec["cost_repeats"],
                 rules=_timed_rules(spec)) for w in axes["width"]]


def _timed_rules(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The update rules of ``spec``'s arms by label, SGD once (every SGD arm takes the same step)."""
    rules: dict[str, dict[str, Any]] = {}
    for label, arm in arms(spec):
        rules.setdefault("SGD" if arm["method"] == "sgd" else label, {k: v for k, v in arm.items() if k != "epochs"})
    return rules


def cifar_cost_grid(profile: str | None = None) -> list[dict[str, Any]]:
    """The step-cost config of the CIFAR slice of ``profile`` for :data:`CIFAR_COST` (none where
    it runs no slice): the training config of each update rule of its arms (the first seed; SGD
    once) and ``cost_repeats`` timing rounds."""
    spec = cifar_spec(profile)
    if spec is None:
        return []
    rules: dict[str, dict[str, Any]] = {}
    for config in cifar_grid(profile, seed=spec["seed"][:1]):
        train = config["train"]
        label = "SGD" if train["method"] == "sgd" else arm_of({**train, **train["hparams"]}, spec["h"], train["epochs"])
        rules.setdefault(label, train)
    return [dict(rules=rules, repeats=spec["cost_repeats"])]


def _time_training_steps(config: Mapping[str, Any]) -> dict[str, float]:
    """Median seconds per step of each rule's own training program
    (:func:`igrlib.training.program.program`: the compiled step its runs take, already compiled
    when they ran in this process), over one evaluation interval of steps per round, rules
    interleaved in each round so that a change of machine load hits them alike. For the ResNet
    on CPU a step is a Python loop's call of one jitted step, as in training."""
    steps = {}
    for label, train in config["rules"].items():
        cfg = TrainConfig.from_dict(train)
        images = common.load_data(cfg)
        x, y = jnp.asarray(images.x_train), jnp.asarray(images.y_train)
        prog = program(cfg.program_key(), len(x), batched=False)
        hps = {k: jnp.asarray([v], jnp.float32) for k, v in cfg.vmapped().items()}
        carry = prog.init(jnp.asarray([cfg.seed], jnp.uint32), hps, x[:2])
        carry = jax.block_until_ready(prog.advance(carry, jnp.ones(1, bool), 0, x, y))  # compiles, not timed
        steps[label] = [prog, carry, (x, y), cfg.eval_every * prog.steps_per_epoch]

    def advance(round_: int, entry: list) -> Any:
        prog, carry, (x, y), _ = entry
        # advance donates its carry: the next round continues from the returned one
        entry[1] = prog.advance(carry, jnp.ones(1, bool), round_ + 1, x, y)
        return entry[1]

    calls = {label: lambda round_, entry=entry: advance(round_, entry) for label, entry in steps.items()}
    times = interleaved_times(calls, config["repeats"])
    return {label: float(np.median(ts)) / steps[label][3] for label, ts in times.items()}


#: Times one training step of each update rule of the CIFAR slice on the ResNet-18.
CIFAR_COST = egr_mlp.StepCostExperiment(NAME + "_cifar_cost", _time_training_steps)


def time_rules(config: Mapping[str, Any]) -> dict[str, float]:
    """Median seconds of one jitted training step (gradient, update rule, parameter update) of
    each rule of ``config`` on ``batch`` MNIST training images, rules interleaved in each round
    so that a change of machine load hits them alike."""
    mnist = data.load("mnist", n_train=config["batch"], n_test=10)
    x, y = jnp.asarray(mnist.x_train), jnp.asarray(mnist.y_train)
    model = models.mlp(config["width"], depth=config["depth"])
    params, state = model.init(jax.random.key(0), x[:2])
    loss = loss_fn(model)
    steps, opts = {}, {}
    for label, arm in config["rules"].items():
        hp = {k: v for k, v in arm.items() if k not in ("method", "learning_rate")}
        tx = methods.get(arm["method"]).transform(arm["learning_rate"], **hp)

        def step(p, o, tx=tx):
            args = methods.update_args(lambda q, xb, yb: loss(q, state, xb, yb)[0], (x, y))
            value, grads = jax.value_and_grad(args["value_fn"])(p)
            updates, o = tx.update(grads, o, p, **args)
            return optax.apply_updates(p, updates), o, value

        steps[label], opts[label] = jax.jit(step), tx.init(params)
        jax.block_until_ready(steps[label](params, opts[label]))  # compile, not timed
    calls = {label: lambda _, fn=fn, label=label: fn(params, opts[label]) for label, fn in steps.items()}
    return {label: float(np.median(ts)) for label, ts in interleaved_times(calls, config["repeats"]).items()}


#: Times one training step of every arm's update rule (stored like a run, read back on re-execution).
COST = egr_mlp.StepCostExperiment(NAME + "_cost", time_rules)


def cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """One row per (width, arm): milliseconds per step and the ratio to the SGD step; the SGD
    timing stands for every SGD arm (width and batch empty for :data:`CIFAR_COST`'s timings)."""
    rows = []
    for _, run in costs.iterrows():
        sgd = run["seconds_SGD"]
        labels = [c[len("seconds_"):] for c in run.index if c.startswith("seconds_") and pd.notna(run[c])]
        for label in labels:
            for arm in ([BASELINE, TWICE, "SGD h+4μ"] if label == "SGD" else [label]):
                # the ResNet timing runs the training programs: its batch and width are theirs
                rows.append(dict(width=run.get("width"), batch=run.get("batch"), arm=arm,
                                 ms_per_step=1e3 * run[f"seconds_{label}"],
                                 ratio_to_sgd=run[f"seconds_{label}"] / sgd))
    return pd.DataFrame(rows)
