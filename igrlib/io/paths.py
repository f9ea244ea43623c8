"""Where igrlib reads and writes files; each location can be moved by an environment variable.

* ``IGR_DATA_DIR`` (default ``<project>/data``): the data sets, fetched by ``make data``.
* ``IGR_RESULTS_DIR`` (default ``<project>/data/results``): the results store.
* ``IGR_FIGURES_DIR`` (default ``<project>/figures``): exported figures for talks.

``<project>`` is the folder that holds the ``igrlib`` package (the repository root for an
editable install), so chapters find the same files whatever their working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _from_env(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """The data directory: ``$IGR_DATA_DIR``, else ``<project>/data``."""
    return _from_env("IGR_DATA_DIR", PROJECT_ROOT / "data")


def results_dir() -> Path:
    """The results store's root: ``$IGR_RESULTS_DIR``, else ``<project>/data/results``."""
    return _from_env("IGR_RESULTS_DIR", PROJECT_ROOT / "data" / "results")


def figures_dir() -> Path:
    """Where :func:`igrlib.io.figures.save` writes: ``$IGR_FIGURES_DIR``, else ``<project>/figures``."""
    return _from_env("IGR_FIGURES_DIR", PROJECT_ROOT / "figures")
