"""Fitted error orders of a tidy error study: one log-log slope per group.

An error study is a table with a column ``h`` (learning rate), ``error`` (units of θ), an
``expected`` order (the exponent ``p`` of ``error = O(h^p)`` that the theory predicts) and any
number of columns naming the comparison (``kind``, ``flow``, …). The slope is
:func:`igrlib.maths.bea.fit_order`: least squares of ``log(error)`` on ``log(h)``.
"""

from __future__ import annotations

import pandas as pd

from igrlib.config import ConfigError
from igrlib.maths.bea import fit_order

#: Columns of a study that are measurements, not names of a comparison.
MEASURED = ("h", "n", "error")


def fitted_slopes(study: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison (every column but ``h``, ``n``, ``error``): its fitted ``slope``,
    the ``expected`` order and ``deviation = slope − expected``, in the study's order of rows."""
    missing = {"h", "error", "expected"} - set(study.columns)
    if missing:
        raise ConfigError(f"an error study needs columns h, error, expected; missing {sorted(missing)}")
    keys = [c for c in study.columns if c not in MEASURED]
    rows = []
    for names, group in study.groupby(keys, sort=False):
        row = dict(zip(keys, names))
        row["slope"] = fit_order(group["h"].to_numpy(), group["error"].to_numpy())
        row["deviation"] = row["slope"] - row["expected"]
        rows.append(row)
    return pd.DataFrame(rows)
