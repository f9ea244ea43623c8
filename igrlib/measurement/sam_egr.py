"""SAM against EGR through the library's own update rules: the one-step gap at the mapped μ.

:mod:`igrlib.maths.sam_map` derives that SAM at radius ρ takes, to first order in ρ, the step of
EGR at ``μ = ρ/(2‖∇E‖)`` (normalised ascent) or ``μ = ρ/2`` (unnormalised). Here both steps are taken
by the optax transforms of :mod:`igrlib.training.methods` (``"sam"`` with its ``ascent`` option,
``"egr"`` with the exact Hessian-vector product), on a loss ``E`` of a flat parameter vector, so a
study checks the update rules the training program actually runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from igrlib.config import ConfigError, check_choice, check_positive
from igrlib.maths import bea, sam_map
from igrlib.training import methods


def library_step(E: bea.Loss, theta: jax.Array, method: str, learning_rate: float,
                 **hyperparams) -> jax.Array:
    """The displacement ``θ₁ − θ`` of one update of ``methods.get(method)`` from θ on the full loss
    ``E`` (``value_fn = E``, ``grad_fn = ∇E``, as the training program passes them)."""
    tx = methods.get(method).transform(learning_rate, **hyperparams)
    grad = jax.grad(E)
    updates, _ = tx.update(grad(theta), tx.init(theta), theta, value_fn=E, grad_fn=grad)
    return updates


def one_step_gap(E: bea.Loss, theta: jax.Array, h: float, rho: float, ascent: str,
                 mu: float | None = None) -> float:
    """``‖Δθ_SAM(ρ) − Δθ_EGR(μ)‖`` after one step at rate ``h`` from θ (units of θ), with ``μ`` the
    first-order map :func:`igrlib.maths.sam_map.mapped_mu` unless given."""
    check_choice(ascent, sam_map.ASCENTS, "ascent")
    mu = sam_map.mapped_mu(E, theta, rho, ascent) if mu is None else mu
    sam = library_step(E, theta, "sam", h, rho=rho, ascent=ascent)
    egr = library_step(E, theta, "egr", h, mu=mu)
    return float(jnp.linalg.norm(sam - egr))


def gap_study(E: bea.Loss, theta, h: float, rhos) -> pd.DataFrame:
    """The one-step gap for each ascent and each ρ in ``rhos`` (per ascent: a mapping
    ``{"normalized": [...], "unnormalized": [...]}``, since the two ρ have different units).

    Columns ``ascent``, ``rho``, ``mu`` (the mapped μ), ``gap`` (units of θ), ``step``
    (``‖Δθ_SAM‖``), ``predicted`` (:func:`igrlib.maths.sam_map.second_order_gap`) and
    ``expected = 2``, the order in ρ of the gap. Float64 only.
    """
    theta, _ = bea.check_study(theta, [h])
    check_positive(h, "learning rate h")
    if set(rhos) - set(sam_map.ASCENTS):
        raise ConfigError(f"rhos must be keyed by ascent in {sam_map.ASCENTS}, got {sorted(rhos)}")
    rows = []
    for ascent, values in rhos.items():
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or values.size < 2 or np.any(~(values > 0)) or not np.all(np.isfinite(values)):
            raise ConfigError(f"rhos[{ascent!r}] must be >= 2 positive finite radii, got {values!r}")
        for rho in values:
            mu = sam_map.mapped_mu(E, theta, float(rho), ascent)
            rows.append({
                "ascent": ascent, "rho": rho, "mu": mu,
                "gap": one_step_gap(E, theta, h, float(rho), ascent, mu),
                "step": float(jnp.linalg.norm(library_step(E, theta, "sam", h, rho=float(rho),
                                                           ascent=ascent))),
                "predicted": sam_map.second_order_gap(E, theta, h, float(rho), ascent),
                "expected": 2,
            })
    return pd.DataFrame(rows)


def gnp_gap_study(E: bea.Loss, theta, h: float, alpha: float, rs) -> pd.DataFrame:
    """The one-step gap between Zhao et al.'s gradient-norm penalty (library rule ``"gnp"``) at
    mixing ``α`` and finite-difference step ``r``, and EGR at ``μ = αr/(2‖∇E‖)``, for each r in
    ``rs``: the penalty's update ``(1 − α)g + α∇E(θ + r·g/‖g‖) = g + αr·Hg/‖g‖ + (αr²/2)∇³E[d, d]
    + O(r³)``, so to first order it is normalised SAM at ``ρ = αr`` and the gap is
    ``h·(αr²/2)·‖∇³E[d, d]‖`` (``predicted``), order 2 in r. Columns as :func:`gap_study`, with
    ``ascent = "gnp"`` and ``rho = r``. Float64 only."""
    theta, _ = bea.check_study(theta, [h])
    check_positive(h, "learning rate h")
    check_positive(alpha, "alpha")
    values = np.asarray(rs, dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or np.any(~(values > 0)) or not np.all(np.isfinite(values)):
        raise ConfigError(f"rs must be >= 2 positive finite steps, got {values!r}")
    rows = []
    for r in values:
        mu = sam_map.mapped_mu(E, theta, float(alpha * r), "normalized")
        gnp = library_step(E, theta, "gnp", h, alpha=float(alpha), r=float(r))
        egr = library_step(E, theta, "egr", h, mu=mu)
        rows.append({
            "ascent": "gnp", "rho": r, "mu": mu, "gap": float(jnp.linalg.norm(gnp - egr)),
            "step": float(jnp.linalg.norm(gnp)),
            # SAM's leading term at radius r, scaled by α (the penalty mixes α of the look-ahead)
            "predicted": alpha * sam_map.second_order_gap(E, theta, h, float(r), "normalized"),
            "expected": 2,
        })
    return pd.DataFrame(rows)
