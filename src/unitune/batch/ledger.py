"""`DIR/batch.jsonl`: one line per finished edit, so a re-run skips what is done.

Each finished edit's PNG is written durably first (temporary file, fsync, rename, folder fsync), then its
line is appended with one write and an fsync; a kill at any moment loses at most the edits in flight
(and leaves temporary files, which the next run removes). An
edit is done when its latest line says "ok" and its PNG is there with the recorded size; failed edits
(status "failed" and a one-line reason) run again next time. Only the driver writes the ledger, and it
holds `DIR/batch.lock` while it does, so two runs never write into one folder at once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..files import write_durably
from ..outputs import EditResult, mask_path, save_png
from .jobs import Edit

LEDGER = "batch.jsonl"
LOCK = "batch.lock"


class Ledger:
    """The run's output folder: its PNGs and the ledger of finished edits."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LEDGER

    def latest(self) -> dict[str, dict]:
        """The last line written for each edit id; unreadable lines (a torn last write) are ignored."""
        records: dict[str, dict] = {}
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return records
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("edit"), str):
                records[record["edit"]] = record
        return records

    def done(self, records: dict[str, dict], edit: Edit) -> bool:
        """Whether `edit` finished in an earlier run: its line says ok and its PNG is intact."""
        record = records.get(edit.id)
        if record is None or record.get("status") != "ok" or not isinstance(record.get("output"), str):
            return False
        try:
            return (self.folder / record["output"]).stat().st_size == record.get("size")
        except OSError:
            return False

    def remove_strays(self) -> None:
        """Delete the temporary files of PNG writes that a killed run left behind."""
        for path in self.folder.glob(".*.png.*.tmp"):
            path.unlink(missing_ok=True)

    def record_ok(self, edit: Edit, result: EditResult, seconds: float) -> Path:
        """Write the edit's PNG (with its settings) durably, then its ledger line."""
        path = self.folder / edit.file_name()
        if result.mask is not None:  # beside its image, written first: an image never lacks its mask
            write_durably(mask_path(path), lambda tmp: save_png(result.mask, Path(tmp), result.settings))
        # save_png writes its own temporary file; write_durably adds the fsyncs and returns size, SHA-256
        size, sha256 = write_durably(path, lambda tmp: save_png(result.image, Path(tmp), result.settings))
        tune_key = result.settings.get("tune_key")
        self._append(
            _record(edit, "ok", seconds, output=path.name, size=size, sha256=sha256, tune_key=tune_key)
        )
        return path

    def record_failed(self, edit: Edit, reason: str, seconds: float = 0.0) -> None:
        self._append(_record(edit, "failed", seconds, reason=reason))

    def _append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        handle = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if _ends_torn(handle):
                line = b"\n" + line  # a run killed mid-write left half a line: start a fresh one
            os.write(handle, line)
            os.fsync(handle)
        finally:
            os.close(handle)


def _ends_torn(handle: int) -> bool:
    size = os.fstat(handle).st_size
    return size > 0 and os.pread(handle, 1, size - 1) != b"\n"


def _record(edit: Edit, status: str, seconds: float, **fields) -> dict:
    job = edit.job
    return {
        "edit": edit.id,
        "job": job.key,
        "line": job.line,
        "image": job.image_text,
        "prompt_index": edit.prompt_index,
        "prompt": edit.prompt,
        "image_index": edit.image_index,
        "seed": edit.settings.seed,
        "status": status,
        "output": None,
        "reason": None,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
    }
