"""GD against gradient flow and the modified flows over time, into the edge of stability (float64).

Problem: a 2 → 4 → 1 tanh MLP (17 parameters) on 6 points with targets 3·sin(2x₁), mean squared
error, from its initialisation at h = 1.4/λ_max(θ0): the sharpness rises along GD (progressive
sharpening) and h·λ_max crosses 2 after about 20 steps; 80 steps checked every 4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from igrlib.config import ConfigError
from igrlib.maths import bea, models
from igrlib.measurement import flow_tracking

Z0, N, EVERY = 1.4, 80, 4


def _sharpening_mlp():
    net = models.mlp(4, depth=1, num_classes=1, activation="tanh")
    x = jax.random.normal(jax.random.key(1), (6, 2))
    y = 3 * jnp.sin(2 * x[:, :1])
    params, _ = net.init(jax.random.key(0), x)
    E, theta0, _ = bea.flat_loss(lambda p: 0.5 * jnp.mean((net.apply(p, {}, x, False)[0] - y) ** 2),
                                 params)
    return E, theta0


with jax.enable_x64(True):
    E, THETA0 = _sharpening_mlp()


@pytest.fixture(scope="module")
def table():
    with jax.enable_x64(True):
        h = Z0 / bea.sharpness(E, THETA0)
        return h, flow_tracking.track(E, THETA0, h, N, EVERY)


def test_table_is_consistent_with_gd_and_the_flows(table):
    h, tab = table
    assert len(tab) == 3 * (N // EVERY + 1)
    start = tab[tab.step == 0]
    assert np.all(start["distance"] == 0) and np.all(start["loss_gap"] == 0)
    np.testing.assert_allclose(start["h_lambda_max"], Z0, rtol=1e-8)
    np.testing.assert_allclose(tab["t"], tab["step"] * h, rtol=1e-15)
    with jax.enable_x64(True):
        gd = np.asarray(bea.gd_trajectory(E, THETA0, h, N))
        np.testing.assert_allclose(tab[tab.order == 0]["loss_gd"], [float(E(t)) for t in gd[::EVERY]],
                                   rtol=1e-12)
        # the order-1 column is the flow of E + (h/4)‖∇E‖², as bea.flow gives it alone
        end = np.asarray(bea.flow(bea.modified_field(E, h, 1), THETA0, N * h))
    last = tab[(tab.order == 1) & (tab.step == N)]
    np.testing.assert_allclose(last["distance"].item(), np.linalg.norm(gd[-1] - end), rtol=1e-9)


def test_modified_flows_lead_until_the_edge_of_stability_then_lose_their_margin(table):
    _, tab = table
    literal = flow_tracking.crossings(tab)
    margin = flow_tracking.crossings(tab, margin=0.1)
    assert literal.eos_entry is not None and 8 <= literal.eos_entry <= 40
    # as on the quadratic, the first-order flow never loses outright below h·λ_max ≈ 2.1 ...
    assert literal.modified_loses is None
    # ... but its lead over gradient flow shrinks below 10 % only after entering the edge
    assert margin.modified_loses is not None and margin.modified_loses > margin.eos_entry
    before = tab[(tab.step > 0) & (tab.step < literal.eos_entry)]
    d = before.pivot(index="step", columns="order", values="distance")
    assert np.all(d[1] < 0.9 * d[0]) and np.all(d[2] < d[1])
    entry = flow_tracking.crossings(tab, threshold=1.8)
    assert entry.eos_entry < literal.eos_entry


def test_bad_inputs_are_refused():
    with jax.enable_x64(True):
        with pytest.raises(ConfigError, match="multiple"):
            flow_tracking.track(E, THETA0, 0.1, 10, 3)
        with pytest.raises(ConfigError, match="learning rate"):
            flow_tracking.track(E, THETA0, 0.0, 10)
    with pytest.raises(ConfigError, match="float64"):
        flow_tracking.track(E, jnp.asarray(THETA0, jnp.float32), 0.1, 10)
    with pytest.raises(ConfigError, match="tracking table"):
        flow_tracking.crossings(pd.DataFrame({"step": [0]}))
    with pytest.raises(ConfigError, match="margin"):
        flow_tracking.crossings(pd.DataFrame(), margin=1.0)
