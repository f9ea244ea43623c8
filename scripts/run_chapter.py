#!/usr/bin/env python
"""Execute one chapter of the book at one profile with papermill (``make run`` calls this).

    scripts/run_chapter.py mnist_igr --profile paper -p seeds 3 -p widths "[50, 200]"

papermill reads ``.ipynb`` only, so the chapter's MyST source (``book/<chapter>.md``) is first
converted with jupytext into a temporary folder. ``profile`` and every ``-p NAME VALUE`` are
injected after the chapter's ``parameters`` cell; each VALUE is read as YAML (``3`` is an int,
``0.5`` a float, ``[1, 2]`` a list, ``null`` None, anything else a string). Names must be
parameters the chapter declares, so a typo fails before any cell runs. The executed notebook is
written to ``build/runs/<chapter>-<profile>.ipynb`` as it runs; the chapter's results go to the
results store (``data/results/<profile>/``), where a later ``make book`` at that profile finds
them, and its figures to ``figures/``.

Exit status: 0 on success, 1 if a cell failed (the output notebook shows where), 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import jupytext
import papermill
import yaml

from book_toc import BOOK, ROOT, chapters  # scripts/ is on sys.path when run as a script
from igrlib.config import PROFILES

RUNS = ROOT / "build" / "runs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", help="a chapter of _toc.yml, e.g. mnist_igr (or book/mnist_igr.md)")
    parser.add_argument("--profile", required=True, choices=PROFILES)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="override a parameter (VALUE read as YAML)")
    parser.add_argument("--output", type=Path, default=None,
                        help="executed notebook (default: build/runs/<chapter>-<profile>.ipynb)")
    args = parser.parse_args(argv)
    args.chapter = Path(args.chapter).stem
    known = chapters()
    if args.chapter not in known:
        parser.error(f"unknown chapter {args.chapter!r}; chapters: {', '.join(known)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill's cell progress
    overrides = {name: yaml.safe_load(value) for name, value in args.parameter}
    output = (args.output or RUNS / f"{args.chapter}-{args.profile}.ipynb").resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
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
        print(f"running {args.chapter} at profile {args.profile} with {overrides or 'defaults'}"
              f" -> {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
        try:
            papermill.execute_notebook(
                str(source), str(output), parameters={"profile": args.profile, **overrides},
                cwd=str(BOOK), kernel_name="python3", log_output=True, progress_bar=False,
            )
        except papermill.PapermillExecutionError as err:
            print(f"error: {err.ename}: {err.evalue} (see {output})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
