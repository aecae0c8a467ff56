"""Exclusive locks between processes and threads: `fcntl.flock` on a lock file per name.

The kernel drops a flock when its holder dies, even by SIGKILL, so a crashed holder never blocks anyone.
The holder deletes its lock file before it lets go, so lock files do not pile up; a waiter that then wins
the lock of the deleted file sees that the path no longer names the file it locked, and locks the path
again. Only a killed holder leaves its file behind, until the next lock of that name removes it.
Without fcntl (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@contextlib.contextmanager
def exclusive(path: Path, wait: bool = True):
    """Hold the lock `path` names inside the block; yields True, or False at once when `wait` is False
    and someone else holds it."""
    if fcntl is None:
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, wait)
    if handle is None:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still our file: only a holder deletes it, and we hold it
        handle.close()  # releases the flock


def _acquire(path: Path, wait: bool):
    """An open handle holding the flock of the file `path` names now, or None if it is held (no `wait`)."""
    flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
    while True:
        handle = open(path, "a")  # noqa: SIM115 (closed on release)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            handle.close()
            return None
        if _names(path, handle):
            return handle
        handle.close()  # the holder before us deleted this file: lock whatever the path names now


def _names(path: Path, handle) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def is_held(path: Path) -> bool:
    """Whether a live process holds this lock now (a snapshot; the file is left as it is)."""
    if fcntl is None:
        return False
    try:
        handle = open(path)  # noqa: SIM115
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def remove_if_free(path: Path) -> None:
    """Delete a lock file nobody holds (one a killed holder left), safely against new holders."""
    if path.exists():
        with exclusive(path, wait=False):
            pass  # winning the lock deletes its file on the way out
