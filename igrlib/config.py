"""Profiles and input validation shared by every experiment.

A *profile* sets the scale of a chapter's computation:

* ``smoke``: seconds per chapter, checks that everything runs (CI, nbval);
* ``cpu``: the whole book in about half an hour on a 2-core machine, the paper's trends on a
  reduced grid;
* ``paper``: the paper's full grid, meant for papermill on a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

PROFILES: tuple[str, ...] = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"
PROFILE_ENV = "IGR_PROFILE"


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any computation starts."""


def resolve_profile(profile: str | None = None) -> str:
    """Return a valid profile name: ``profile``, else ``$IGR_PROFILE``, else ``cpu``."""
    name = profile if profile is not None else os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return name


def check_keys(given: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    """Raise :class:`ConfigError` naming every key of ``given`` that is not in ``allowed``."""
    allowed = set(allowed)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown {what} key(s) {unknown}; valid keys are {sorted(allowed)}"
        )


def check_positive(value: float, name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number > 0."""
    try:
        ok = float(value) > 0 and float(value) != float("inf")
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_choice(value: Any, choices: Iterable[Any], name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")
