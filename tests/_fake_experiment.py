"""A cheap experiment for the executor tests: no training, numbers computed from the config.

A program per ``program`` value, split into groups of ``group_size`` seeds: 2, or 3 in a worker
pinned to a GPU by ``CUDA_VISIBLE_DEVICES`` (so a test sees where the size was decided). Each
group sleeps ``sleep`` seconds, raises if ``fail``, and appends ``pid program seeds device`` to
the file named by ``$IGR_TEST_SWEEP_LOG`` (flushed and synced), so a test can count executions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from igrlib.sweep import Outcome

LOG_ENV = "IGR_TEST_SWEEP_LOG"


def log(line: str) -> None:
    """Append ``line`` to ``$IGR_TEST_SWEEP_LOG`` if set, synced to disk before returning."""
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class Fake:
    """A cheap experiment: ``value = 10 * program + seed``, a three-point curve, a sleep."""

    NAME = "fake"

    def grid(self, profile: str | None = None, seed: Sequence[int] = (0, 1, 2, 3),
             programs: int = 3, sleep: float = 0.0, fail: int | None = None) -> list[dict[str, Any]]:
        return [{"program": p, "seed": s, "sleep": sleep, "fail": p == fail}
                for p in range(programs) for s in seed]

    def group_key(self, config: Mapping[str, Any]) -> int:
        return config["program"]

    def group_size(self, config: Mapping[str, Any]) -> int:
        return 3 if os.environ.get("CUDA_VISIBLE_DEVICES") else 2

    def run_group(self, configs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        device = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
        log(f"{os.getpid()} {configs[0]['program']} {'+'.join(str(c['seed']) for c in configs)} {device}")
        time.sleep(configs[0]["sleep"])
        if configs[0]["fail"]:
            raise RuntimeError(f"boom in program {configs[0]['program']}")
        return [Outcome("ok", metrics={"value": 10 * c["program"] + c["seed"]},
                        history={"curve": [c["seed"] * k / 3 for k in range(3)]},
                        extra={"n": len(configs)}, wall_time_s=0.0)
                for c in configs]


FAKE = Fake()
