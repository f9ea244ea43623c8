"""Every command the docs print runs, in a cheap form, so the docs and the code cannot drift.

Commands are read from the ``bash`` code blocks of README.md and book/reproduce.md and from the
``make ...`` lines of ``make help``. Each is run as:

* ``make ARGS``: ``make -n ARGS`` (the target and its variables exist), then every
  ``scripts/run_chapter.py`` or ``scripts/gpu_recipe.sh`` line that make would run, with
  ``--dry-run``;
* ``scripts/run_chapter.py ...`` and ``scripts/gpu_recipe.sh ...``: with ``--dry-run`` (they
  check the chapter, its parameters and the plan, and run nothing);
* ``python -m igrlib.io.data ...``: ``--help``.

A command of any other kind fails the test: add a cheap form here before documenting it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", ROOT / "book" / "reproduce.md")
VENV_BIN = Path(sys.executable).parent
DRY_RUNNABLE = ("scripts/run_chapter.py", "scripts/gpu_recipe.sh")


def doc_commands() -> list[str]:
    """Each command line of the docs' ``bash`` blocks, comments dropped, in order."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"^```bash\n(.*?)^```", doc.read_text(), flags=re.S | re.M):
            found += [shlex.join(shlex.split(line, comments=True)) for line in block.splitlines()
                      if shlex.split(line, comments=True)]
    return found


def help_commands() -> list[str]:
    """The ``make ...`` lines of ``make help``; ``make a | b`` stands for ``make a`` and ``make b``."""
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    commands = []
    for line in out.splitlines():
        if not line.startswith("make "):
            continue
        text = re.split(r"\s{2,}", line)[0]   # drop the description after the aligned gap
        targets = [t.strip() for t in text.removeprefix("make ").split("|")]
        commands += [f"make {t}" for t in targets]
    return commands


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def cheap_forms(command: str) -> list[list[str]]:
    """The argv(s) that exercise ``command`` without its cost (see module doc)."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words.pop(0)                          # VAR=value prefixes are applied by the caller
    if words[0] == "make":
        return [["make", "-n", *words[1:]]]
    script = next((i for i, w in enumerate(words) if w.endswith(DRY_RUNNABLE)), None)
    if script is not None:
        tail = words[script + 1:]
        interpreter = [sys.executable] if words[script].endswith(".py") else ["bash"]
        return [[*interpreter, str(ROOT / "scripts" / Path(words[script]).name),
                 *tail, *([] if "--dry-run" in tail else ["--dry-run"])]]
    if "-m" in words and words[words.index("-m") + 1] == "igrlib.sweep":
        tail = words[words.index("-m") + 2:]
        return [[sys.executable, "-m", "igrlib.sweep", *tail, *([] if "--dry-run" in tail else ["--dry-run"])]]
    if "-m" in words and words[words.index("-m") + 1] == "igrlib.io.data":
        return [[sys.executable, "-m", "igrlib.io.data", *words[words.index("-m") + 2:], "--help"]]
    raise AssertionError(f"the docs print {command!r}, which this test cannot run cheaply: "
                         "give it a dry run and a case in cheap_forms()")


def commands() -> list[str]:
    """Documented commands, one per distinct cheap form (with its VAR=value prefix)."""
    distinct: dict[str, str] = {}
    for command in doc_commands() + help_commands():
        words = shlex.split(command)
        prefix = [w for w in words[:next((i for i, w in enumerate(words) if not re.fullmatch(r"[A-Z_]+=.*", w)), 0)]]
        distinct.setdefault(repr((prefix, cheap_forms(command))), command)
    return list(distinct.values())


def test_the_docs_print_the_key_commands() -> None:
    found = commands()
    for expected in ("make book", "make test", "make bench", "make wheels", "scripts/gpu_recipe.sh --dry-run"):
        assert any(c.startswith(expected) for c in found), f"{expected!r} is not documented: {found}"
    assert any("run CHAPTER=" in c and "seeds 3" in c for c in found)


@pytest.mark.parametrize("command", commands())
def test_documented_command_runs(command: str) -> None:
    env = environment()
    for word in shlex.split(command):
        if not re.fullmatch(r"[A-Z_]+=.*", word):
            break
        name, value = word.split("=", 1)
        env[name] = value
    for argv in cheap_forms(command):
        done = run(argv, env)
        if argv[:2] != ["make", "-n"]:
            continue
        # what make would run: the papermill runner and the GPU recipe, dry
        for line in done.stdout.splitlines():
            if any(s in line for s in DRY_RUNNABLE):
                for inner in cheap_forms(line.replace("$(PY)", sys.executable)):
                    run(inner, env)
