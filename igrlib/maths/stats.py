"""Statistics for the "What we found" tables: rank correlations with bootstrap intervals.

Spearman's ρ is Pearson's correlation of the ranks (average ranks for ties). Intervals resample
*seeds* with replacement (a cluster bootstrap): runs of one seed share nothing with runs of
another, while runs inside a seed share the data order, so seeds are the independent units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from igrlib.config import ConfigError


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # average the ranks within each tie
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation ρ in [−1, 1]; NaN when fewer than 3 points or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass(frozen=True)
class Correlation:
    """ρ with a percentile bootstrap interval over seeds (``low``, ``high``) from ``n`` points."""

    rho: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.rho:+.2f} [{self.low:+.2f}, {self.high:+.2f}] (n={self.n})"


def spearman_ci(frame: pd.DataFrame, x: str, y: str, group: str = "seed", n_boot: int = 1000,
                level: float = 0.95, seed: int = 0) -> Correlation:
    """Spearman ρ between columns ``x`` and ``y`` of ``frame`` with a cluster-bootstrap interval.

    Each bootstrap replicate draws the distinct values of ``group`` with replacement and pools
    their rows; the interval is the central ``level`` quantile range of the replicate ρ values
    (NaN replicates dropped). With a single seed the interval collapses to ρ itself.
    """
    for column in (x, y, group):
        if column not in frame:
            raise ConfigError(f"no column {column!r}; have {sorted(frame.columns)}")
    xs, ys = frame[x].to_numpy(float), frame[y].to_numpy(float)
    rho = spearman(xs, ys)
    groups = [np.asarray(rows) for rows in frame.groupby(group).indices.values()]
    rng = np.random.default_rng(seed)
    reps = []
    if len(groups) > 1:
        for _ in range(n_boot):
            rows = np.concatenate([groups[i] for i in rng.integers(len(groups), size=len(groups))])
            reps.append(spearman(xs[rows], ys[rows]))
    reps = np.asarray([r for r in reps if np.isfinite(r)])
    if len(reps) == 0:
        return Correlation(rho, rho, rho, len(frame))
    tail = (1 - level) / 2
    return Correlation(rho, float(np.quantile(reps, tail)), float(np.quantile(reps, 1 - tail)), len(frame))


def verdict(corr: Correlation, expected_sign: int) -> str:
    """"reproduced" when the whole interval has the expected sign, "not reproduced" when it has
    the opposite sign, "partly" when the point estimate has the expected sign but the interval
    crosses 0, "no evidence" otherwise (or when ρ is undefined)."""
    if not np.isfinite(corr.rho):
        return "no evidence"
    lo, hi = sorted((expected_sign * corr.low, expected_sign * corr.high))
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced"
    return "partly" if expected_sign * corr.rho > 0 else "no evidence"


#: Seeds needed before a bootstrap interval over seeds can support "reproduced".
MIN_SEEDS = 3


def finding(claim: str, frame: pd.DataFrame, x: str, y: str, sign: int, statistic: str) -> dict:
    """One row of a "What we found" table: ``claim``, ``statistic``, ``value`` (ρ with its
    interval) and ``verdict`` for the predicted ``sign`` of ρ(x, y) over ``frame``'s runs.

    Fewer than 3 runs give "no evidence". "reproduced" needs at least :data:`MIN_SEEDS` seeds:
    with one seed there is no interval, and a bootstrap over two seeds has only three distinct
    replicates (each seed alone, and both), so with fewer the verdict says at most "partly". A
    claim starting "(confound)" is not a prediction, and its verdict says whether the confound is
    present.
    """
    if len(frame) < 3:
        return dict(claim=claim, statistic=statistic, value=f"n={len(frame)} runs: too few",
                    verdict="no evidence")
    corr = spearman_ci(frame, x, y)
    found = verdict(corr, sign)
    if "seed" in frame and frame["seed"].nunique() < MIN_SEEDS and found == "reproduced":
        found = "partly"
    if claim.startswith("(confound)"):
        found = "confound present" if found == "reproduced" else "confound not detected"
    return dict(claim=claim, statistic=statistic, value=str(corr), verdict=found)
