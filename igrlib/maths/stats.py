"""Statistics for the "What we found" tables: within-seed rank trends, paired effects, verdicts.

Seeds are the independent units. Runs that share a seed share the initialisation and the data
order across learning rates and penalties, so every statistic here is computed *within* a seed
first and only then combined over seeds:

* **per-seed Spearman ρ** and their **sign consistency** ("k of n seeds"), descriptive;
* a **stratified permutation test** of the mean within-seed ρ: x is shuffled within each seed
  (exactly, over every permutation, when there are at most :data:`EXACT_LIMIT` of them), which is
  an exact test of "no monotone association" that treats seed as a grouping factor;
* a **paired within-seed effect** d_s = y(x_hi) − y(x_lo) in seed s, with a Student-t interval
  over seeds (real coverage when the d_s are roughly normal: :func:`t_interval`, checked by
  simulation in the tests) and an exact sign-flip test;
* an **equivalence check** (two one-sided t-tests) for claims that two arms do the same thing.

Verdict rule (:func:`verdict`), symmetric in the predicted and the opposite direction:

* ``reproduced``: at least :data:`MIN_SEEDS` seeds and the one-sided permutation p-value in the
  predicted direction ≤ :data:`ALPHA`;
* ``not reproduced``: the same in the opposite direction (the same seed rule blocks both);
* ``partly``: more seeds trend the predicted way than the other, short of the above;
* ``no evidence``: otherwise, or fewer than 3 runs, or ρ undefined;
* ``not testable at this budget``: a claim about minima whose runs end far from one (a
  training loss above :data:`MAX_TRAIN_LOSS` at a checkpoint);
* ``unstable``: two disjoint seed sets give different verdicts (:func:`compare_seed_sets`).

Confound rows (a claim starting "(confound)") say "confound present" / "confound not detected".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from igrlib.config import ConfigError

#: Every verdict a findings row can carry.
VERDICTS = ("reproduced", "partly", "no evidence", "not reproduced", "not testable at this budget",
            "unstable")
CONFOUND_VERDICTS = ("confound present", "confound not detected")
#: Seeds needed before a verdict may say "reproduced" or "not reproduced".
MIN_SEEDS = 3
#: One-sided level of the permutation test behind a verdict.
ALPHA = 0.05
#: Largest training loss (mean cross-entropy, nats) at a checkpoint for a claim about minima to be
#: testable: e^−0.25 ≈ 0.78 is the geometric mean of the probability given to the right label.
MAX_TRAIN_LOSS = 0.25
#: Permutation tests enumerate every within-seed permutation up to this many, else sample.
EXACT_LIMIT = 20_000
STABLE, UNSTABLE = "holds on both seed sets", "unstable"


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


def spearman(x: np.ndarray, y: np.ndarray, min_points: int = 3) -> float:
    """Spearman's rank correlation ρ in [−1, 1]: Pearson's correlation of the (average-tie) ranks.
    NaN with fewer than ``min_points`` finite pairs or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < max(min_points, 2):
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _check_columns(frame: pd.DataFrame, *columns: str) -> None:
    for column in columns:
        if column not in frame:
            raise ConfigError(f"no column {column!r}; have {sorted(frame.columns)}")


def _strata(frame: pd.DataFrame, x: str, y: str, group: str) -> dict:
    """Per group: the finite (x, y) pairs, groups with fewer than 2 pairs or a constant side
    dropped (their ρ is undefined; with 2 pairs ρ = ±1, the sign of the paired difference)."""
    out = {}
    for key, rows in frame.groupby(group).indices.items():
        xs, ys = frame[x].to_numpy(float)[rows], frame[y].to_numpy(float)[rows]
        keep = np.isfinite(xs) & np.isfinite(ys)
        if keep.sum() >= 2 and np.isfinite(spearman(xs[keep], ys[keep], min_points=2)):
            out[key] = (xs[keep], ys[keep])
    return out


def per_seed_spearman(frame: pd.DataFrame, x: str, y: str, group: str = "seed") -> pd.Series:
    """ρ(x, y) within each value of ``group`` (seeds with an undefined ρ left out)."""
    _check_columns(frame, x, y, group)
    strata = _strata(frame, x, y, group)
    return pd.Series({k: spearman(xs, ys, min_points=2) for k, (xs, ys) in strata.items()}, dtype=float)


@dataclass(frozen=True)
class PermutationTest:
    """Mean within-seed ρ (``statistic``) and its one-sided p-values under within-seed shuffling:
    ``p_greater`` = P(T ≥ t_obs), ``p_less`` = P(T ≤ t_obs); ``exact`` when every permutation
    was enumerated, else ``n_perm`` random ones with p = (1 + #)/(1 + n_perm)."""

    statistic: float
    p_greater: float
    p_less: float
    n_groups: int
    exact: bool
    n_perm: int


def _rho_table(xs: np.ndarray, ys: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """ρ of y against each row of ``perms`` (index permutations of x)."""
    rx, ry = _ranks(xs), _ranks(ys)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return (rx[perms] @ ry) / math.sqrt((rx @ rx) * (ry @ ry))


def stratified_permutation_test(frame: pd.DataFrame, x: str, y: str, group: str = "seed",
                                n_perm: int = 20_000, seed: int = 0) -> PermutationTest:
    """Test of a monotone association between ``x`` and ``y`` with ``group`` (seed) as stratum.

    Statistic T = mean over groups of the within-group Spearman ρ. Under the null that, within a
    group, the y values are exchangeable across the x values, every within-group permutation of
    x is equally likely; the p-values are the exact fractions of permutations with T at least
    (at most) as extreme, or Monte Carlo estimates that include the observed arrangement.
    """
    _check_columns(frame, x, y, group)
    strata = list(_strata(frame, x, y, group).values())
    if not strata:
        return PermutationTest(float("nan"), float("nan"), float("nan"), 0, True, 0)
    observed = float(np.mean([spearman(xs, ys, min_points=2) for xs, ys in strata]))
    total = math.prod(math.factorial(len(xs)) for xs, _ in strata)
    if total <= EXACT_LIMIT:
        null = np.zeros(1)
        for xs, ys in strata:  # the sum over groups of every combination of permutations
            perms = np.array(list(itertools.permutations(range(len(xs)))))
            null = np.add.outer(null, _rho_table(xs, ys, perms)).ravel()
        null /= len(strata)
        tol = 1e-12
        return PermutationTest(observed, float(np.mean(null >= observed - tol)),
                               float(np.mean(null <= observed + tol)), len(strata), True, len(null))
    rng = np.random.default_rng(seed)
    null = np.zeros(n_perm)
    for xs, ys in strata:
        perms = np.argsort(rng.random((n_perm, len(xs))), axis=1)
        null += _rho_table(xs, ys, perms)
    null /= len(strata)
    tol = 1e-12
    return PermutationTest(observed, float((1 + np.sum(null >= observed - tol)) / (1 + n_perm)),
                           float((1 + np.sum(null <= observed + tol)) / (1 + n_perm)),
                           len(strata), False, n_perm)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student-t interval mean ± t_{n−1, (1+level)/2}·s/√n.
    NaN bounds with fewer than 2 values."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(sps.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def sign_flip_p(values: Sequence[float]) -> float:
    """Two-sided exact sign-flip p-value of the mean of ``values`` (paired differences): the
    fraction of the 2^n sign assignments whose |mean| is at least the observed |mean|. With n
    values it is never below 2/2^n (0.25 for 3 seeds): it says how much n pairs *can* show."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(v))))
    return float(np.mean(np.abs(signs @ v) >= abs(v.sum()) - 1e-12))


@dataclass(frozen=True)
class PairedEffect:
    """Mean over seeds of the within-seed difference y(x = ``high``) − y(x = ``low``), times
    ``scale``, with its t-interval (``lo``, ``hi``), the exact sign-flip p-value and the pairs."""

    low: float
    high: float
    mean: float
    lo: float
    hi: float
    p_sign_flip: float
    n_pairs: int
    unit: str

    def __str__(self) -> str:
        if not np.isfinite(self.mean):
            return "no pair"
        ci = f" [{self.lo:+.3g}, {self.hi:+.3g}]" if np.isfinite(self.lo) else ""
        return (f"{self.mean:+.3g}{ci} {self.unit} ({self.low:g}→{self.high:g}, "
                f"{self.n_pairs} seed{'s' if self.n_pairs != 1 else ''})")


def paired_effect(frame: pd.DataFrame, x: str, y: str, group: str = "seed", scale: float = 1.0,
                  unit: str = "", level: float = 0.95) -> PairedEffect:
    """The paired within-seed contrast of ``y`` between the smallest x level and the largest x
    level that keeps the most complete seed pairs (so a level that only some seeds survive does
    not shrink the sample); runs of one seed at one level are averaged first."""
    _check_columns(frame, x, y, group)
    data = frame[[x, y, group]].dropna()
    cells = data.groupby([group, x])[y].mean().unstack(x)
    if cells.shape[1] < 2:
        return PairedEffect(float("nan"), float("nan"), float("nan"), float("nan"), float("nan"),
                            float("nan"), 0, unit)
    low = cells.columns.min()
    counts = {lvl: int((cells[low].notna() & cells[lvl].notna()).sum()) for lvl in cells.columns if lvl != low}
    best = max(counts.values())
    high = max(lvl for lvl, c in counts.items() if c == best)
    diffs = (scale * (cells[high] - cells[low])).dropna().to_numpy()
    mean, lo, hi = t_interval(diffs, level)
    return PairedEffect(float(low), float(high), mean, lo, hi, sign_flip_p(diffs), len(diffs), unit)


def equivalence(values: Sequence[float], margin: float, alpha: float = ALPHA) -> tuple[float, float, float, bool]:
    """Two one-sided t-tests: the mean of ``values`` lies within ±``margin`` when the
    (1 − 2α) t-interval lies inside (−margin, margin). Returns (mean, lo, hi, equivalent)."""
    mean, lo, hi = t_interval(values, 1 - 2 * alpha)
    ok = bool(np.isfinite(lo) and -margin < lo and hi < margin)
    return mean, lo, hi, ok


def equivalence_finding(claim: str, differences: Sequence[float], margin: float, unit: str,
                        statistic: str, min_seeds: int = MIN_SEEDS, untestable: str | None = None) -> dict:
    """A findings row for a claim that two arms do the same thing, from the per-seed paired
    ``differences``: "reproduced" when the 90 % t-interval lies within ±``margin``
    (:func:`equivalence`, at least ``min_seeds`` pairs), "not reproduced" when the 95 % interval
    excludes 0 and the mean lies beyond the margin, "partly" when the mean lies within the
    margin short of that, "no evidence" otherwise. ``p`` is the exact sign-flip p-value of a
    difference (not of the equivalence). ``untestable``, a reason (:func:`far_from_minimum`),
    makes the verdict "not testable at this budget"."""
    d = np.asarray(differences, float)
    d = d[np.isfinite(d)]
    mean, lo90, hi90, same = equivalence(d, margin)
    _, lo95, hi95 = t_interval(d)
    if len(d) == 0:
        found = "no evidence"
    elif len(d) >= min_seeds and same:
        found = "reproduced"
    elif len(d) >= min_seeds and (lo95 > 0 or hi95 < 0) and abs(mean) > margin:
        found = "not reproduced"
    else:
        found = "partly" if abs(mean) <= margin else "no evidence"
    value = (f"{mean:+.3g} {unit}, 95 % [{lo95:+.3g}, {hi95:+.3g}], 90 % [{lo90:+.3g}, {hi90:+.3g}] "
             f"({len(d)} seed pairs; equivalence margin ±{margin:g})" if len(d) else "no seed pair")
    if untestable:
        found, value = "not testable at this budget", f"{untestable}; {value}"
    return dict(claim=claim, statistic=statistic, value=value, p=sign_flip_p(d), effect="", verdict=found)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries pass through): controls
    the family-wise error rate under any dependence between the tests."""
    p = np.asarray(pvalues, float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="mergesort")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        out[i] = running
    return out


def verdict(test: PermutationTest, sign: int, seeds_with_sign: int, seeds_against: int,
            alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> str:
    """The verdict of the module docstring from a permutation test and the per-seed signs."""
    if not np.isfinite(test.statistic):
        return "no evidence"
    p_for, p_against = (test.p_greater, test.p_less) if sign > 0 else (test.p_less, test.p_greater)
    if test.n_groups >= min_seeds and p_for <= alpha:
        return "reproduced"
    if test.n_groups >= min_seeds and p_against <= alpha:
        return "not reproduced"
    return "partly" if seeds_with_sign > seeds_against else "no evidence"


def far_from_minimum(frame: pd.DataFrame, max_loss: float = MAX_TRAIN_LOSS) -> str | None:
    """A reason why claims about minima are not testable on ``frame``'s runs (the largest
    training loss at a checkpoint exceeds ``max_loss``), else None; None too when no training
    loss column is present."""
    column = next((c for c in ("train_loss_full", "train_loss") if c in frame), None)
    if column is None or frame.empty:
        return None
    worst = float(frame[column].max())
    if worst > max_loss:
        return f"training loss up to {worst:.2g} at the checkpoints (> {max_loss:g}): not near a minimum"
    return None


def finding(claim: str, frame: pd.DataFrame, x: str, y: str, sign: int, statistic: str,
            effect: tuple[float, str] | None = None, about_minima: bool = False) -> dict:
    """One row of a "What we found" table for the predicted ``sign`` of the trend of ``y`` with
    ``x`` over ``frame``'s runs: per-seed ρ and their sign consistency (``value``), the mean
    within-seed ρ with its one-sided permutation p-value in the predicted direction (``p``), a
    paired within-seed effect when ``effect = (scale, unit)`` is given (``effect``), and the
    ``verdict`` of :func:`verdict` (or "not testable at this budget" for a claim
    ``about_minima`` measured far from one, see :func:`far_from_minimum`)."""
    row = dict(claim=claim, statistic=statistic, value="", p=float("nan"), effect="", verdict="no evidence")
    missing = [c for c in (x, y) if c not in frame]
    if missing:
        return {**row, "value": f"skipped: the records have no {', '.join(missing)}"}
    frame = frame.dropna(subset=[x, y])
    if len(frame) < 3:
        return {**row, "value": f"n={len(frame)} runs: too few"}
    if "seed" not in frame:  # one seed: per-seed ρ is the pooled ρ
        frame = frame.assign(seed=0)
    rhos = per_seed_spearman(frame, x, y)
    test = stratified_permutation_test(frame, x, y)
    with_sign = int((np.sign(rhos) == sign).sum())
    against = int((np.sign(rhos) == -sign).sum())
    found = verdict(test, sign, with_sign, against)
    if claim.startswith("(confound)"):
        found = "confound present" if found == "reproduced" else "confound not detected"
    per_seed = ", ".join(f"{r:+.2f}" for r in rhos)
    row.update(value=f"ρ per seed {per_seed}; predicted sign in {with_sign} of {len(rhos)} seeds "
                     f"(mean {test.statistic:+.2f}, n={len(frame)} runs)",
               p=test.p_greater if sign > 0 else test.p_less, verdict=found)
    if effect is not None:
        row["effect"] = str(paired_effect(frame, x, y, scale=effect[0], unit=effect[1]))
    if about_minima and (reason := far_from_minimum(frame)):
        row.update(value=f"{reason}; {row['value']}", verdict="not testable at this budget")
    return row


def partial_correlation(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Pearson correlation of x and y after removing from each its least-squares line in z:
    the association of x and y at fixed z. NaN with fewer than 4 finite triples."""
    x, y, z = (np.asarray(v, float) for v in (x, y, z))
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    if keep.sum() < 4:
        return float("nan")
    design = np.column_stack([np.ones(keep.sum()), z[keep]])
    rx = x[keep] - design @ np.linalg.lstsq(design, x[keep], rcond=None)[0]
    ry = y[keep] - design @ np.linalg.lstsq(design, y[keep], rcond=None)[0]
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def power_law_exponent(e: Sequence[float], r: Sequence[float]) -> float:
    """k of r ∝ e^k: the least-squares slope of log r on log e over the positive finite pairs.
    NaN with fewer than 3 of them or a constant e."""
    e, r = np.asarray(e, float), np.asarray(r, float)
    keep = np.isfinite(e) & np.isfinite(r) & (e > 0) & (r > 0)
    if keep.sum() < 3 or np.ptp(np.log(e[keep])) == 0:
        return float("nan")
    return float(np.polyfit(np.log(e[keep]), np.log(r[keep]), 1)[0])


def finish(rows: Sequence[dict], threshold: float | str) -> pd.DataFrame:
    """A findings table from ``rows``: a ``threshold`` column first and Holm-adjusted p-values
    (``p_holm``) over the table's rows, the family a reader scans at once."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return table
    table["p_holm"] = holm(table["p"])
    table.insert(0, "threshold", threshold if isinstance(threshold, str) else f"{threshold:.0%}")
    return table


def describe_rule() -> str:
    """The verdict rule in a paragraph of Markdown, from this module's constants, for chapters."""
    return (
        "**How to read the verdicts.** Runs that share a seed share the initialisation and the data "
        "order, so every statistic is computed within a seed first. *value* lists Spearman's ρ per "
        "seed and in how many seeds it has the predicted sign; *p* is the one-sided p-value, in the "
        "predicted direction, of a permutation test that shuffles x within each seed (exact when "
        f"there are at most {EXACT_LIMIT:,} arrangements); *p_holm* adjusts it over the rows of the "
        "table (Holm); *effect* is the paired within-seed difference between two learning rates "
        "(accuracies in test images) with a 95 % Student-t interval over seeds. Verdicts: "
        f"**reproduced**: at least {MIN_SEEDS} seeds and p ≤ {ALPHA:g}; **not reproduced**: the same "
        "in the opposite direction (the seed rule blocks both); **partly**: more seeds trend the "
        "predicted way than the other, short of that; **no evidence**: otherwise; **not testable at "
        f"this budget**: a claim about minima whose runs end with a training loss above "
        f"{MAX_TRAIN_LOSS:g} nats at a checkpoint; **unstable**: two disjoint seed sets disagree. A "
        "claim that two arms do the same thing is an equivalence test (the 90 % interval of the "
        "paired difference inside a stated margin). Confound rows say *confound present* or *not "
        "detected*. With 3 seeds and only 2 learning rates in a row, no p-value can fall below 1/8: "
        "such rows can say *partly* at most.")


def compare_seed_sets(table_a: pd.DataFrame, table_b: pd.DataFrame,
                      keys: Sequence[str] = ("threshold", "claim")) -> pd.DataFrame:
    """Verdicts of one findings table computed on two disjoint seed sets A and B, side by side:
    ``stability`` is "holds on both seed sets" when the verdicts agree, else "unstable", and
    ``verdict`` is the common verdict or "unstable". Rows present in one table only are
    "unstable" too (the other set could not compute them)."""
    keys = [k for k in keys if k in table_a and k in table_b]
    if not keys:
        raise ConfigError("the tables share no key column (threshold, claim)")
    a = table_a[[*keys, "verdict", "value"]].rename(columns={"verdict": "verdict_A", "value": "value_A"})
    b = table_b[[*keys, "verdict", "value"]].rename(columns={"verdict": "verdict_B", "value": "value_B"})
    both = a.merge(b, on=keys, how="outer", sort=False)
    same = both["verdict_A"].eq(both["verdict_B"])
    both["stability"] = np.where(same, STABLE, UNSTABLE)
    both["verdict"] = np.where(same, both["verdict_A"], UNSTABLE)
    return both
