"""Atomic files in ``data_dir``.

Rule: everything a node must not lose is written through ``atomic_write`` (temp file in
the same directory, fsync, rename, fsync of the directory), so a SIGKILL at any
instant leaves either the old or the new content, never a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write", "read_or_none"]


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def read_or_none(path: str | os.PathLike[str]) -> bytes | None:
    """Return the file's bytes, or ``None`` when it does not exist."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry itself is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
