"""Sweeps through executors: the same records from every back-end, leases that let two drivers
share a grid, jobs killed mid-program, a driver killed mid-sweep, progress, the command line.

Most tests use :mod:`_fake_experiment` (no training: cheap worker processes); the identity test
across back-ends trains the real tiny MNIST experiment of :mod:`_sweep_worker`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import _fake_experiment as fake_mod
import _sweep_worker as tiny
from igrlib import executors, leases, sweep
from igrlib.config import ConfigError
from igrlib.io.results import Store, run_id

FAKE = fake_mod.FAKE
WORKER = Path(tiny.__file__).resolve()
ROOT = WORKER.parents[1]
COMPARED = ("id", "experiment", "config", "status", "status_step", "error", "metrics", "history",
            "extra", "group")


def _records(store: Store) -> dict[str, dict]:
    return {r["id"]: {k: r[k] for k in COMPARED} for r in store.records()}


def _store(root: Path, experiment=FAKE) -> Store:
    return Store(experiment.NAME, "smoke", root=root)


def _groups_run(log: Path) -> list[tuple[str, str]]:
    """``(program, seeds)`` of every logged run_group call of the fake experiment."""
    if not log.exists():
        return []
    return [tuple(line.split()[1:3]) for line in log.read_text().splitlines()]


@pytest.fixture
def log(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "ran.log"
    monkeypatch.setenv(fake_mod.LOG_ENV, str(path))
    return path


@pytest.fixture(scope="module")
def fake_inline(tmp_path_factory) -> dict[str, dict]:
    """The fake grid (3 programs × 4 seeds, groups of 2) run in this process."""
    store = _store(tmp_path_factory.mktemp("inline"))
    sweep.run(FAKE, FAKE.grid(), store=store, verbose=False, executor="inline")
    return _records(store)


# ------------------------------------------------------------------------ planning, settings


class NoSizeHere:
    """An experiment whose group_size must not be asked by the driver."""

    NAME = "nosize"
    group_key = staticmethod(FAKE.group_key)

    def group_size(self, config):
        raise AssertionError("the driver asked group_size: only a worker knows its device")


def test_plan_cuts_programs_by_group_key_alone_in_grid_order():
    grid = FAKE.grid(programs=2, seed=(0, 1, 2))
    programs = sweep.plan(NoSizeHere(), list(reversed(grid)))
    assert [[(c["program"], c["seed"]) for c in p] for p in programs] == [
        [(1, 2), (1, 1), (1, 0)], [(0, 2), (0, 1), (0, 0)]]
    assert executors.program_id(programs[0]) == run_id({"runs": [run_id(c) for c in programs[0]]})


def test_the_worker_splits_a_program_by_its_own_group_size(monkeypatch):
    program = FAKE.grid(programs=1, seed=range(5))
    assert [len(g) for g in executors.split(FAKE, program)] == [2, 2, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a worker pinned to a GPU batches more
    assert [len(g) for g in executors.split(FAKE, program)] == [3, 2]


def test_settings_read_the_environment_and_refuse_bad_values(monkeypatch):
    for var in (executors.EXECUTOR_ENV, executors.WORKERS_ENV, executors.DEVICES_ENV):
        monkeypatch.delenv(var, raising=False)
    assert executors.settings() == ("inline", 1, None)
    assert executors.settings(workers=3) == ("process", 3, None)
    assert executors.settings(devices="0, 1") == ("process", 2, ["0", "1"])
    monkeypatch.setenv(executors.EXECUTOR_ENV, "dask")
    monkeypatch.setenv(executors.WORKERS_ENV, "4")
    assert executors.settings() == ("dask", 4, None)
    assert executors.settings("inline", 1) == ("inline", 1, None)  # arguments win
    monkeypatch.setenv(executors.WORKERS_ENV, "two")
    with pytest.raises(ConfigError, match="IGR_WORKERS"):
        executors.settings()
    with pytest.raises(ConfigError, match="executor"):
        executors.settings("slurm", 1)
    with pytest.raises(ConfigError, match="workers"):
        executors.settings("process", 0)
    with pytest.raises(ConfigError, match="process"):
        executors.settings("dask", 1, devices=["0"])
    with pytest.raises(ConfigError, match="submit"):
        executors.settings(object(), 1)


def test_bad_executor_fails_before_any_compute(tmp_path, log):
    with pytest.raises(ConfigError, match="executor"):
        sweep.run(FAKE, FAKE.grid(), store=_store(tmp_path), executor="ray")
    with pytest.raises(ConfigError, match="retries"):
        sweep.run(FAKE, FAKE.grid(), store=_store(tmp_path), retries=-1)
    with pytest.raises(ConfigError, match="import"):  # a worker could not import it
        sweep.run(NoSizeHere(), FAKE.grid(), store=_store(tmp_path), executor="process")
    assert not log.exists() and not _store(tmp_path).path.exists()


def test_references_name_modules_and_module_attributes():
    assert executors.reference(tiny) == "_sweep_worker"
    assert executors.reference(FAKE) == "_fake_experiment:FAKE"
    assert executors.resolve("_fake_experiment:FAKE") is FAKE
    assert executors.import_root("_fake_experiment:FAKE") == str(WORKER.parent)
    assert executors.import_root("igrlib.sweep") == str(ROOT)
    assert executors.reference(executors.resolve("igrlib.experiments.egr_mlp:COST")) == \
        "igrlib.experiments.egr_mlp:COST"


def test_resources_come_from_the_profile_with_overrides():
    assert executors.resources("paper")["gpus_per_node"] == 1
    req = executors.resources("smoke", timeout_min=5, slurm_partition="gpu", mem_gb=None)
    assert req == {**executors.RESOURCES["smoke"], "timeout_min": 5, "slurm_partition": "gpu"}


# ------------------------------------------------------------------------------------ leases


def test_a_lease_is_exclusive_renewed_and_released(tmp_path):
    lease = leases.acquire(tmp_path, "p1", ttl=0.3, job_id="42")
    assert lease is not None and leases.acquire(tmp_path, "p1", ttl=0.3) is None
    held = leases.holder(tmp_path, "p1")
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname() and held["job_id"] == "42"
    first = held["expires"]
    time.sleep(0.5)  # longer than the ttl: only renewal keeps it
    assert leases.holder(tmp_path, "p1")["expires"] > first
    assert leases.acquire(tmp_path, "p1", ttl=0.3) is None
    lease.release()
    assert leases.holder(tmp_path, "p1") is None and not list(tmp_path.iterdir())


def _foreign(folder: Path, program: str, gen: int, expires: float, pid: int = 1,
             host: str = "elsewhere") -> None:
    (folder / f"{program}.{gen}.lease").write_text(json.dumps({"host": host, "pid": pid,
                                                               "expires": expires}))


def test_an_expired_or_dead_lease_is_taken_over(tmp_path):
    _foreign(tmp_path, "p", 0, time.time() + 60)  # live, on another host
    assert leases.acquire(tmp_path, "p") is None
    _foreign(tmp_path, "p", 1, time.time() - 1)  # the newest generation expired
    lease = leases.acquire(tmp_path, "p")
    assert lease is not None and lease.path.name == "p.2.lease"
    lease.release()
    assert not list(tmp_path.glob("p.*"))  # older generations of dead owners go too
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    _foreign(tmp_path, "q", 0, time.time() + 60, pid=int(dead), host=socket.gethostname())
    with leases.acquire(tmp_path, "q") as taken:  # its process is gone: free at once
        assert taken.path.name == "q.1.lease"
    (tmp_path / "r.0.lease").write_text("")  # caught between creation and its first write
    assert leases.acquire(tmp_path, "r") is None


def test_of_many_concurrent_takers_exactly_one_wins(tmp_path):
    _foreign(tmp_path, "p", 3, time.time() - 1)
    won, barrier = [], threading.Barrier(8)

    def take():
        barrier.wait()
        won.append(leases.acquire(tmp_path, "p", ttl=30))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [w for w in won if w is not None]
    assert len(winners) == 1 and winners[0].path.name == "p.4.lease"
    winners[0].release()


# ------------------------------------------------------------------- the same records anywhere


def test_inline_sweep_writes_groups_and_runs_each_group_once(fake_inline, tmp_path, log, capsys):
    assert len(fake_inline) == 12 and {r["status"] for r in fake_inline.values()} == {"ok"}
    for rec in fake_inline.values():
        assert rec["metrics"]["value"] == 10 * rec["config"]["program"] + rec["config"]["seed"]
        assert len(rec["group"]) == 2 and rec["id"] in rec["group"]
    store = _store(tmp_path)
    sweep.run(FAKE, FAKE.grid(), store=store, executor="inline", progress_every=0)
    assert _records(store) == fake_inline
    assert sorted(_groups_run(log)) == sorted((str(p), s) for p in range(3) for s in ("0+1", "2+3"))
    out = capsys.readouterr().out
    assert "programs: 3/3 done, 0 running, 0 failed; runs 12/12; ETA 0 s" in out
    assert not list((store.path / "leases").iterdir())


@pytest.mark.parametrize("executor", ["process", "submitit", "dask"])
def test_every_executor_stores_what_the_inline_sweep_stores(executor, tmp_path, log, fake_inline):
    """The fake grid through each back-end, plus one failing program: its error, traceback and
    log path are in its records, and only it runs again next time."""
    store = _store(tmp_path)
    options = {"cluster": "local"} if executor == "submitit" else {}
    grid = FAKE.grid() + FAKE.grid(programs=4, fail=3)[-4:]
    df = sweep.run(FAKE, grid, store=store, executor=executor, workers=2, verbose=False, **options)
    assert len(df) == 16
    records = _records(store)
    failed = {i: r for i, r in records.items() if r["status"] == "failed"}
    assert {i: r for i, r in records.items() if i not in failed} == fake_inline
    assert len(failed) == 4
    for i in failed:
        rec = store.get(next(c for c in grid if run_id(c) == i))
        assert rec["error"] == "RuntimeError: boom in program 3"
        assert "Traceback" in rec["extra"]["traceback"]
        assert "boom in program 3" in Path(rec["extra"]["log"]).read_text()
    pids = {line.split()[0] for line in log.read_text().splitlines()}
    assert str(os.getpid()) not in pids  # the driver trained nothing itself
    log.unlink()
    sweep.run(FAKE, grid, store=store, executor="inline", verbose=False)
    assert sorted(_groups_run(log)) == [("3", "0+1"), ("3", "2+3")]


@pytest.mark.slow
def test_a_real_program_is_identical_in_process_and_in_workers(tmp_path_factory):
    """One program of the tiny MNIST experiment (two vmapped runs) trained in this process, in a
    process pool, as a submitit job and on a Dask worker: the same records, bit for bit."""
    grid = [c for c in tiny.grid() if c["learning_rate"] == 0.05]
    stores = {}
    for executor in ("inline", "process", "submitit", "dask"):
        stores[executor] = _store(tmp_path_factory.mktemp(executor), tiny)
        sweep.run(tiny, grid, store=stores[executor], executor=executor, workers=1,
                  verbose=False, **({"cluster": "local"} if executor == "submitit" else {}))
    expected = _records(stores["inline"])
    assert len(expected) == 2 and {r["status"] for r in expected.values()} == {"ok"}
    for executor, store in stores.items():
        assert _records(store) == expected, executor


@pytest.mark.skipif(os.cpu_count() < 2, reason="pins two workers")
def test_one_worker_per_device_each_pinned(tmp_path, log):
    store = _store(tmp_path)
    sweep.run(FAKE, FAKE.grid(programs=2), store=store, devices=["7", "8"], verbose=False)
    lines = [line.split() for line in log.read_text().splitlines()]
    by_pid = {pid: device for pid, _, _, device in lines}
    assert set(by_pid.values()) <= {"7", "8"} and len(by_pid) == len(set(by_pid.values()))
    # group sizes came from the pinned worker (3 seeds per group), not from the driver (2)
    assert sorted(seeds for _, _, seeds, _ in lines) == ["0+1+2", "0+1+2", "3", "3"]
    assert {len(r["group"]) for r in _records(store).values()} == {1, 3}


# --------------------------------------------------------------------------------- failures


def _wait(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _final(store: Store) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in store.path.glob("[0-9a-f]*.json")
            if json.loads(f.read_text())["status"] == "ok"}


def test_a_worker_killed_mid_program_leaves_its_runs_to_the_next_sweep(tmp_path, log):
    """SIGKILL the worker of a program after its first group: the pool breaks, the driver records
    the death, and the next sweep redoes exactly the runs without a final record."""
    store = _store(tmp_path)
    grid = FAKE.grid(sleep=1.0)
    done: dict = {}
    driver = threading.Thread(target=lambda: done.setdefault("df", sweep.run(
        FAKE, grid, store=store, executor="process", workers=2, retries=0, verbose=False)))
    driver.start()

    def first_group_stored() -> int | None:
        """The program whose first group's two records are stored, if any."""
        stored = Counter(json.loads(f.read_text())["config"]["program"]
                         for f in store.path.glob("[0-9a-f]*.json"))
        return next((p for p, n in stored.items() if n >= 2), None)

    _wait(lambda: first_group_stored() is not None, "a first group")
    program = executors.program_id([c for c in grid if c["program"] == first_group_stored()])
    holder = leases.holder(store.path / "leases", program)
    assert holder is not None, "the program finished before it could be killed"
    os.kill(holder["pid"], signal.SIGKILL)
    driver.join(timeout=120)
    assert not driver.is_alive()
    statuses = Counter(done["df"]["status"])
    assert statuses["failed"] >= 2 and statuses["ok"] >= 2  # its first group survived
    dead = next(r for r in store.records() if r["status"] == "failed")
    assert dead["error"].startswith("the job died: BrokenProcessPool")
    assert dead["provenance"]["device"] is None  # the driver did not start JAX to write it
    survived = _final(store)
    log.unlink()
    sweep.run(FAKE, grid, store=store, executor="inline", verbose=False)
    redone = {(str(c["program"]), c["seed"]) for c in grid if f"{run_id(c)}.json" not in survived}
    assert {(p, int(s)) for p, seeds in _groups_run(log) for s in seeds.split("+")} == redone
    for name, mtime in survived.items():
        assert (store.path / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    records = list(store.records())
    assert len(records) == 12 and {r["status"] for r in records} == {"ok"}
    assert all(r["metrics"]["value"] == 10 * r["config"]["program"] + r["config"]["seed"]
               for r in records)


def test_a_dead_job_is_resubmitted(tmp_path, log):
    store = _store(tmp_path)
    grid = FAKE.grid(sleep=0.4, programs=1)
    done: dict = {}
    driver = threading.Thread(target=lambda: done.setdefault("df", sweep.run(
        FAKE, grid, store=store, executor="process", workers=1, retries=1, verbose=False)))
    driver.start()
    program = executors.program_id(grid)
    _wait(log.exists, "the first group to start")
    os.kill(leases.holder(store.path / "leases", program)["pid"], signal.SIGKILL)
    driver.join(timeout=120)
    assert set(done["df"]["status"]) == {"ok"} and len(done["df"]) == 4
    assert len({line.split()[0] for line in log.read_text().splitlines()}) == 2  # two workers


def _driver(root: Path, log: Path, executor: str, workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, fake_mod.LOG_ENV: str(log),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(WORKER), str(root), str(log), "fake", executor,
                             str(workers)], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_killed_driver_loses_no_finished_record(tmp_path, fake_inline):
    root, log = tmp_path / "results", tmp_path / "ran.log"
    store = _store(root)
    proc = _driver(root, log, "process", 2)
    _wait(lambda: len(list(store.path.glob("[0-9a-f]*.json"))) >= 2 or proc.poll() is not None,
          "two records")
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its workers wrote the records
    proc.wait(timeout=60)
    kept = {f.name: f.read_text() for f in store.path.glob("[0-9a-f]*.json")}
    os.killpg(proc.pid, signal.SIGKILL)  # then its orphaned workers, as a lost node would
    assert kept and all(json.loads(text)["status"] == "ok" for text in kept.values())
    for name, text in kept.items():
        assert (store.path / name).read_text() == text
    sweep.run(FAKE, FAKE.grid(sleep=0.5), store=store, executor="inline", verbose=False)
    records = _records(store)
    assert len(records) == 12 and {r["status"] for r in records.values()} == {"ok"}
    for name, text in kept.items():
        assert (store.path / name).read_text() == text


def test_two_drivers_on_one_grid_run_each_group_once(tmp_path):
    """The second driver starts while the first holds a program: it skips what is held, runs
    what is free, waits for the rest, and both end with the whole grid."""
    root, log = tmp_path / "results", tmp_path / "ran.log"
    first = _driver(root, log, "inline")
    _wait(lambda: any((_store(root).path / "leases").glob("*.lease")), "the first lease")
    second = _driver(root, log, "inline")
    for proc in (first, second):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out.decode()[-3000:]
    runs = Counter(_groups_run(log))
    assert runs == Counter({(str(p), s): 1 for p in range(3) for s in ("0+1", "2+3")})
    records = _records(_store(root))
    assert len(records) == 12 and {r["status"] for r in records.values()} == {"ok"}


# ------------------------------------------------------------------------------ command line


def test_command_line_dry_run_plans_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IGR_RESULTS_DIR", str(tmp_path))
    assert sweep.main(["mnist_mlp", "--profile", "smoke", "--executor", "submitit",
                       "--gpus-per-job", "1", "--partition", "gpu", "--time-min", "30",
                       "--seeds", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "mnist_mlp [smoke]" in out and "3 runs in 1 programs; executor submitit" in out
    assert "'gpus_per_node': 1" in out and "'slurm_partition': 'gpu'" in out
    assert "'timeout_min': 30" in out and "program 1 " in out and "3 runs, 0 done" in out
    assert not any(tmp_path.rglob("*.json"))
    with pytest.raises(ConfigError, match="unknown experiment"):
        sweep.main(["no_such_experiment", "--dry-run"])


def test_command_line_fills_the_store(tmp_path, monkeypatch, log, fake_inline, capsys):
    monkeypatch.setenv("IGR_RESULTS_DIR", str(tmp_path))
    assert sweep.main(["_fake_experiment:FAKE", "--profile", "smoke"]) == 0
    assert _records(_store(tmp_path.resolve())) == fake_inline
    assert "12 of 12 runs final" in capsys.readouterr().out
