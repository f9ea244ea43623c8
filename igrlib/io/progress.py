"""Plain-line progress for long training programs, visible wherever stdout goes.

tqdm draws nothing useful when stderr is not a terminal (papermill, the book build, a log file),
so a run of hours would be silent there. :class:`Progress` prints one self-contained line, to
stdout with ``flush=True``, at most every ``every_s`` seconds and once at the end::

    mnist_mlp width 200: runs 12/16 active, epoch 40/2000 (2.0 %), 1m 05s elapsed, ETA 53m 05s, train_acc=0.912

The ETA assumes the remaining epochs cost what the finished ones did on average:
``eta = elapsed · (total - done) / done`` (seconds), unknown until an epoch is done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from igrlib.config import ConfigError


def format_seconds(seconds: float) -> str:
    """``3725.4`` -> ``"1h 02m 05s"``, ``65`` -> ``"1m 05s"``, ``4.2`` -> ``"4s"`` (rounded down)."""
    s = int(max(seconds, 0.0))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


class Progress:
    """Progress of one training program: ``runs`` runs trained together for ``total`` epochs.

    ``update(done, active, **postfix)`` records that ``done`` of the ``total`` epochs are
    finished and ``active`` runs are still training (the others stopped: diverged, or early
    stopping), with any metrics to show (``train_acc=0.91``); it prints a line when ``every_s``
    seconds have passed since the last one (the first update prints at once). ``close()`` prints
    the final line unless the last update already printed it. ``clock`` (seconds, monotonic) is
    for tests.
    """

    def __init__(self, desc: str, total: int, runs: int, *, every_s: float = 15.0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ConfigError(f"total (epochs) must be an integer >= 1, got {total!r}")
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ConfigError(f"runs must be an integer >= 1, got {runs!r}")
        if not every_s >= 0:
            raise ConfigError(f"every_s must be >= 0 seconds, got {every_s!r}")
        self.desc, self.total, self.runs, self.every_s = desc, total, runs, every_s
        self._stream = stream
        self._clock = clock
        self._start = clock()
        self._last_print: float | None = None
        self._state: tuple[int, int, dict[str, float]] = (0, runs, {})
        self._printed_state = False
        self._closed = False

    def update(self, done: int, active: int, **postfix: float) -> None:
        """``done`` epochs of ``total`` finished, ``active`` runs still training."""
        self._state = (done, active, postfix)
        self._printed_state = False
        now = self._clock()
        if self._last_print is None or now - self._last_print >= self.every_s:
            self._print(now)

    def close(self) -> None:
        """Print the final state (once), whatever the time since the last line."""
        if self._closed:
            return
        self._closed = True
        if not self._printed_state:
            self._print(self._clock())

    def line(self, now: float) -> str:
        """The progress line for the current state at time ``now``."""
        done, active, postfix = self._state
        elapsed = now - self._start
        parts = [f"{self.desc}: runs {active}/{self.runs} active",
                 f"epoch {done}/{self.total} ({100 * done / self.total:.1f} %)",
                 f"{format_seconds(elapsed)} elapsed"]
        if 0 < done < self.total:
            parts.append(f"ETA {format_seconds(elapsed * (self.total - done) / done)}")
        elif done >= self.total:
            parts.append("done")
        parts += [f"{key}={value:.4g}" for key, value in postfix.items()]
        return ", ".join(parts)

    def _print(self, now: float) -> None:
        # stdout, flushed: papermill and jupyter-book capture it cell by cell; stderr is for errors
        print(self.line(now), file=self._stream or sys.stdout, flush=True)
        self._last_print = now
        self._printed_state = True
