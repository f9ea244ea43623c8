"""Rank statistics behind the "What we found" tables, checked against scipy."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from igrlib.maths import stats
from igrlib.config import ConfigError


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, 80).astype(float)  # many ties
    y = x + rng.normal(size=80)
    assert stats.spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_undefined_cases_are_nan():
    assert np.isnan(stats.spearman([1, 2], [2, 1]))
    assert np.isnan(stats.spearman([1, 1, 1], [1, 2, 3]))
    assert stats.spearman([1, 2, np.nan, 4], [1, 2, 3, 4]) == pytest.approx(1.0)


def test_bootstrap_interval_contains_rho_and_is_wide_for_noise():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": np.tile(np.arange(10.0), 3), "seed": np.repeat([0, 1, 2], 10)})
    frame["y"] = frame["x"] + rng.normal(scale=0.5, size=30)
    corr = stats.spearman_ci(frame, "x", "y")
    assert corr.low <= corr.rho <= corr.high
    assert corr.rho > 0.9 and corr.low > 0.8
    assert stats.verdict(corr, +1) == "reproduced"
    assert stats.verdict(corr, -1) == "not reproduced"

    # seeds that disagree: the trend flips sign from seed to seed, so resampling seeds must
    # give an interval on both sides of zero, and no verdict may claim the trend
    x = np.tile(np.arange(10.0), 4)
    y = np.concatenate([np.arange(10.0), -np.arange(10.0), np.arange(10.0), -np.arange(10.0)])
    split = pd.DataFrame({"x": x, "y": y, "seed": np.repeat([0, 1, 2, 3], 10)})
    mixed = stats.spearman_ci(split, "x", "y")
    assert mixed.rho == pytest.approx(0.0, abs=1e-12)
    assert mixed.low < 0 < mixed.high
    assert stats.verdict(mixed, +1) == "no evidence" and stats.verdict(mixed, -1) == "no evidence"


def test_single_seed_interval_collapses_and_bad_column_raises():
    frame = pd.DataFrame({"x": [1.0, 2, 3, 4], "y": [1.0, 3, 2, 4], "seed": 0})
    corr = stats.spearman_ci(frame, "x", "y")
    assert corr.low == corr.rho == corr.high
    with pytest.raises(ConfigError, match="no column"):
        stats.spearman_ci(frame, "x", "nope")


@pytest.mark.parametrize("seeds,expected", [(1, "partly"), (2, "partly"), (3, "reproduced")])
def test_reproduced_needs_three_seeds(seeds, expected):
    """A perfect monotone trend in every seed: with fewer than three seeds the bootstrap has too
    few distinct replicates to call it reproduced."""
    frame = pd.DataFrame([{"x": float(i), "y": float(i) + 0.1 * s, "seed": s}
                          for s in range(seeds) for i in range(4)])
    assert stats.finding("claim", frame, "x", "y", +1, "ρ(x, y)")["verdict"] == expected
    assert stats.finding("claim", frame, "x", "y", -1, "ρ(x, y)")["verdict"] == "not reproduced"
