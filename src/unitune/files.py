"""Files that survive crashes: durable atomic writes, checksums, a safetensors header without torch."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path


def write_durably(target: Path, write) -> tuple[int, str]:
    """`write(tmp)` a temporary file next to `target`, fsync it, move it into place, fsync the folder.
    Returns the file's size and SHA-256 (read back from the written file)."""
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        write(tmp)
        size, sha256 = _fsync_and_hash(tmp)
        os.replace(tmp, target)
        fsync_folder(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return size, sha256


def _fsync_and_hash(path: str) -> tuple[int, str]:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())
        return os.fstat(file.fileno()).st_size, _sha256(file)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return _sha256(file)


def _sha256(file) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(1 << 22):
        digest.update(chunk)
    return digest.hexdigest()


def fsync_folder(folder: Path) -> None:
    """Make renames and deletions in `folder` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def safetensors_header(path: Path) -> dict:
    """A safetensors file's JSON header (tensor table and `__metadata__`), without reading the tensors;
    ValueError if the file is not one."""
    with open(path, "rb") as file:
        try:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > min(os.fstat(file.fileno()).st_size - 8, 100_000_000):
                raise ValueError("header longer than the file")
            header = json.loads(file.read(length))
        except (struct.error, UnicodeDecodeError) as error:
            raise ValueError(str(error)) from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise ValueError("not a safetensors header")
    return header
