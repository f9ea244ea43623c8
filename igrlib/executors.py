"""Where a sweep's programs run: this process, local processes, Slurm (submitit), or Dask.

A *program* is every config of a grid that shares the experiment's ``group_key``. A *job* runs
one program; it gets only plain data (:class:`Job`: the experiment's import reference, the
profile, the store's root, the configs) and never JAX state. :func:`run_program`, on the
worker, imports the experiment, takes the program's lease (:mod:`igrlib.leases`), splits the
program into groups of ``group_size`` runs for the device it actually has, trains each group
whose records are not all final, and WRITES ITS OWN RECORDS. The driver only collects the
small status dicts, so a driver that dies loses no finished run.

Back-ends (:func:`open_backend`):

* ``inline``: this process, one program after another (the default);
* ``process``: a :class:`~concurrent.futures.ProcessPoolExecutor` of ``workers`` processes with
  the *spawn* start method (a forked JAX runtime can deadlock); with ``devices`` (e.g.
  ``["0", "1"]``) one worker per GPU, each pinned by ``CUDA_VISIBLE_DEVICES`` before it imports
  JAX;
* ``submitit``: one Slurm job per program via ``submitit.AutoExecutor`` with the profile's
  requests (:data:`RESOURCES`); a preempted or timed-out job requeues itself (submitit
  checkpointing, at most ``max_num_timeout`` times) and redoes only its missing runs;
  ``cluster="local"`` runs the same jobs as local processes (what the tests use);
* ``dask``: a ``distributed`` cluster (``scheduler`` address, else a local cluster of
  ``workers`` processes), chosen over Ray because it is pure Python, installs in seconds from
  PyPI and starts a local cluster in about a second, and a Slurm site can reach it through
  dask-jobqueue;
* any :class:`concurrent.futures.Executor` the caller made.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
import types
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from igrlib import leases
from igrlib.config import ConfigError, check_choice, resolve_profile
from igrlib.io.results import FINAL_STATUSES, Store, run_id

KINDS = ("inline", "process", "submitit", "dask")
EXECUTOR_ENV, WORKERS_ENV, DEVICES_ENV = "IGR_EXECUTOR", "IGR_WORKERS", "IGR_DEVICES"

#: Per-profile requests of one submitit job (one program): wall-clock minutes, GPUs, CPU cores,
#: memory in GB. ``paper``: the widest MNIST program (21 runs of 2,000 epochs at width 1600)
#: and a CIFAR-10 ResNet-18 run each fit in 12 h on one GPU by our step costs.
RESOURCES: dict[str, dict[str, Any]] = {
    "smoke": dict(timeout_min=15, gpus_per_node=0, cpus_per_task=2, mem_gb=4),
    "cpu": dict(timeout_min=120, gpus_per_node=0, cpus_per_task=4, mem_gb=8),
    "paper": dict(timeout_min=720, gpus_per_node=1, cpus_per_task=8, mem_gb=32),
}


# ------------------------------------------------------------------------ experiment references


def reference(experiment: Any) -> str:
    """An import reference to ``experiment``: ``"package.module"`` for a module,
    ``"package.module:ATTR"`` for an object that a loaded module holds as ``ATTR``."""
    if isinstance(experiment, str):
        return experiment
    if isinstance(experiment, types.ModuleType):
        if experiment.__name__ == "__main__":
            raise ConfigError("an experiment run as a script (__main__) cannot be imported by a "
                              "worker; import it as a module instead")
        return experiment.__name__
    owners = [type(experiment).__module__] + [m for m in list(sys.modules)
                                              if m.startswith("igrlib.experiments")]
    for name in owners:
        module = sys.modules.get(name)
        for attr, value in vars(module).items() if module is not None else ():
            if value is experiment and name != "__main__":
                return f"{name}:{attr}"
    raise ConfigError(f"experiment {experiment!r} is not a module or a module attribute, so a "
                      "worker cannot import it; run it with executor='inline'")


def import_root(ref: str) -> str | None:
    """The folder to put on a worker's ``sys.path`` so that ``ref`` imports: the parent of the
    reference's top-level package (None for a module without a file)."""
    module = sys.modules.get(ref.partition(":")[0])
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    depth = ref.partition(":")[0].count(".") + (Path(file).name == "__init__.py")
    return str(Path(file).resolve().parents[depth])


def resolve(ref: str, path: str | None = None) -> Any:
    """The experiment that :func:`reference` named, imported in this process; ``path`` is
    appended to ``sys.path`` when missing (never ahead of installed packages)."""
    if path and path not in sys.path:
        sys.path.append(path)
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


# --------------------------------------------------------------------------- the worker's side


@dataclass
class Job:
    """Everything a worker needs to run one program (plain data: it is pickled to the worker)."""

    experiment: str
    profile: str
    root: str
    program: str
    configs: list[dict[str, Any]]
    path: str | None = None
    lease_ttl: float = leases.DEFAULT_TTL_S
    job_id: str | None = None
    log_dir: str | None = None
    #: the store's name when it is not the experiment's (``sweep.run(..., store=...)``)
    store: str | None = None


def program_id(configs: Sequence[Mapping[str, Any]]) -> str:
    """First 16 hex digits of the run id of the program's run ids, in grid order."""
    return run_id({"runs": [run_id(c) for c in configs]})


def split(experiment: Any, configs: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Cut one program into the groups trained as one vmapped call: consecutive chunks of
    ``experiment.group_size`` runs, decided here, on the device this process has."""
    size = max(1, int(experiment.group_size(configs[0])))
    return [list(configs[i:i + size]) for i in range(0, len(configs), size)]


def _done(store: Store, config: Mapping[str, Any]) -> bool:
    record = store.get(config)
    return record is not None and record["status"] in FINAL_STATUSES


def run_program(job: Job | Mapping[str, Any], experiment: Any = None) -> dict[str, Any]:
    """Run one program on this worker and write its records; return a small status dict.

    ``state`` is ``"held"`` (a live worker holds the lease: nothing ran), ``"done"`` (every
    record final, whether found or made here) or ``"failed"`` (a group raised; its runs are
    stored as ``failed`` with the error, the traceback and the log path, retried next sweep).
    ``ran`` counts the runs trained here, ``groups`` the groups that ran.
    """
    job = Job(**job) if isinstance(job, Mapping) else job
    experiment = experiment if experiment is not None else resolve(job.experiment, job.path)
    store = Store(job.store or experiment.NAME, job.profile, root=job.root)
    status: dict[str, Any] = {"program": job.program, "state": "done", "ran": 0, "groups": 0,
                              "failed": 0, "error": None, "seconds": 0.0,
                              "worker": f"{os.uname().nodename}:{os.getpid()}"}
    if all(_done(store, c) for c in job.configs):
        return status
    lease = leases.acquire(store.path / "leases", job.program, job.lease_ttl, job.job_id)
    if lease is None:
        status.update(state="held", holder=leases.holder(store.path / "leases", job.program,
                                                           job.lease_ttl))
        return status
    start = time.perf_counter()
    with lease:
        for group in split(experiment, job.configs):
            if all(_done(store, c) for c in group):  # finished before a crash, or by another
                continue
            ids = [run_id(c) for c in group]
            status["groups"] += 1
            try:
                outcomes = experiment.run_group(group)
            except Exception as err:  # noqa: BLE001 - one failing group must not stop the program
                message = "".join(traceback.format_exception_only(type(err), err)).strip()
                extra = {"traceback": traceback.format_exc()}
                if job.log_dir:
                    extra["log"] = _log_failure(Path(job.log_dir), job, extra["traceback"])
                for config in group:
                    if not _done(store, config):
                        store.put(config, status="failed", error=message, extra=extra, group=ids)
                status.update(state="failed", error=message, failed=status["failed"] + len(group))
                continue
            for config, outcome in zip(group, outcomes, strict=True):
                if not _done(store, config):
                    store.put(config, status=outcome.status, metrics=outcome.metrics,
                              history=outcome.history, extra=outcome.extra,
                              status_step=outcome.status_step, wall_time_s=outcome.wall_time_s,
                              group=ids)
            status["ran"] += len(group)
    status["seconds"] = time.perf_counter() - start
    return status


def _log_failure(folder: Path, job: Job, text: str) -> str:
    """Append a failure's traceback to ``<folder>/<program>.log``; return the log's path."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{job.program}.log"
    with open(log, "a") as handle:
        handle.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {os.uname().nodename} "
                     f"pid {os.getpid()} job {job.job_id}\n{text}\n")
    return str(log)


def _pin_device(devices: Any) -> None:
    """ProcessPool initializer: take one device id from the queue and make it the only GPU
    this worker sees (before JAX is imported here)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices.get()


try:  # submitit's checkpointing hook, when the cluster extra is installed
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - only without the extra
    _Checkpointable = object


class ProgramJob(_Checkpointable):
    """A submitit job running :func:`run_program`. On preemption or timeout submitit calls
    :meth:`checkpoint` (inherited), which requeues the same job: finished runs are in the
    store, so the requeued job redoes only the missing ones."""

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        import submitit

        job = {**job, "job_id": str(submitit.JobEnvironment().job_id)}
        return run_program(job)


# ---------------------------------------------------------------------------- the driver's side


@dataclass
class Backend:
    """A running back-end: :meth:`submit` returns a handle with ``done()`` and ``result()``."""

    kind: str
    executor: Any = None
    workers: int = 1
    devices: list[str] | None = None
    owned: bool = True
    log_dir: str | None = None
    _cluster: Any = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)

    def submit(self, job: Job, experiment: Any = None) -> Any:
        if self.kind == "inline":
            future: Future = Future()
            try:
                future.set_result(run_program(job, experiment))
            except Exception as err:  # noqa: BLE001 - reported like a job that died
                future.set_exception(err)
            return future
        if self.kind == "submitit":
            return self.executor.submit(ProgramJob(), asdict(job))
        return self.executor.submit(run_program, asdict(job))

    def log_path(self, handle: Any) -> str | None:
        """The job's log file where the back-end keeps one (submitit's stderr)."""
        paths = getattr(handle, "paths", None)
        return str(paths.stderr) if paths is not None else None

    def restartable(self, err: BaseException) -> bool:
        """Whether ``err`` broke the whole pool and a fresh one can take the jobs again."""
        from concurrent.futures import BrokenExecutor

        return self.owned and self.kind == "process" and isinstance(err, BrokenExecutor)

    def restart(self) -> None:
        """Replace a broken process pool by a fresh one."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = _process_pool(self.workers, self.devices)

    def close(self) -> None:
        if not self.owned:
            return
        if self.kind in ("process", "dask"):
            self.executor.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _process_pool(workers: int, devices: Sequence[str] | None) -> ProcessPoolExecutor:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    if not devices:
        return ProcessPoolExecutor(max_workers=workers, mp_context=context)
    queue = context.Queue()
    for device in devices:
        queue.put(str(device))
    return ProcessPoolExecutor(max_workers=len(devices), mp_context=context,
                               initializer=_pin_device, initargs=(queue,))


def resources(profile: str | None, **overrides: Any) -> dict[str, Any]:
    """The submitit requests of ``profile`` (:data:`RESOURCES`) with ``overrides`` (None values
    ignored): ``timeout_min``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``,
    ``slurm_partition``."""
    out = dict(RESOURCES[resolve_profile(profile)])
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def settings(executor: Any = None, workers: int | None = None,
             devices: Sequence[str] | str | None = None) -> tuple[Any, int, list[str] | None]:
    """``(executor, workers, devices)`` with the environment's defaults filled in:
    ``$IGR_EXECUTOR`` (else ``inline``), ``$IGR_WORKERS`` (else 1; ``workers > 1`` with no
    executor named means ``process``) and ``$IGR_DEVICES`` (comma-separated GPU ids, one
    pinned worker each). Bad values raise :class:`ConfigError` here, before any compute."""
    if executor is None:
        executor = os.environ.get(EXECUTOR_ENV) or None
    if workers is None:
        text = os.environ.get(WORKERS_ENV) or "1"
        if not text.isdigit():
            raise ConfigError(f"{WORKERS_ENV} must be a positive integer, got {text!r}")
        workers = int(text)
    if devices is None:
        devices = os.environ.get(DEVICES_ENV) or None
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if executor is None:
        executor = "process" if workers > 1 or devices else "inline"
    if isinstance(executor, str):
        check_choice(executor, KINDS, "executor")
        if devices and executor != "process":
            raise ConfigError(f"devices pin one worker per GPU of this host: use executor "
                              f"'process', not {executor!r}")
    elif not callable(getattr(executor, "submit", None)):
        raise ConfigError(f"executor must be one of {KINDS} or have a submit method, got {executor!r}")
    return executor, (len(devices) if devices else workers), list(devices) if devices else None


def open_backend(executor: Any, workers: int, devices: list[str] | None, store: Store,
                 cluster: str | None = None, scheduler: str | None = None,
                 requests: Mapping[str, Any] | None = None) -> Backend:
    """Start the back-end :func:`settings` chose. ``cluster``: submitit's (None: Slurm if
    available, else local); ``scheduler``: a Dask scheduler address (None: a local cluster);
    ``requests``: submitit's per-job requests (default: :func:`resources` of the store's
    profile). Logs go to ``<store>/logs/``."""
    log_dir = str(store.path / "logs")
    if not isinstance(executor, str):
        if callable(getattr(executor, "get_executor", None)):  # a dask Client: never reuse a
            executor = executor.get_executor(pure=False)        # cached result on a retry
        return Backend("external", executor, workers, owned=False, log_dir=log_dir)
    if executor == "inline":
        return Backend("inline", workers=1)
    if executor == "process":
        return Backend("process", _process_pool(workers, devices), workers, devices,
                       log_dir=log_dir)
    if executor == "submitit":
        import submitit

        auto = submitit.AutoExecutor(folder=Path(log_dir) / "submitit" / "%j", cluster=cluster)
        auto.update_parameters(name=f"igr-{store.experiment}",
                               **(dict(requests) if requests else resources(store.profile)))
        return Backend("submitit", auto, workers, log_dir=log_dir)
    from dask.distributed import Client, LocalCluster

    local = None
    if scheduler is None:
        local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                             dashboard_address=None, silence_logs=40)
    client = Client(scheduler or local)
    return Backend("dask", client.get_executor(pure=False), workers, log_dir=log_dir,
                   _cluster=local, _client=client)
