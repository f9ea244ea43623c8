"""Section 6: the book's execution time per chapter at each profile, read from its last builds.

``make book`` executes the chapters through myst-nb's jupyter-cache, one cache per profile
(``<build>/.jupyter_cache/<profile>``, see ``book/_ext/igr_book.py``); each cached notebook
records ``execution_seconds``. Nothing is executed here: a profile never built has no times.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from igrlib.io import paths

PROFILES = ("smoke", "cpu")


def chapter_times(cache: Path) -> dict[str, dict[str, Any]]:
    """``{chapter: {"seconds", "executed"}}`` from one jupyter-cache folder, the latest record
    of each chapter (seconds of execution; the date as ISO 8601)."""
    from jupyter_cache import get_cache  # part of the book's tools, not igrlib's

    latest: dict[str, Any] = {}
    for record in get_cache(str(cache)).list_cache_records():
        chapter = Path(record.uri).stem
        if chapter not in latest or record.created > latest[chapter].created:
            latest[chapter] = record
    return {chapter: {"seconds": r.data.get("execution_seconds"), "executed": r.created.isoformat()}
            for chapter, r in sorted(latest.items())}


def run(build_dir: Path | None = None, profiles: Sequence[str] = PROFILES) -> dict[str, Any]:
    """Chapter times of every profile whose cache exists under ``build_dir`` (default
    ``<project>/_build``); ``None`` for a profile never built there."""
    build_dir = Path(build_dir) if build_dir is not None else paths.PROJECT_ROOT / "_build"
    times: dict[str, Any] = {}
    for profile in profiles:
        cache = build_dir / ".jupyter_cache" / profile
        times[profile] = chapter_times(cache) if (cache / "global.db").exists() else None
    return {
        "build_dir": str(build_dir),
        "profiles": times,
        "note": ("times recorded by the last `make book` at each profile; "
                 "a profile shown as null was not built here: `IGR_PROFILE=<profile> make book` fills it"),
    }
