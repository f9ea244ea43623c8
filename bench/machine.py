"""What machine a benchmark ran on: CPU model, cores, accelerator, versions, load average."""

from __future__ import annotations

import os
import re
from importlib import metadata
from typing import Any

from igrlib.io import results

#: Versions recorded besides those of igrlib's provenance (jax, jaxlib, haiku, optax, ...).
EXTRA_PACKAGES = ("torch",)


def cpu_model() -> str:
    """The ``model name`` line of ``/proc/cpuinfo`` (``"unknown"`` where there is none)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cores() -> int:
    """CPU cores this process may run on (its affinity set, not the host's count)."""
    return len(os.sched_getaffinity(0))


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (runnable processes, as ``uptime`` prints)."""
    return [round(v, 2) for v in os.getloadavg()]


def describe() -> dict[str, Any]:
    """The machine and software: CPU model, cores, device, package versions, git commit, date."""
    prov = results.provenance()
    prov.pop("wall_time_s")
    packages = dict(prov.pop("packages"))
    for name in EXTRA_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"cpu_model": cpu_model(), "cores": cores(), "packages": packages, **prov}


def slug(description: dict[str, Any]) -> str:
    """A file name for the machine: ``cpu-<model>-<n>c``, or ``<accelerator kind>`` on one,
    e.g. ``cpu-amd-epyc-2c`` (lower-case letters, digits and hyphens)."""
    device = description["device"]
    if device["platform"] == "cpu":
        name = f"cpu-{description['cpu_model']}-{description['cores']}c"
    else:
        name = f"{device['platform']}-{device['kind']}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
