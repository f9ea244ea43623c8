"""The three descriptions of the environment agree: pyproject.toml, requirements.lock and the
Binder/conda environment.yml; and the running environment is the locked one."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
ENVIRONMENT = yaml.safe_load((ROOT / "environment.yml").read_text())
#: pyproject's dependency groups that `make env` installs and the lock must cover.
LOCKED_GROUPS = ("book", "test", "cluster")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """``{name: version}`` of every ``name==version`` requirement (others are skipped)."""
    out = {}
    for line in lines:
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            out[norm(req.name)] = specs[0].version
    return out


def lock() -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.lock").read_text().splitlines()]
    return pins([ln for ln in lines if ln])


def project_requirements() -> list[str]:
    return PYPROJECT["dependencies"] + [
        r for group in LOCKED_GROUPS for r in PYPROJECT["optional-dependencies"][group]]


def environment_pip() -> list[str]:
    (pip,) = [d["pip"] for d in ENVIRONMENT["dependencies"] if isinstance(d, dict)]
    return pip


def test_pyproject_pins_exactly_and_agrees_with_the_lock() -> None:
    locked = lock()
    for line in project_requirements():
        req = Requirement(line)
        assert [s.operator for s in req.specifier] == ["=="], f"{line}: not an exact pin"
        assert locked.get(norm(req.name)) == next(iter(req.specifier)).version, \
            f"{line} but requirements.lock has {locked.get(norm(req.name))}"


def test_environment_yml_agrees_with_pyproject_and_the_lock() -> None:
    pip = environment_pip()
    assert "-c requirements.lock" in pip and "-e ." in pip
    listed = pins([ln for ln in pip if not ln.startswith("-")])
    wanted = pins(PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["book"])
    assert set(wanted) <= set(listed), f"missing from environment.yml: {set(wanted) - set(listed)}"
    locked = lock()
    for name, version in listed.items():
        assert version == wanted.get(name, locked.get(name)) == locked.get(name), name


def test_environment_yml_python_satisfies_requires_python() -> None:
    (python,) = [d for d in ENVIRONMENT["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    version = python.split("=", 1)[1]
    assert Version(version) in SpecifierSet(PYPROJECT["requires-python"])


def test_installed_packages_are_the_locked_versions() -> None:
    wrong = {}
    for name, version in lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    if wrong:
        pytest.fail(f"installed versions differ from requirements.lock (run `make env`): {wrong}")
