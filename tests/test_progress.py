"""igrlib.io.progress: plain lines at most every `every_s` seconds and at the end (fake clock)."""

from __future__ import annotations

import io

import pytest

from igrlib.config import ConfigError
from igrlib.io.progress import Progress, format_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(every_s: float = 15.0) -> tuple[Progress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return Progress("mnist w200", total=100, runs=16, every_s=every_s, stream=out, clock=clock), out, clock


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_first_update_prints_then_throttles_then_close_prints_the_end() -> None:
    progress, out, clock = make()
    clock.now += 2
    progress.update(1, 16, train_acc=0.5)
    assert lines(out) == ["mnist w200: runs 16/16 active, epoch 1/100 (1.0 %), 2s elapsed, "
                          "ETA 3m 18s, train_acc=0.5"]
    for epoch in range(2, 8):          # 2 s per epoch: 12 s after the first line, no new line
        clock.now += 2
        progress.update(epoch, 16)
    assert len(lines(out)) == 1
    clock.now += 4                     # 16 s since the last line
    progress.update(8, 12, train_acc=0.91234)
    assert lines(out)[-1] == ("mnist w200: runs 12/16 active, epoch 8/100 (8.0 %), 18s elapsed, "
                              "ETA 3m 27s, train_acc=0.9123")
    clock.now += 1
    progress.update(9, 12)
    progress.close()
    progress.close()                   # idempotent
    assert lines(out)[-1] == "mnist w200: runs 12/16 active, epoch 9/100 (9.0 %), 19s elapsed, ETA 3m 12s"
    assert len(lines(out)) == 3


def test_close_does_not_repeat_a_line_just_printed_and_says_done() -> None:
    progress, out, clock = make(every_s=0.0)
    clock.now += 3725
    progress.update(100, 0)
    progress.close()
    assert lines(out) == ["mnist w200: runs 0/16 active, epoch 100/100 (100.0 %), 1h 02m 05s elapsed, done"]


def test_prints_to_stdout_without_a_tty(capsys) -> None:
    progress = Progress("p", total=2, runs=1, every_s=0.0)
    progress.update(1, 1)
    progress.close()
    assert capsys.readouterr().out.startswith("p: runs 1/1 active, epoch 1/2 (50.0 %), ")


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (4.9, "4s"), (65, "1m 05s"), (3600, "1h 00m 00s")])
def test_format_seconds(seconds, text) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize("kwargs", [dict(total=0, runs=1), dict(total=2, runs=0),
                                    dict(total=2.0, runs=1), dict(total=2, runs=1, every_s=-1)])
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ConfigError):
        Progress("x", **kwargs)
