"""Leases: which worker is running which program of a sweep, visible to every driver.

A worker takes a lease on a program before running it and drops it when done. A lease is a small
JSON file ``<folder>/<program>.<generation>.lease`` holding its owner (host, pid, job id) and an
expiry time ``expires`` (seconds since the epoch, the holder's clock). While the program runs a
daemon thread rewrites the file every ``ttl / 3`` seconds with a new expiry ``now + ttl``.

The lease in force is the highest generation. It is *live* while it has not expired and, when
its holder is on this host, its process still exists (a SIGKILLed worker's lease is free at
once on its own host; elsewhere after at most ``ttl`` seconds). Taking a lease is an atomic
``os.open(O_CREAT | O_EXCL)`` of the next generation's file, so of two workers that both found
the program free or expired exactly one wins, on any file system where ``O_EXCL`` is atomic
(local disks, NFSv3 and later).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igrlib.config import check_positive
from igrlib.io import atomic

#: Default lease duration in seconds: a dead worker on another host delays its program this long.
DEFAULT_TTL_S = 120.0
SUFFIX = ".lease"


def _pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this host and is not a zombie awaiting its parent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a killed child stays in the table as state Z until it is reaped
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _generations(folder: Path, program: str) -> list[tuple[int, Path]]:
    """``(generation, path)`` of every lease file of ``program``, oldest first."""
    out = []
    for path in folder.glob(f"{program}.*{SUFFIX}"):
        gen = path.name[len(program) + 1:-len(SUFFIX)]
        if gen.isdigit():
            out.append((int(gen), path))
    return sorted(out)


def _read(path: Path, ttl: float) -> dict[str, Any] | None:
    """The lease's owner record; a file caught between creation and its first write (empty or
    partial) counts as taken until ``ttl`` after its modification time. None if it vanished."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
        if isinstance(info, dict) and "expires" in info:
            return info
    except json.JSONDecodeError:
        pass
    return {"host": None, "pid": None, "expires": mtime + ttl}


def is_live(info: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a lease's owner record still holds (see the module docstring)."""
    if info is None:
        return False
    if (now if now is not None else time.time()) > float(info["expires"]):
        return False
    if info.get("host") == socket.gethostname() and info.get("pid") is not None:
        return _pid_alive(int(info["pid"]))
    return True


def holder(folder: Path | str, program: str, ttl: float = DEFAULT_TTL_S) -> dict[str, Any] | None:
    """The live lease's owner record of ``program``, or None when the program is free."""
    gens = _generations(Path(folder), program)
    if not gens:
        return None
    info = _read(gens[-1][1], ttl)
    return info if is_live(info) else None


@dataclass
class Lease:
    """A lease this process holds; :meth:`release` it (or use it as a context manager)."""

    path: Path
    owner: dict[str, Any]
    ttl: float
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _write(self) -> None:
        self.owner["expires"] = time.time() + self.ttl
        atomic.write_text(self.path, json.dumps(self.owner, sort_keys=True) + "\n")

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._write()
            except OSError:  # a full or vanished disk: the lease lapses, the run goes on
                pass

    def start(self) -> Lease:
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.path.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop renewing and delete the lease file (and older generations left by dead owners)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        program = self.path.name.split(".")[0]
        for gen, path in _generations(self.path.parent, program):
            if path == self.path or gen < int(self.path.name.split(".")[1]):
                path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(folder: Path | str, program: str, ttl: float = DEFAULT_TTL_S,
            job_id: str | None = None) -> Lease | None:
    """Take the lease on ``program`` and start renewing it; None if a live worker holds it.

    ``ttl`` is in seconds. The owner record is ``{"host", "pid", "job_id", "program",
    "expires", "taken"}``.
    """
    check_positive(ttl, "lease ttl")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gens = _generations(folder, program)
    if gens and is_live(_read(gens[-1][1], ttl)):
        return None
    path = folder / f"{program}.{gens[-1][0] + 1 if gens else 0}{SUFFIX}"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another worker took this generation first
        return None
    now = time.time()
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id,
             "program": program, "taken": now, "expires": now + ttl}
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(owner, sort_keys=True) + "\n")
    return Lease(path, owner, ttl).start()
