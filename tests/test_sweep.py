"""Resumable sweeps: a failing program is recorded and retried; a SIGKILLed sweep, restarted,
ends with exactly the records of an uninterrupted one and recomputes nothing that finished.

The experiment is :mod:`_sweep_worker` (three programs of two vmapped MNIST runs each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import _sweep_worker as worker
from igrlib import sweep
from igrlib.io.results import Store, run_id

WORKER = Path(worker.__file__).resolve()
ROOT = WORKER.parents[1]
COMPARED = ("id", "experiment", "config", "status", "status_step", "error", "metrics", "history",
            "extra", "group")


class Flaky:
    """The worker's experiment, with one learning rate's program raising while ``fail_lr`` is set."""

    NAME = worker.NAME
    group_key = staticmethod(worker.group_key)
    group_size = staticmethod(worker.group_size)

    def __init__(self, fail_lr: float | None):
        self.fail_lr = fail_lr
        self.ran: list[float] = []

    def run_group(self, configs):
        self.ran.append(configs[0]["learning_rate"])
        if configs[0]["learning_rate"] == self.fail_lr:
            raise RuntimeError("boom: the program ran out of memory")
        return worker.run_group(configs)


def _store(root: Path) -> Store:
    return Store(worker.NAME, worker.PROFILE, root=root)


def _records(store: Store) -> dict[str, dict]:
    return {r["id"]: {k: r[k] for k in COMPARED} for r in store.records()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict]:
    """The tiny sweep run in this process without interruption."""
    store = _store(tmp_path_factory.mktemp("uninterrupted"))
    df = sweep.run(worker, worker.grid(), store=store, verbose=False)
    assert len(df) == 6
    return _records(store)


def test_plan_forms_groups_from_the_whole_grid_in_order():
    groups = sweep.plan(worker, worker.grid())
    assert [[c["learning_rate"] for c in g] for g in groups] == [[0.05] * 2, [0.1] * 2, [0.2] * 2]
    assert [c["seed"] for g in groups for c in g] == [0, 1] * 3


def test_uninterrupted_sweep_stores_every_run(uninterrupted):
    assert {run_id(c) for c in worker.grid()} == set(uninterrupted)
    for rec in uninterrupted.values():
        assert rec["status"] == "ok"
        assert len(rec["history"]["test_acc"]) == 3  # epochs 0, 1, 2
        assert rec["metrics"]["final_test_acc"] == rec["history"]["test_acc"][-1]
        assert rec["extra"]["num_params"] == 784 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10


def test_a_failing_program_is_recorded_and_retried(tmp_path, uninterrupted, capsys):
    store = _store(tmp_path)
    flaky = Flaky(fail_lr=0.1)
    df = sweep.run(flaky, worker.grid(), store=store)
    assert flaky.ran == [0.05, 0.1, 0.2]  # the sweep went on after the failure
    assert "failed: RuntimeError: boom" in capsys.readouterr().out
    statuses = dict(zip(df["learning_rate"], df["status"]))
    assert statuses == {0.05: "ok", 0.1: "failed", 0.2: "ok"}
    failed = [r for r in store.records() if r["status"] == "failed"]
    assert len(failed) == 2
    for rec in failed:
        assert rec["error"] == "RuntimeError: boom: the program ran out of memory"
        assert "Traceback" in rec["extra"]["traceback"] and rec["metrics"] == {}
    written = {f.name: f.stat().st_mtime_ns for f in store.path.glob("*.json")}

    flaky.fail_lr, flaky.ran = None, []
    df = sweep.run(flaky, worker.grid(), store=store)
    assert flaky.ran == [0.1]  # only the failed program runs again
    assert set(df["status"]) == {"ok"} and len(df) == 6
    for f in store.path.glob("*.json"):
        lr = _lr(f)
        assert (f.stat().st_mtime_ns == written[f.name]) is (lr != 0.1), f.name
    assert _records(store) == uninterrupted  # the retried runs match an uninterrupted sweep

    flaky.ran = []
    sweep.run(flaky, worker.grid(), store=store)
    assert flaky.ran == []  # nothing left to do


def _lr(file: Path) -> float:
    return json.loads(file.read_text())["config"]["learning_rate"]


def _worker(root: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(WORKER), str(root), str(log)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkilled_sweep_restarted_ends_with_the_uninterrupted_records(tmp_path, uninterrupted):
    root, log = tmp_path / "results", tmp_path / "ran.log"
    store = _store(root)
    proc = _worker(root, log)
    deadline = time.monotonic() + 600
    while not list(store.path.glob("[0-9a-f]*.json")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the worker wrote no record in 10 minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    survived = {f.name: f.stat().st_mtime_ns for f in store.path.glob("[0-9a-f]*.json")}
    first_run = log.read_text().split()
    assert 1 <= len(survived) < 6 and first_run[0] == "0.05"
    finished = {lr for lr in (0.05, 0.1, 0.2)
                if all(f"{run_id(c)}.json" in survived for c in worker.grid()
                       if c["learning_rate"] == lr)}

    proc = _worker(root, log)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]
    second_run = log.read_text().split()[len(first_run):]
    # a program whose records were all stored is not run again; every other one is
    assert set(second_run) == {str(lr) for lr in (0.05, 0.1, 0.2)} - {str(lr) for lr in finished}
    for name, mtime in survived.items():
        assert (store.path / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    assert _records(store) == uninterrupted


def test_a_store_of_another_name_receives_the_records(tmp_path):
    """``sweep.run(..., store=Store("other", ...))`` writes there, never into the experiment's own store."""
    renamed = Store("renamed_grid", worker.PROFILE, root=tmp_path)
    df = sweep.run(worker, worker.grid()[:2], store=renamed, verbose=False)
    assert len(df) == 2 and set(df["status"]) == {"ok"}
    assert len(list(renamed.records())) == 2 and not list(_store(tmp_path).records())
