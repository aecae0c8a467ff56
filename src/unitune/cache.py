"""Tuned weights on disk, keyed by (model identity, image hash, tune settings).

Files are `<cache>/<key>.safetensors` with metadata; writes go to a temporary file in the same folder
and `os.replace` it, so readers only ever see complete files. A `fcntl.flock` on `<key>.lock` makes a
second process tuning the same key wait and then reuse the first one's result instead of training again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from .settings import settings_json

try:
    import fcntl
except ImportError:  # Windows: no lock; write-then-replace still keeps files whole
    fcntl = None


def cache_dir(explicit: str | Path | None = None) -> Path:
    """--cache-dir, else $UNITUNE_CACHE_DIR, else ~/.cache/unitune (respecting $XDG_CACHE_HOME)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("UNITUNE_CACHE_DIR"):
        return Path(os.environ["UNITUNE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unitune"


def tune_key(model_identity: str, image_hash: str, settings: dict) -> str:
    text = "\n".join([model_identity, image_hash, settings_json(settings)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class TuneCache:
    def __init__(self, folder: str | Path | None = None):
        self.folder = cache_dir(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def metadata(self, key: str) -> dict[str, str]:
        """The file's metadata only (reads the header, not the weights)."""
        with safe_open(str(self.path(key)), framework="pt") as handle:
            return handle.metadata() or {}

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return load_file(str(self.path(key))), self.metadata(key)

    def save(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """Write atomically: a temporary file in the cache folder, then os.replace."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(key)
        handle, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder)
        os.close(handle)
        try:
            tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return target

    @contextlib.contextmanager
    def locked(self, key: str):
        """Hold an exclusive lock on `key` (blocks while another process tunes the same key)."""
        if fcntl is None:
            yield
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
