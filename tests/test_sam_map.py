"""SAM at radius ρ against EGR at the mapped μ, through the library's optax transforms, in float64.

Problem: the two-parameter model (x = 1, y = 0.6) at θ = (2.8, 3.5), where ‖∇E‖ ≈ 41.2, one step
at h = 0.01. Normalised ρ ∈ [10⁻⁴, 10⁻²] (parameter units), unnormalised ρ ∈ [10⁻⁶, 10⁻⁴]
(ρ‖∇E‖ is then the same ascent length range, ≲ 4·10⁻³).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igrlib.config import ConfigError
from igrlib.experiments.two_param import loss_fn
from igrlib.maths import bea, sam_map
from igrlib.maths.order_fits import fitted_slopes
from igrlib.measurement import sam_egr

E = loss_fn(1.0, 0.6)
THETA = (2.8, 3.5)
H = 0.01
RHOS = {"normalized": np.geomspace(1e-4, 1e-2, 5), "unnormalized": np.geomspace(1e-6, 1e-4, 5)}


def test_sam_matches_egr_at_the_mapped_mu_to_second_order_in_rho():
    with jax.enable_x64(True):
        study = sam_egr.gap_study(E, jnp.array(THETA), H, RHOS)
        grad_norm = float(jnp.linalg.norm(jax.grad(E)(jnp.array(THETA))))
    fits = fitted_slopes(study[["ascent", "rho", "gap", "expected"]].rename(columns={"rho": "h", "gap": "error"}))
    for slope in fits["slope"]:
        assert abs(slope - 2) < 0.01
    # the leading term h(ρ²/2)‖∇³E[d, d]‖ predicts the gap, to O(ρ) relative
    for ascent, rows in study.groupby("ascent"):
        rel = np.abs(rows["gap"] / rows["predicted"] - 1).to_numpy()
        assert rel[0] < 1e-4 and np.all(np.diff(rel) > 0)
    normalized = study[study.ascent == "normalized"]
    np.testing.assert_allclose(normalized["mu"], normalized["rho"] / (2 * grad_norm), rtol=1e-14)
    np.testing.assert_allclose(study[study.ascent == "unnormalized"]["mu"],
                               RHOS["unnormalized"] / 2, rtol=1e-14)
    # the gap is small against the step itself: ≤ 2·10⁻⁵ of ‖Δθ‖ at the largest ρ
    assert np.all(study["gap"] / study["step"] < 2e-5)


def test_the_gradient_norm_penalty_matches_egr_at_mu_alpha_r_over_twice_the_gradient_norm():
    """Zhao et al.'s rule at (α, r) against EGR at μ = αr/(2‖∇E‖): gap of order 2 in r, with the
    leading term α·h(r²/2)‖∇³E[d, d]‖."""
    rs = np.geomspace(1e-4, 1e-2, 5)
    with jax.enable_x64(True):
        study = sam_egr.gnp_gap_study(E, jnp.array(THETA), H, 0.8, rs)
        grad_norm = float(jnp.linalg.norm(jax.grad(E)(jnp.array(THETA))))
    assert abs(bea.fit_order(rs, study["gap"].to_numpy()) - 2) < 0.01
    rel = np.abs(study["gap"] / study["predicted"] - 1).to_numpy()
    assert rel[0] < 1e-4 and np.all(np.diff(rel) > 0)
    np.testing.assert_allclose(study["mu"], 0.8 * rs / (2 * grad_norm), rtol=1e-14)
    with jax.enable_x64(True), pytest.raises(ConfigError, match="steps"):
        sam_egr.gnp_gap_study(E, jnp.array(THETA), H, 0.8, [0.1])


def test_an_unmapped_mu_leaves_a_first_order_gap():
    """Normalised SAM against EGR at the unnormalised map μ = ρ/2: the gap is O(ρ), not O(ρ²)."""
    rhos = RHOS["normalized"]
    with jax.enable_x64(True):
        theta = jnp.array(THETA)
        gaps = [sam_egr.one_step_gap(E, theta, H, float(r), "normalized", mu=float(r) / 2)
                for r in rhos]
        mapped = [sam_egr.one_step_gap(E, theta, H, float(r), "normalized") for r in rhos]
    assert abs(bea.fit_order(rhos, gaps) - 1) < 0.01
    assert np.all(np.asarray(mapped) < 1e-3 * np.asarray(gaps))


def test_maps_invert_and_refuse_bad_input():
    assert sam_map.sam_rho_for_egr(sam_map.egr_mu_for_sam(0.05, "normalized", 3.0), "normalized",
                                   3.0) == pytest.approx(0.05, rel=1e-15)
    assert sam_map.egr_mu_for_sam(0.05, "unnormalized") == 0.025
    assert sam_map.sam_rho_for_egr(0.025, "unnormalized") == 0.05
    with pytest.raises(ConfigError, match="needs grad_norm"):
        sam_map.egr_mu_for_sam(0.05, "normalized")
    with pytest.raises(ConfigError, match="stationary"):
        sam_map.egr_mu_for_sam(0.05, "normalized", 0.0)
    with pytest.raises(ConfigError, match="omit"):
        sam_map.egr_mu_for_sam(0.05, "unnormalized", 3.0)
    with pytest.raises(ConfigError, match="ascent"):
        sam_map.egr_mu_for_sam(0.05, "sideways")
    with pytest.raises(ConfigError, match="rho"):
        sam_map.egr_mu_for_sam(-0.05, "unnormalized")
    with jax.enable_x64(True):
        with pytest.raises(ConfigError, match="keyed"):
            sam_egr.gap_study(E, jnp.array(THETA), H, {"both": [0.1, 0.2]})
        with pytest.raises(ConfigError, match="radii"):
            sam_egr.gap_study(E, jnp.array(THETA), H, {"normalized": [0.1]})
    with pytest.raises(ConfigError, match="float64"):
        sam_egr.gap_study(E, jnp.array(THETA, dtype=jnp.float32), H, RHOS)
