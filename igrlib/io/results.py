"""The results store: one JSON file per run, keyed by the run's config, never lost.

Layout: ``<results_dir>/<profile>/<experiment>/<run_id>.json`` where ``run_id`` is the first 16
hex digits of the SHA-256 of the config's canonical JSON. A record is

```
{"id", "experiment", "config": {...}, "status": "ok"|"diverged"|"collapsed"|"failed",
 "status_step": int|null, "error": str|null, "metrics": {name: float},
 "history": {name: [float]}, "extra": {...}, "group": [run_id]|null, "provenance": {...}}
```

``group`` lists the ids of the runs trained together with this one as one (vmapped) program.

Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``), so a process
killed at any instant leaves either the old state or the complete new record. A record that is
unreadable all the same (a full disk, a manual edit) is moved aside to
``<store>/corrupt/<name>.<UTC timestamp>`` with a warning naming it, and its run counts as
missing, so the next sweep redoes it. No pickles.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from igrlib.io import atomic, paths
from igrlib.config import ConfigError, resolve_profile

STATUSES = ("ok", "diverged", "dead", "collapsed", "failed")
#: Failed runs (an exception, not a property of the run) are retried; the others are final.
FINAL_STATUSES = ("ok", "diverged", "dead", "collapsed")
PACKAGES = ("jax", "jaxlib", "dm-haiku", "optax", "numpy", "matfree", "diffrax")


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays to numbers/lists, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, (np.ndarray, np.generic)):
        value = np.asarray(value)  # a JAX array
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def canonical(config: Mapping[str, Any]) -> str:
    """The config as canonical JSON (sorted keys, no spaces): what the run id hashes."""
    return json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))


def run_id(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of SHA-256 of :func:`canonical`."""
    return hashlib.sha256(canonical(config).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def _static_provenance() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=paths.PROJECT_ROOT, capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import jax  # imported late: reading records needs no JAX

    device = jax.devices()[0]
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "packages": versions,
        "python": platform.python_version(),
        "device": {"platform": device.platform, "kind": device.device_kind,
                   "count": jax.device_count()},
        "host_cpus": os.cpu_count(),
    }


def provenance(wall_time_s: float | None = None, device: bool = True) -> dict[str, Any]:
    """Git commit, package versions, device, UTC date and the run's wall time in seconds.

    ``device=False`` leaves the device out (``None``): a sweep's driver, writing the record of a
    job that died elsewhere, must not start JAX, which would claim memory on a GPU its workers
    need.
    """
    out = dict(_static_provenance()) if device else {"device": None}
    out["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out["wall_time_s"] = wall_time_s
    return out


class Store:
    """Records of one experiment at one profile (see the module docstring)."""

    def __init__(self, experiment: str, profile: str | None = None, root: Path | str | None = None):
        if not experiment or not all(ch.isalnum() or ch in "-_" for ch in experiment):
            raise ConfigError(f"experiment name must be letters, digits, '-' or '_', got {experiment!r}")
        self.experiment = experiment
        self.profile = resolve_profile(profile)
        self.path = Path(root) if root is not None else paths.results_dir()
        self.path = self.path / self.profile / experiment

    def file(self, config: Mapping[str, Any]) -> Path:
        """Where the record of ``config`` lives."""
        return self.path / f"{run_id(config)}.json"

    def get(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored record of ``config``, or None (also when it was unreadable and moved
        aside, see :meth:`read`)."""
        return self.read(self.file(config))

    def read(self, file: Path) -> dict[str, Any] | None:
        """The record in ``file``; None if there is none. An unreadable record (not JSON, not
        an object with ``id``, ``config`` and a known ``status``) is moved to
        ``<store>/corrupt/<name>.<UTC timestamp>`` with a :class:`RuntimeWarning` naming both
        paths, and reads as None."""
        try:
            text = file.read_bytes().decode()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            return self._quarantine(file, err)
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            return self._quarantine(file, err)
        if not (isinstance(record, dict) and {"id", "config", "status"} <= set(record)
                and record["status"] in STATUSES):
            return self._quarantine(file, ValueError("not a run record (id, config, status)"))
        return record

    def _quarantine(self, file: Path, err: Exception) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = self.path / "corrupt" / f"{file.name}.{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(file, dest)
        except FileNotFoundError:  # another reader moved it first and warned
            return None
        warnings.warn(f"unreadable record {file} ({type(err).__name__}: {err}) moved to {dest}; "
                      "its run counts as missing and the next sweep redoes it",
                      RuntimeWarning, stacklevel=3)
        return None

    def done(self, config: Mapping[str, Any]) -> bool:
        """True when ``config`` has a record with a final status (failed runs are retried)."""
        record = self.get(config)
        return record is not None and record["status"] in FINAL_STATUSES

    def put(self, config: Mapping[str, Any], *, status: str, metrics: Mapping[str, Any] | None = None,
            history: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
            status_step: int | None = None, error: str | None = None,
            wall_time_s: float | None = None, group: Sequence[str] | None = None,
            device: bool = True) -> Path:
        """Write the record of one run atomically and return its path. ``group``: the run ids
        of the program it was trained in; ``device``: see :func:`provenance`."""
        if status not in STATUSES:
            raise ConfigError(f"unknown status {status!r}; choose one of {STATUSES}")
        record = {
            "id": run_id(config),
            "experiment": self.experiment,
            "config": _jsonable(dict(config)),
            "status": status,
            "status_step": _jsonable(status_step),
            "error": error,
            "metrics": _jsonable(dict(metrics or {})),
            "history": _jsonable(dict(history or {})),
            "extra": _jsonable(dict(extra or {})),
            "group": list(group) if group is not None else None,
            "provenance": _jsonable(provenance(wall_time_s, device=device)),
        }
        file = self.file(config)
        atomic.write_text(file, json.dumps(record, indent=1, sort_keys=True) + "\n")
        return file

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record, in file-name order (temporary files are skipped, unreadable
        ones moved aside as :meth:`read` says)."""
        if not self.path.exists():
            return
        for file in sorted(self.path.glob("[0-9a-f]*.json")):
            record = self.read(file)
            if record is not None:
                yield record

    def frame(self) -> pd.DataFrame:
        """One row per record: ``id``, ``status``, ``status_step``, then the config's leaves
        (nested sections such as ``{"train": {"hparams": {"mu": ...}}}`` flatten recursively,
        see :func:`column_names`) and the scalar metrics as columns (a metric that shares a
        config field's name gets the prefix ``metric_``); ``history``, ``extra`` and
        ``provenance`` stay as dict-valued columns."""
        records = list(self.records())
        names = column_names([path for rec in records for path in _leaves(rec["config"])])
        rows = []
        for rec in records:
            row = {"id": rec["id"], "status": rec["status"], "status_step": rec["status_step"],
                   "error": rec["error"]}
            for path, value in _leaves(rec["config"]).items():
                row[names[path]] = value
            for key, value in rec["metrics"].items():
                row[f"metric_{key}" if key in row else key] = value
            row["history"] = rec["history"]
            row["extra"] = rec["extra"]
            row["wall_time_s"] = rec["provenance"].get("wall_time_s")
            row["provenance"] = rec["provenance"]  # where each number came from (figures, status)
            rows.append(row)
        return pd.DataFrame(rows)


def _leaves(config: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """``{key path: value}`` of every non-dict value of a nested config (lists are values)."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def column_names(paths: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """A column name per config key path: its last key (``("train", "hparams", "mu")`` ->
    ``mu``); where two paths share a name, each is prefixed with its enclosing sections, one
    at a time, until the names differ (``train_seed`` vs ``measure_seed``)."""
    paths = sorted(set(paths), key=lambda p: (len(p), p))
    depth = {p: 1 for p in paths}
    while True:
        named: dict[str, list[tuple[str, ...]]] = {}
        for p in paths:
            named.setdefault("_".join(p[-depth[p]:]), []).append(p)
        grow = [p for clash in named.values() if len(clash) > 1 for p in clash if depth[p] < len(p)]
        if not grow:
            return {p: "_".join(p[-depth[p]:]) for p in paths}
        for p in grow:
            depth[p] += 1
