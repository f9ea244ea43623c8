"""Gradient descent against gradient flow and its modified flows, step by step, into the edge of
stability.

From one start θ0, GD at rate ``h`` runs ``n`` steps; gradient flow and the first- and second-order
modified flows of :mod:`igrlib.maths.bea` (order 0, 1, 2: the flows of ``−∇E``,
``−∇(E + (h/4)‖∇E‖²)`` and that plus ``h²f₂``) are integrated from the same θ0 to the same times
``t = s·h``. At each checkpoint ``s`` the table holds, for each flow,

* ``distance = ‖θ_s − φ_{sh}(θ0)‖`` (units of θ): how far GD has drifted from the flow;
* ``loss_gap = E(θ_s) − E(φ_{sh}(θ0))`` (units of E): positive when GD is behind the flow;

and, for GD itself, ``h_lambda_max = h·λ_max(H(θ_s))`` (:func:`igrlib.maths.bea.sharpness`), the
quantity whose value 2 is GD's linear stability edge.

Backward error analysis is a series in ``h·λ`` (the one-step error of the order-``p`` flow on
``E = λθ²/2`` is a function of ``hλ`` alone, :func:`igrlib.maths.bea.quadratic_relative_error`), so
the modified flows are expected to beat gradient flow while ``h·λ_max`` stays well below 1 and to
lose that advantage as it approaches 2 (Cohen et al. 2021's edge of stability, where GD
oscillates along the top eigenvector and no flow follows it). :func:`crossings` reads both events
off a table: the first checkpoint where a modified flow stops beating gradient flow, and the first
where ``h·λ_max`` exceeds a threshold (entry into the edge of stability).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from igrlib.config import ConfigError, check_choice, check_int, check_positive
from igrlib.maths import bea

#: Names of the flows in a tracking table, by order.
FLOWS: dict[int, str] = {0: "gradient flow", 1: "first order", 2: "second order"}


@partial(jax.jit, static_argnames=("E",))
def _flows(E: bea.Loss, theta0: jax.Array, h: jax.Array, ts: jax.Array) -> jax.Array:
    """``φ^{(p)}_t(θ0)`` at the times ``ts`` for each order ``p`` of :data:`FLOWS`, shape
    ``(orders, len(ts), m)`` (NaN where a solve fails, as :func:`igrlib.maths.bea.flow`)."""
    return jnp.stack([bea.flow(bea.modified_field(E, h, order), theta0, ts[-1], ts=ts)
                      for order in FLOWS])


@partial(jax.jit, static_argnames=("E",))
def _losses(E: bea.Loss, thetas: jax.Array) -> jax.Array:
    return jax.vmap(E)(thetas)


def track(E: bea.Loss, theta0, h: float, n: int, every: int = 1) -> pd.DataFrame:
    """GD against the flows of orders 0, 1, 2 at the steps ``0, every, 2·every, …, n``.

    A tidy table, one row per checkpoint and flow: ``step``, ``t`` (``= step·h``), ``order``,
    ``flow`` (its name), ``distance``, ``loss_gap``, ``loss_gd`` (``E(θ_s)``) and ``h_lambda_max``
    (of GD's iterate; the same on the three rows of a checkpoint). Float64 only; one compile per
    loss ``E`` and number of checkpoints.
    """
    theta0, _ = bea.check_study(theta0, [h])
    check_positive(h, "learning rate h")
    check_int(n, "n")
    check_int(every, "every", 1, n)
    if n % every:
        raise ConfigError(f"n = {n} must be a multiple of every = {every}")
    steps = np.arange(0, n + 1, every)
    ts = steps * h
    gd = np.asarray(bea.gd_trajectory(E, theta0, h, n))[steps]
    flows = np.asarray(_flows(E, theta0, jnp.asarray(h, dtype=theta0.dtype), jnp.asarray(ts)))
    loss_gd = np.asarray(_losses(E, jnp.asarray(gd)))
    sharp = np.array([h * bea.sharpness(E, jnp.asarray(theta)) for theta in gd])
    rows = []
    for order, path in zip(FLOWS, flows):
        loss_flow = np.asarray(_losses(E, jnp.asarray(path)))
        distance = np.linalg.norm(gd - path, axis=1)
        rows.append(pd.DataFrame({
            "step": steps, "t": ts, "order": order, "flow": FLOWS[order], "distance": distance,
            "loss_gap": loss_gd - loss_flow, "loss_gd": loss_gd, "h_lambda_max": sharp}))
    return pd.concat(rows, ignore_index=True)


class Crossings(NamedTuple):
    """First events of a :func:`track` table, as steps (``None``: not within the table).

    ``modified_loses``: the first checkpoint after the start where the order-``order`` flow is not
    closer to GD than ``(1 − margin)`` times gradient flow's distance (or its solve failed);
    ``eos_entry``: the first checkpoint where ``h·λ_max > threshold``.
    """

    modified_loses: int | None
    eos_entry: int | None


def crossings(table: pd.DataFrame, order: int = 1, threshold: float = 2.0,
              margin: float = 0.0) -> Crossings:
    """The two events of :class:`Crossings` in a :func:`track` table.

    Why a ``margin``: on ``E = λθ²/2`` the one-step error of the first-order flow stays below
    gradient flow's for every ``hλ < 2``: their ratio is ``≈ 2hλ/3`` for small ``hλ`` and rises
    to 0.61 at ``hλ = 1`` and 0.90 at ``hλ = 2`` (:func:`igrlib.maths.bea.quadratic_relative_error`),
    so near the edge the modified flow keeps a shrinking lead rather than losing outright;
    ``margin = 0.1`` asks when it stops being at least 10 % closer than gradient flow.
    """
    check_choice(order, (1, 2), "order of the modified flow")
    check_positive(threshold, "threshold on h·λ_max")
    if not 0 <= margin < 1:
        raise ConfigError(f"margin must be in [0, 1), got {margin!r}")
    missing = {"step", "order", "distance", "h_lambda_max"} - set(table.columns)
    if missing:
        raise ConfigError(f"not a tracking table: missing columns {sorted(missing)}")
    by_order = table.pivot(index="step", columns="order", values="distance").sort_index()
    later = by_order.iloc[1:]
    loses = later.index[~(later[order] < (1 - margin) * later[0])]  # NaN (a failed solve) counts as losing
    sharp = table.drop_duplicates("step").set_index("step")["h_lambda_max"].sort_index()
    entry = sharp.index[sharp > threshold]
    return Crossings(int(loses[0]) if len(loses) else None, int(entry[0]) if len(entry) else None)
