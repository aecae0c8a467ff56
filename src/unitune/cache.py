"""Tuned weights on disk, one entry per key; checked on every read; shared safely by processes.

An entry is two files in the cache folder:

    <key>.safetensors   the weights, with metadata (format, key, model, image hash, settings, losses)
    <key>.json          its record: cache format, key, the weights' size and SHA-256, a summary for `ls`

The record is written last, so an entry exists exactly when its record does; its mtime is the entry's
last use. Each file is written to a temporary file, fsynced, moved into place with `os.replace`, and the
folder fsynced: a crash at any moment (kill -9, power loss) leaves the whole entry or none, plus stray
files that `prune` removes. Reads check the record, the size and the header every time, and the SHA-256
once per process and file, so a truncated, corrupt or foreign file is reported and trained again, never
used. Whatever changes a key's files holds that key's lock (`locks.py`); `prune` evicts least recently
used entries first and skips the locked ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from . import locks
from .errors import UnituneError, UnituneWarning
from .files import file_sha256, fsync_folder, safetensors_header, write_durably
from .settings import TuneSettings, settings_json, uniform_noise_weights

# 1: `<key>.safetensors` alone, keyed without versions (unitune 0.1.0); never read, removed by `prune`
CACHE_FORMAT = 2
TUNE_FORMAT = f"unitune-tune/{CACHE_FORMAT}"  # the weights' metadata "format"
DEFAULT_MAX_BYTES = 20 * 10**9
_ENTRY_FILE = re.compile(r"^([0-9a-f]{32})\.(safetensors|json)$")
_TEMPORARY_FILE = re.compile(r"^\.([0-9a-f]{32})\.(safetensors|json)\..+\.tmp$")
_LOCK_FILE = re.compile(r"^([0-9a-f]{32})\.lock$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_UNITS = "kmgt"


def cache_dir(explicit: str | Path | None = None) -> Path:
    """--cache-dir, else $UNITUNE_CACHE_DIR, else ~/.cache/unitune (respecting $XDG_CACHE_HOME)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("UNITUNE_CACHE_DIR"):
        return Path(os.environ["UNITUNE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unitune"


def cache_max_bytes(explicit: str | int | None = None) -> int | None:
    """--cache-max-size, else $UNITUNE_CACHE_MAX_SIZE, else 20 GB; None means no limit."""
    if explicit is None:
        explicit = os.environ.get("UNITUNE_CACHE_MAX_SIZE") or DEFAULT_MAX_BYTES
    if isinstance(explicit, int) and explicit < 0:
        raise UnituneError(f"the tune cache limit must be >= 0 bytes, got {explicit}")
    return explicit if isinstance(explicit, int) else parse_size(explicit)


def parse_size(text: str) -> int | None:
    """Bytes in "20GB", "1.5 GiB", "500M", "0" (decimal units; KiB, MiB... binary); "none" is no limit."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    match = _SIZE.match(text)
    if not match:
        raise UnituneError(f"the tune cache limit must be a size such as 20GB, 500MB or none, got {text!r}")
    number, unit, binary = match.groups()
    power = _UNITS.index(unit.lower()) + 1 if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def format_size(size: float) -> str:
    """Bytes in decimal units, as `parse_size` reads them: "3.4 GB"."""
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ["kB", "MB", "GB"]:
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} TB"


def key_settings(settings: TuneSettings) -> dict:
    """What a tune's weights depend on, as its cache key and record carry them: the resolved settings
    less what changes only the memory a tune takes (checkpointing), and less the settings that were
    added after keys were first made, while they have their old value (the default optimizer, uniform
    noise weights, no decoder fit; LoRA's rank and targets for a full tune), so those keys stay valid."""
    resolved = asdict(settings.resolved())
    resolved.pop("gradient_checkpointing")
    if settings.optimizer == "adamw":
        resolved.pop("optimizer")
    if uniform_noise_weights(resolved["noise_weights"]):
        resolved.pop("noise_weights")
    if settings.method != "lora":
        resolved.pop("lora_rank")
        resolved.pop("lora_targets")
    if not settings.decoder_steps:
        resolved.pop("decoder_steps")
        resolved.pop("decoder_learning_rate")
    return resolved


def tune_key(model_identity: str, image_hash: str, settings: dict, recipe_version: int) -> str:
    """32 hex digits: SHA-256 of the cache format, the tuning recipe's version, the model's identity,
    the image hash and the resolved settings."""
    versions = f"cache_format={CACHE_FORMAT}\nrecipe={recipe_version}"
    text = "\n".join([versions, model_identity, image_hash, settings_json(settings)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheEntry:
    """One tune in the cache, as `unitune cache ls` lists it."""

    key: str
    size: int  # bytes on disk: weights and record
    last_used: float  # POSIX time
    model: str
    image_hash: str
    method: str


class _Unsound(Exception):
    """An entry that must not be used; the message completes "tune cache entry <key> ..."."""


class TuneCache:
    """The cache folder: entries by key, checked reads, durable writes, per-key locks, LRU pruning."""

    def __init__(self, folder: str | Path | None = None, max_size: str | int | None = None):
        self.folder = cache_dir(folder)
        self.max_bytes = cache_max_bytes(max_size)
        self._checked: dict[str, tuple] = {}  # key -> (file identity, SHA-256) whose SHA-256 we checked

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def record_path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def lock_path(self, key: str) -> Path:
        return self.folder / "locks" / f"{key}.lock"

    @contextlib.contextmanager
    def locked(self, key: str):
        """Hold `key`'s lock (blocks while another process or thread holds it: tuning, loading, evicting)."""
        with locks.exclusive(self.lock_path(key)):
            yield

    # --- reading ---------------------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        """Whether a sound-looking entry exists (cheap checks only: record, size, header)."""
        return self.problem(key, checksum=False) is None

    def problem(self, key: str, checksum: bool = True) -> str | None:
        """What is wrong with the entry ("is not in the cache", "is truncated ...") or None if it is sound."""
        try:
            self._checked_record(key, checksum)
        except _Unsound as error:
            return str(error)
        return None

    def metadata(self, key: str) -> dict[str, str]:
        """The weights file's metadata only (reads the header, not the weights)."""
        try:
            return self._metadata(key)
        except _Unsound as error:
            raise UnituneError(f"tune {key} {error}") from None

    def _metadata(self, key: str) -> dict[str, str]:
        try:
            return safetensors_header(self.path(key)).get("__metadata__", {})
        except FileNotFoundError:
            raise _Unsound("has lost its weights file") from None
        except ValueError:
            raise _Unsound("is not a safetensors file") from None

    def load(self, key: str):
        """The entry's (tensors, metadata) after checking it; UnituneError if it is missing or unsound.
        Hold `locked(key)` around it when other processes may remove the entry meanwhile."""
        problem = self.problem(key)
        if problem:
            raise UnituneError(f"tune {key} {problem}")
        return self._load(key, True)

    def read(self, key: str, tensors: bool = True):
        """For a caller holding the key's lock: (tensors or None, metadata) of a sound entry, else None.

        An unsound entry is reported in one UnituneWarning line and removed, so the caller trains again.
        Files without a record (an interrupted save, format 1) are no entry: None, silently.
        """
        if not self.record_path(key).exists():
            return None
        problem = self.problem(key)
        if problem is None:
            return self._load(key, tensors)
        warnings.warn(f"tune cache entry {key} {problem}; removed it, tuning again", UnituneWarning, 3)
        self._discard(key)
        return None

    def _load(self, key: str, tensors: bool):
        from safetensors.torch import load_file

        self._touch(key)
        if not tensors:
            return None, self._metadata(key)
        # copies, not views of the file's memory map: a file rewritten in place after the lock is released
        # would otherwise change the tensors already handed out, or kill the process (SIGBUS) if truncated
        loaded = {name: tensor.clone() for name, tensor in load_file(str(self.path(key))).items()}
        return loaded, self._metadata(key)

    def _checked_record(self, key: str, checksum: bool) -> dict:
        record = self._record(key)
        try:
            weights = self.path(key).stat()
        except FileNotFoundError:
            raise _Unsound("has lost its weights file") from None
        if weights.st_size != record["size"]:
            raise _Unsound(
                f"is truncated or overwritten ({weights.st_size} bytes, {record['size']} recorded)"
            )
        metadata = self._metadata(key)
        if metadata.get("key") != key or metadata.get("format") != TUNE_FORMAT:
            found = metadata.get("key") or metadata.get("format") or "no key"
            raise _Unsound(f"holds another tune's weights ({found})")
        if checksum:
            self._check_sha256(key, weights, record["sha256"])
        return record

    def _record(self, key: str) -> dict:
        try:
            record = json.loads(self.record_path(key).read_text())
        except FileNotFoundError:
            raise _Unsound("is not in the cache") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise _Unsound("has an unreadable record") from None
        if not isinstance(record, dict) or record.get("cache_format") != CACHE_FORMAT:
            raise _Unsound("has a record of another cache format")
        if record.get("key") != key or not isinstance(record.get("size"), int) or "sha256" not in record:
            raise _Unsound(f"has another tune's record ({record.get('key')})")
        return record

    def _check_sha256(self, key: str, weights: os.stat_result, expected: str) -> None:
        identity = (weights.st_dev, weights.st_ino, weights.st_size, weights.st_mtime_ns, weights.st_ctime_ns)
        if self._checked.get(key) == (identity, expected):
            return
        try:
            actual = file_sha256(self.path(key))
        except FileNotFoundError:
            raise _Unsound("has lost its weights file") from None
        if actual != expected:
            raise _Unsound("is corrupt (its SHA-256 differs from the recorded one)")
        self._checked[key] = (identity, expected)

    def _touch(self, key: str) -> None:
        with contextlib.suppress(OSError):  # a read-only cache still works, without LRU order
            os.utime(self.record_path(key))

    # --- writing ---------------------------------------------------------------------------------------

    def save(self, key: str, tensors: dict, metadata: dict[str, str]) -> Path:
        """Write the entry (the caller holds the key's lock): any old files of the key go first, then the
        weights, then the record that makes the entry exist."""
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        self._discard(key)
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        metadata = {**metadata, "format": TUNE_FORMAT, "key": key}
        size, sha256 = write_durably(self.path(key), lambda tmp: save_file(tensors, tmp, metadata=metadata))
        self._write_record(key, self._new_record(key, size, sha256, metadata))
        return self.path(key)

    def _new_record(self, key: str, size: int, sha256: str, metadata: dict[str, str]) -> dict:
        settings = json.loads(metadata.get("settings", "{}"))
        return {
            "cache_format": CACHE_FORMAT,
            "key": key,
            "size": size,
            "sha256": sha256,
            "created": time.time(),
            "model": metadata.get("model", ""),
            "image_hash": metadata.get("image_hash", ""),
            "method": settings.get("method", ""),
        }

    def _write_record(self, key: str, record: dict) -> None:
        text = json.dumps(record, indent=1, sort_keys=True) + "\n"
        write_durably(self.record_path(key), lambda tmp: Path(tmp).write_text(text))

    def _discard(self, key: str) -> None:
        """Delete every file of `key` (the caller holds its lock); the record first, so the entry is gone
        at once and never half there."""
        for path in [self.record_path(key), self.path(key), *self.folder.glob(f".{key}.*.tmp")]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fsync_folder(self.folder)

    # --- management ------------------------------------------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        """The sound-looking entries (cheap checks), most recently used first."""
        found = []
        for key in self._record_keys():
            with contextlib.suppress(_Unsound, OSError):
                record = self._checked_record(key, checksum=False)
                size = record["size"] + self.record_path(key).stat().st_size
                last_used = self.record_path(key).stat().st_mtime
                found.append(
                    CacheEntry(key, size, last_used, record["model"], record["image_hash"], record["method"])
                )
        return sorted(found, key=lambda entry: entry.last_used, reverse=True)

    def stray_files(self) -> list[Path]:
        """Files of no sound entry: interrupted writes, weights without a record, unsound entries, format 1
        entries and lock files of keys nobody holds. `prune` removes them."""
        if not self.folder.is_dir():
            return []
        sound = {entry.key for entry in self.entries()}
        strays = []
        for path in self.folder.iterdir():
            entry = _ENTRY_FILE.match(path.name)
            if _TEMPORARY_FILE.match(path.name) or _LOCK_FILE.match(path.name):
                strays.append(path)
            elif entry and entry.group(1) not in sound:
                strays.append(path)
        return strays + [path for path in self._lock_files() if not locks.is_held(path)]

    def resolve(self, key_or_prefix: str) -> str:
        """The key of the one entry whose key starts with `key_or_prefix`; UnituneError otherwise."""
        prefix = key_or_prefix.lower()
        matches = [entry.key for entry in self.entries() if entry.key.startswith(prefix)] if prefix else []
        if len(matches) != 1:
            found = "no tune" if not matches else f"{len(matches)} tunes"
            raise UnituneError(f"{found} in {self.folder} with a key starting {key_or_prefix!r}")
        return matches[0]

    def remove(self, key: str) -> CacheEntry:
        """Remove the entry `key` now; UnituneError if there is none or it is in use."""
        entry = next((entry for entry in self.entries() if entry.key == key), None)
        if entry is None:
            raise UnituneError(f"no tune {key} in {self.folder}")
        with locks.exclusive(self.lock_path(key), wait=False) as free:
            if not free:
                raise UnituneError(f"tune {key} is in use (being tuned or loaded); try again later")
            self._discard(key)
        return entry

    def prune(self, max_bytes: int | None = None) -> list[CacheEntry]:
        """Remove stray files, then evict least recently used entries until the cache holds at most
        `max_bytes` (None: this cache's limit; no limit: evict nothing). Locked entries are never evicted.
        Returns the evicted entries."""
        self._remove_strays()
        limit = self.max_bytes if max_bytes is None else max_bytes
        entries = self.entries()
        total, evicted = sum(entry.size for entry in entries), []
        for entry in reversed(entries):
            if limit is None or total <= limit:
                break
            with locks.exclusive(self.lock_path(entry.key), wait=False) as free:
                if free and self._unused_since(entry):
                    self._discard(entry.key)
                    evicted.append(entry)
                    total -= entry.size
        return evicted

    def _unused_since(self, entry: CacheEntry) -> bool:
        """Whether `entry` is still there and nobody used it after it was listed."""
        try:
            return self.record_path(entry.key).stat().st_mtime == entry.last_used
        except FileNotFoundError:
            return False

    def enforce_limit(self) -> list[CacheEntry]:
        """`prune()` to this cache's limit, with a one-line UnituneWarning naming what it evicted."""
        evicted = self.prune()
        if evicted:
            freed = format_size(sum(entry.size for entry in evicted))
            warnings.warn(
                f"the tune cache {self.folder} is over its limit of {format_size(self.max_bytes)}: evicted "
                f"{len(evicted)} least recently used tune(s) ({freed}); raise it with --cache-max-size "
                "or $UNITUNE_CACHE_MAX_SIZE",
                UnituneWarning,
                3,
            )
        return evicted

    def _remove_strays(self) -> None:
        keys = {_key_of(path.name) for path in self.stray_files() if path.parent == self.folder}
        for key in sorted(keys - {None}):
            with locks.exclusive(self.lock_path(key), wait=False) as free:
                if free:
                    self._remove_key_strays(key)
            self._remove_format1_lock(key)
        for path in self._lock_files():
            locks.remove_if_free(path)

    def _remove_key_strays(self, key: str) -> None:
        """With the key's lock: its temporary files, and all its files unless it is a sound entry. A
        damaged entry (one with a record) is reported in one UnituneWarning line."""
        problem = self.problem(key, checksum=False)
        if problem is None:
            for path in self.folder.glob(f".{key}.*.tmp"):
                path.unlink(missing_ok=True)
            return
        if self.record_path(key).exists():
            warnings.warn(f"tune cache entry {key} {problem}; removed it", UnituneWarning, 4)
        self._discard(key)

    def _remove_format1_lock(self, key: str) -> None:
        locks.remove_if_free(self.folder / f"{key}.lock")  # format 1 kept its locks here, never deleted

    def _record_keys(self) -> list[str]:
        names = [path.name for path in self.folder.glob("*.json")] if self.folder.is_dir() else []
        return [match.group(1) for match in map(_ENTRY_FILE.match, names) if match]

    def _lock_files(self) -> list[Path]:
        folder = self.folder / "locks"
        return sorted(folder.glob("*.lock")) if folder.is_dir() else []


def _key_of(name: str) -> str | None:
    match = _ENTRY_FILE.match(name) or _TEMPORARY_FILE.match(name) or _LOCK_FILE.match(name)
    return match.group(1) if match else None
