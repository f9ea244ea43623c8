"""igrlib.experiments.costs: FLOP counts against the closed form, records summed, every profile."""

from __future__ import annotations

import json

import pytest

from igrlib.io.results import run_id

from igrlib.experiments import costs, mnist_mlp


def test_mlp_forward_flops_match_the_closed_form() -> None:
    """A dense layer n -> k costs 2nk multiply-adds plus k bias adds; ReLU k max ops; XLA counts
    each. Width 200, 5 hidden layers, MNIST: 784 -> 200 (x5) -> 10."""
    sizes = [784, 200, 200, 200, 200, 200, 10]
    dense = sum(2 * n * k + k for n, k in zip(sizes, sizes[1:]))
    relu = 5 * 200
    assert costs.forward_flops("mlp", "mnist", 200, 5) == pytest.approx(dense + relu, rel=0.01)


def test_run_cost_counts_steps_and_evaluations() -> None:
    train = dict(model="mlp", dataset="mnist", width=16, depth=2, batch_size=100, n_train=1000,
                 n_test=500, epochs=4, eval_every=2, method="egr")
    f = costs.forward_flops("mlp", "mnist", 16, 2)
    cost = costs.run_cost(train)
    assert cost["steps"] == 40
    assert cost["flops"] == pytest.approx(40 * 9 * f * 100 + 2 * f * 1500)


def test_table_sums_the_stored_wall_times(tmp_path) -> None:
    folder = tmp_path / "cpu" / mnist_mlp.NAME
    folder.mkdir(parents=True)
    ids = [run_id(c) for c in mnist_mlp.grid("cpu")[:2]] + ["second-seed-set"]
    for name, wall in zip(ids, (30.0, 90.0, 600.0)):  # only the cpu grid's runs count
        (folder / f"{name}.json").write_text(json.dumps({"provenance": {"wall_time_s": wall}}))
    table = costs.table({"mnist_igr": mnist_mlp}, root=tmp_path).set_index("profile")
    assert list(table.index) == ["smoke", "cpu", "paper"]
    assert table.loc["cpu", "cpu here, measured (min)"] == pytest.approx(2.0)
    assert table.loc["paper", "runs"] == len(mnist_mlp.grid("paper")) == 126
    assert table["one GPU, estimated (h)"].is_monotonic_increasing
