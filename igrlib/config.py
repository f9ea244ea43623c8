"""Profiles and input validation shared by every experiment.

A *profile* sets the scale of a chapter's computation:

* ``smoke``: seconds per chapter, checks that everything runs (CI, nbval);
* ``cpu``: the whole book in about half an hour on a 2-core machine, the paper's trends on a
  reduced grid;
* ``paper``: the paper's full grid, meant for papermill on a GPU.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

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


def check_number(value: Any, name: str) -> float:
    """Return ``value`` as a float; raise :class:`ConfigError` unless it is a real number (an int,
    a float or a numpy scalar). Strings such as ``"0.1"`` and booleans are rejected, never
    coerced: a coerced string would hash to a second run id for the same run."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_positive(value: Any, name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number > 0 (strings rejected)."""
    number = check_number(value, name)
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_int(value: Any, name: str, low: int = 1, high: int | None = None, *,
              optional: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer in ``[low, high]`` (``high`` None:
    no upper bound); ``optional=True`` also accepts None. Booleans and floats are rejected."""
    if optional and value is None:
        return
    ok = (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
          and value >= low and (high is None or value <= high))
    if not ok:
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        none = " or None" if optional else ""
        raise ConfigError(f"{name} must be an integer {bound}{none}, got {value!r}")


def check_choice(value: Any, choices: Iterable[Any], name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")



#: Axes whose scalar value is a count: ``seed=3`` means seeds 0, 1, 2.
COUNTED_AXES: tuple[str, ...] = ("seed", "seeds")


def axis_values(name: str, value: Any) -> tuple[Any, ...]:
    """The values of grid axis ``name``, given as a list or as one scalar.

    A list, tuple or other non-string iterable is the values themselves, in order (at least
    one). A scalar on a seed axis (:data:`COUNTED_AXES`) is a count: an integer ``n >= 1`` means
    seeds ``(0, 1, ..., n-1)``, what ``-p seeds 3`` on a command line says. A scalar on any other
    axis is its one value (``-p widths 200`` is the single width 200). A bool, a string, a
    mapping, an empty list or a seed count below 1 raises :class:`ConfigError` naming the axis,
    before any compute; the values themselves are checked by the grid that uses them.
    """
    wrong = f"{name}: give a list of values or one value, got {value!r}"
    if isinstance(value, (bool, str, bytes, Mapping)):
        raise ConfigError(wrong)
    if isinstance(value, Iterable):
        values = tuple(value)
        if not values:
            raise ConfigError(f"{name}: the list of values is empty; give at least one")
        return values
    if name in COUNTED_AXES:
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{name}: a count of seeds must be an integer >= 1 (n means seeds "
                              f"0..n-1), or give a list of seeds; got {value!r}")
        return tuple(range(int(value)))
    if not isinstance(value, numbers.Number):
        raise ConfigError(wrong)
    return (value,)
