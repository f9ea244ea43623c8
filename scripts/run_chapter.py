#!/usr/bin/env python
"""Execute one chapter of the book at one profile with papermill (``make run`` calls this).

    scripts/run_chapter.py mnist_igr --profile paper -p seeds 3 -p widths "[50, 200]"
    scripts/run_chapter.py egr --profile paper --dry-run     # check, print the plan, run nothing

papermill reads ``.ipynb`` only, so the chapter's MyST source (``book/<chapter>.md``) is first
converted with jupytext into a temporary folder. ``profile`` and every ``-p NAME VALUE`` are
injected after the chapter's ``parameters`` cell; each VALUE is read as YAML (``3`` is an int,
``0.5`` a float, ``[1, 2]`` a list, ``null`` None, anything else a string). Names must be
parameters the chapter declares, so a typo fails before any cell runs. A grid axis takes a list
or one value; a seed axis takes a count too (``-p seeds 3`` is seeds 0, 1, 2).

Output: ``build/runs/<chapter>-<profile>[-<parameters>].ipynb``, where ``<parameters>`` spells
the ``-p`` values (``seeds3-widths.50.200``), or is a short hash of them when that would be long,
so runs with different parameters never share a notebook. The chapter executes into
``build/runs/.<name>.<pid>.running.ipynb`` (written cell by cell: watch it there), which is moved
onto the output only when every cell succeeded; a failed or interrupted run leaves
``<name>.failed.ipynb`` instead and never replaces a good notebook. The chapter's runs go to the
results store (``data/results/<profile>/``), where a later ``make book`` at that profile finds
them, and its figures to ``figures/``.

Exit status: 0 on success (or a good dry run), 1 if a cell failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import jupytext
import papermill
import yaml

from book_toc import BOOK, ROOT, chapters  # scripts/ is on sys.path when run as a script
from igrlib.config import PROFILES

RUNS = ROOT / "build" / "runs"
#: longest parameter summary spelled out in a file name; longer ones become a hash
MAX_SUMMARY = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", help="a chapter of _toc.yml, e.g. mnist_igr (or book/mnist_igr.md)")
    parser.add_argument("--profile", required=True, choices=PROFILES)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="override a parameter (VALUE read as YAML)")
    parser.add_argument("--output", type=Path, default=None,
                        help="executed notebook (default: build/runs/<chapter>-<profile>[-<parameters>].ipynb)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the chapter and parameters, inject them (papermill's prepare-only), "
                             "print the plan and the output path; execute nothing")
    args = parser.parse_args(argv)
    args.chapter = Path(args.chapter).stem
    known = chapters()
    if args.chapter not in known:
        parser.error(f"unknown chapter {args.chapter!r}; chapters: {', '.join(known)}")
    return args


def summary(overrides: dict[str, Any]) -> str:
    """File-name part naming ``overrides``: ``{"seeds": 3, "widths": [50, 200]}`` ->
    ``"seeds3-widths.50.200"``; ``""`` for none; ``"p"`` + 8 hex digits of the SHA-256 of their
    canonical JSON when the spelled-out form is longer than :data:`MAX_SUMMARY`."""
    if not overrides:
        return ""
    def spelled(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return re.sub(r"[^A-Za-z0-9_.]+", ".", text).strip(".")

    # a list's items each follow a dot, so "seeds 3" (a count) and "seeds [3]" (seed 3) differ
    text = "-".join(name + ("".join("." + spelled(v) for v in value) if isinstance(value, list)
                            else spelled(value))
                    for name, value in sorted(overrides.items()))
    if len(text) <= MAX_SUMMARY:
        return text
    canonical = json.dumps(overrides, sort_keys=True, separators=(",", ":"))
    return "p" + hashlib.sha256(canonical.encode()).hexdigest()[:8]


def default_output(chapter: str, profile: str, overrides: dict[str, Any]) -> Path:
    """``build/runs/<chapter>-<profile>[-<summary>].ipynb``."""
    tail = summary(overrides)
    return RUNS / f"{chapter}-{profile}{'-' + tail if tail else ''}.ipynb"


def failed_path(output: Path) -> Path:
    """Where a failed run's notebook goes: ``<name>.failed.ipynb`` beside ``output``."""
    return output.with_name(output.name.removesuffix(".ipynb") + ".failed.ipynb")


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill's cell progress
    overrides = {name: yaml.safe_load(value) for name, value in args.parameter}
    output = (args.output or default_output(args.chapter, args.profile, overrides)).resolve()
    # igrlib code that resolves the profile itself sees the same one as the injected parameter
    os.environ["IGR_PROFILE"] = args.profile
    with tempfile.TemporaryDirectory(prefix="igr-run-") as tmp:
        source = Path(tmp) / f"{args.chapter}.ipynb"
        notebook = jupytext.read(BOOK / f"{args.chapter}.md")
        # papermill needs the language, which the chapters' short kernelspec leaves out
        notebook.metadata.setdefault("language_info", {"name": "python"})
        jupytext.write(notebook, source)
        declared = papermill.inspect_notebook(str(source))
        unknown = sorted(set(overrides) - set(declared))
        if "profile" not in declared or unknown:
            print(f"error: chapter {args.chapter!r} declares parameters {sorted(declared)}; "
                  f"cannot set {unknown or ['profile']}", file=sys.stderr)
            return 2
        parameters = {"profile": args.profile, **overrides}
        verb = "would run" if args.dry_run else "running"
        print(f"{verb} {args.chapter} at profile {args.profile} with {overrides or 'defaults'}"
              f" -> {shown(output)}", flush=True)
        if args.dry_run:
            papermill.execute_notebook(str(source), str(Path(tmp) / "prepared.ipynb"),
                                       parameters=parameters, prepare_only=True, progress_bar=False)
            return 0
        return execute(source, output, parameters)


def execute(source: Path, output: Path, parameters: dict[str, Any]) -> int:
    """Run ``source`` into a temporary notebook beside ``output``; move it onto ``output`` on
    success, onto ``<name>.failed.ipynb`` otherwise (also when interrupted, then re-raised)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    running = output.with_name(f".{output.name.removesuffix('.ipynb')}.{os.getpid()}.running.ipynb")
    print(f"executing into {shown(running)} (moved to {output.name} when every cell succeeded)",
          flush=True)
    try:
        papermill.execute_notebook(
            str(source), str(running), parameters=parameters,
            cwd=str(BOOK), kernel_name="python3", log_output=True, progress_bar=False,
        )
    except papermill.PapermillExecutionError as err:
        failed = _keep_failed(running, output)
        print(f"error: {err.ename}: {err.evalue} (see {shown(failed)})", file=sys.stderr)
        return 1
    except BaseException:
        failed = _keep_failed(running, output)
        print(f"interrupted or failed outside a cell; partial notebook: {shown(failed)}", file=sys.stderr)
        raise
    os.replace(running, output)
    failed_path(output).unlink(missing_ok=True)  # an older failure of this run is now stale
    print(f"done: {shown(output)}", flush=True)
    return 0


def _keep_failed(running: Path, output: Path) -> Path:
    failed = failed_path(output)
    if running.exists():
        os.replace(running, failed)
    return failed


if __name__ == "__main__":
    sys.exit(main())
