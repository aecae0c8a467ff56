"""Exclusive locks between processes and threads, one lock file per name, on the `filelock` package.

`filelock` takes an OS lock on the file (`flock` on Unix, `msvcrt.locking` on Windows), which the kernel
drops when its holder dies, even by SIGKILL, so a crashed holder never blocks anyone. What this module
adds is tidiness: the holder deletes its lock file before it lets go, so a cache of many keys does not
collect one lock file per key. That is safe because `filelock` checks, after it wins an OS lock, that the
file still has a name (`st_nlink`), and otherwise opens the path again. Only a killed holder leaves its
file behind, until the next lock of that name removes it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import filelock


@contextlib.contextmanager
def exclusive(path: Path, wait: bool = True):
    """Hold the lock `path` names inside the block; yields True, or False at once when `wait` is False
    and someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path, blocking=wait, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.unlink(path)  # still our file: only a holder deletes it (Windows refuses; its file stays)
        lock.release()


def is_held(path: Path) -> bool:
    """Whether a live process holds this lock now (a snapshot; the file is left as it is)."""
    if not path.exists():
        return False
    probe = filelock.FileLock(path, blocking=False, thread_local=False, preserve_lock_file=True)
    try:
        probe.acquire()
    except filelock.Timeout:
        return True
    probe.release()
    return False


def remove_if_free(path: Path) -> None:
    """Delete a lock file nobody holds (one a killed holder left), safely against new holders."""
    if path.exists():
        with exclusive(path, wait=False):
            pass  # winning the lock deletes its file on the way out
