"""A vmapped group sharded over several (forced host) devices equals the unsharded group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from igrlib.io import data
    from igrlib.training.config import TrainConfig
    from igrlib.training.program import train_group
    ds = data.load("mnist", n_train=512, n_test=256)
    cfgs = [TrainConfig(width=16, depth=2, learning_rate=lr, seed=s, batch_size=128, epochs=2,
                        selection="test", thresholds=(0.5,)) for lr in (0.1, 0.05) for s in (0, 1)]
    runs = train_group(cfgs, ds, progress=False)
    print(json.dumps({"devices": jax.local_device_count(),
                      "history": [r.history for r in runs],
                      "params": [float(sum(np.abs(l).sum() for l in jax.tree_util.tree_leaves(r.params)))
                                 for r in runs]}))
""")


def _run(devices: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sharded_group_equals_the_unsharded_group():
    one, two = _run(1), _run(2)
    assert (one["devices"], two["devices"]) == (1, 2)
    # the same runs, device by device: accuracies (counts of images) equal exactly; losses and
    # parameters equal up to float32 rounding (the sharded program is a different XLA program)
    for a, b in zip(one["history"], two["history"]):
        assert a.keys() == b.keys()
        for key in a:
            if key.endswith("acc") or key in ("epoch", "step"):
                assert a[key] == b[key], key
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert two["params"] == pytest.approx(one["params"], rel=1e-5)
