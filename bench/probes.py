"""Section 8: what the trajectory probes cost, at the ``cpu`` profile's default probe settings.

One vmapped group of MNIST runs (:func:`igrlib.training.program.train_group`: training, periodic
evaluation on the training, validation and test splits, monitors, checkpoint selection) is timed
interleaved in two forms that differ only in ``probe_every``:

* ``probes``: the probe settings of the ``cpu`` profile (:data:`DEFAULTS`, read from
  :data:`igrlib.experiments.mnist_mlp.PROFILES`): every ``probe_every``-th evaluation, each
  run's ``r_ig``, ``lambda_max``, ``trace`` and ``param_norm`` (:mod:`igrlib.training.probes`);
* ``no_probes``: ``probe_every = 0``.

Reported: seconds per group of each, the overhead ratio ``t_probes / t_no_probes`` (median of
the per-repeat ratios; target ≤ 1.25, i.e. probes at most 25 % of the training time), and each
probe's share: the median seconds of one call of :func:`igrlib.training.probes.measure` with that
probe alone on one trained run, times the number of probe events of the group (runs × probe
points), over ``t_no_probes``: an estimate from separate timings (on a loaded machine their sum
can differ from ``ratio − 1`` by tens of percent), which says which default to tune if the
target is missed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bench import timing
from igrlib.experiments import mnist_mlp
from igrlib.io import data as data_mod
from igrlib.training import probes as probes_mod
from igrlib.training.config import TrainConfig
from igrlib.training.program import RunResult, train_group

#: The probe settings of the ``cpu`` profile's runs, whose cost this section measures.
DEFAULTS: dict[str, Any] = {k: v for k, v in mnist_mlp.PROFILES["cpu"]["base"].items()
                            if k.startswith("probe")}


def _configs(width: int, runs: int, probe_every: int, **train: Any) -> list[TrainConfig]:
    settings = {**DEFAULTS, **train, "probe_every": probe_every}
    return [TrainConfig(width=width, seed=s, **settings) for s in range(runs)]


def probe_seconds(result: RunResult, data: data_mod.Dataset, names: tuple[str, ...],
                  repeats: int) -> dict[str, float]:
    """Median seconds of one :func:`igrlib.training.probes.measure` call per probe, each alone,
    on ``result``'s final network (after one warm-up call that compiles)."""
    cfg = result.config
    model = cfg.build_model()
    params, state = jax.tree.map(jnp.asarray, (result.params, result.state))
    probe_data = probes_mod.ProbeData(data.x_train, data.y_train, cfg.probe_examples)
    key = jax.random.key(0)
    out = {}
    for name in names:
        def call(name: str = name) -> None:
            probes_mod.measure(model, params, state, probe_data, key, (name,),
                               cfg.probe_lanczos_iters, cfg.probe_trace_samples)

        out[name] = timing.interleaved([timing.Case(name, call)], repeats).median(name)
    return out


def run(width: int, runs: int, n_train: int, n_val: int, n_test: int, batch_size: int,
        epochs: int, eval_every: int, repeats: int, learning_rate: float = 0.1) -> dict[str, Any]:
    """Time one group of ``runs`` runs with and without the default probes; see the module
    docstring."""
    data = data_mod.load("mnist", n_train=n_train, n_val=n_val, n_test=n_test)
    train = dict(n_train=n_train, n_val=n_val, n_test=n_test, batch_size=batch_size, epochs=epochs,
                 eval_every=eval_every, learning_rate=learning_rate,
                 selection="validation" if n_val else "test")
    groups = {"probes": _configs(width, runs, DEFAULTS["probe_every"], **train),
              "no_probes": _configs(width, runs, 0, **train)}
    last: dict[str, list[RunResult]] = {}

    def case(name: str) -> timing.Case:
        def call() -> None:
            last[name] = train_group(groups[name], data, progress=False)

        return timing.Case(name, call)

    times = timing.interleaved([case("probes"), case("no_probes")], repeats)
    events = sum(len(r.history.get("probe_epoch", [])) for r in last["probes"])
    names = groups["probes"][0].probes
    seconds = probe_seconds(last["no_probes"][0], data, names, repeats)
    base = times.median("no_probes")
    ratio = times.ratio("probes", "no_probes")
    return {
        "settings": {"width": width, "depth": 5, "runs": runs, **train, "repeats": repeats,
                     "probe_defaults_of": "mnist_mlp cpu profile", **DEFAULTS,
                     "probes": list(names), "dataset": data.label},
        "cases": times.summary(),
        "probe_events": events,
        "overhead_ratio": ratio,
        "overhead_fraction": ratio - 1,
        "probe_call_s": seconds,
        "probe_share": {name: events * s / base for name, s in seconds.items()},
        "within_target": bool(ratio <= 1.25),
    }
