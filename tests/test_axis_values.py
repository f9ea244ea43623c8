"""Grid axes accept a list or one scalar (a count for seeds), checked before any compute."""

from __future__ import annotations

import numpy as np
import pytest

from igrlib.config import ConfigError, axis_values
from igrlib.experiments import cifar_resnet, egr_mlp, mnist_mlp


@pytest.mark.parametrize("value, expected", [
    (3, (0, 1, 2)), (1, (0,)), (np.int64(2), (0, 1)), ([4, 7], (4, 7)), ((0,), (0,)),
    (range(2), (0, 1)), (np.array([5, 6]), (5, 6)),
])
def test_seed_count_or_list(value, expected) -> None:
    assert axis_values("seed", value) == tuple(expected)
    assert axis_values("seeds", value) == tuple(expected)


def test_other_axes_take_one_value_or_a_list() -> None:
    assert axis_values("width", 200) == (200,)
    assert axis_values("learning_rate", 0.1) == (0.1,)
    assert axis_values("learning_rate", [0.1, 0.01]) == (0.1, 0.01)


@pytest.mark.parametrize("name, value, match", [
    ("seed", 0, "count of seeds"), ("seed", -2, "count of seeds"), ("seed", 2.0, "count of seeds"),
    ("seed", True, "list of values"), ("seed", "3", "list of values"), ("seed", [], "empty"),
    ("width", "wide", "list of values"), ("width", {"a": 1}, "list of values"),
    ("width", None, "list of values"),
])
def test_bad_axis_values_are_config_errors(name, value, match) -> None:
    with pytest.raises(ConfigError, match=match):
        axis_values(name, value)


@pytest.mark.parametrize("experiment", [mnist_mlp, egr_mlp, cifar_resnet])
def test_every_grid_takes_a_seed_count(experiment) -> None:
    """`-p seeds 3` reaches grid() as seed=3: the same runs as seed=[0, 1, 2]."""
    by_count = experiment.grid("smoke", seed=3)
    by_list = experiment.grid("smoke", seed=[0, 1, 2])
    assert by_count == by_list
    assert sorted({c["train"]["seed"] for c in by_count}) == [0, 1, 2]
    with pytest.raises(ConfigError, match="seed"):
        experiment.grid("smoke", seed=0)
