#!/usr/bin/env python
"""Fail (exit 1) if a saved figure of a profile is illegible: texts drawn over each other, cut
by a slide's edge, or a font below 18 pt on a slide or 8 pt on paper (``igrlib.io.figures.illegible``).

    scripts/check_figures.py cpu        # make book runs it for the profile it built

Each figure's layout is measured when a chapter saves it, at that profile's data, so this checks
the figures exactly as the build drew them (and as the gallery offers them).
"""

from __future__ import annotations

import argparse
import json
import sys

from igrlib.config import PROFILES
from igrlib.io import figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", choices=PROFILES)
    profile = parser.parse_args(argv).profile
    index = figures.read_index(profile)
    problems = figures.illegible(profile)
    if problems:
        print(f"illegible figures at profile {profile} (figures/{profile}/index.json):", file=sys.stderr)
        print(json.dumps(problems, indent=1, ensure_ascii=False), file=sys.stderr)
        return 1
    print(f"{len(index)} figures at profile {profile}, both variants: no text over text, slides legible.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
