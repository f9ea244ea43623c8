"""Atomic writes: a reader sees the old file (or folder) or the whole new one, never half of one.

Everything written goes to a temporary name beside its target and is renamed onto it with
``os.replace`` (atomic within one file system), so a process killed at any instant, a full disk or
two writers racing leave no partial file behind. The temporary name is an ordinary file name, not
``tempfile``'s, so the result gets the umask's permissions (records and figures are shared).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def target(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write (a file or a folder); when the block ends
    without an exception, rename it onto ``path``; the temporary is removed in any case."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with target(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""
    write_bytes(path, text.encode())
