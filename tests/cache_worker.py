"""Jobs for the tune cache's process tests, each run in its own process forked from a fork server.

The server imports this module (and so unitune) once and loads the model $UNITUNE_TEST_MODEL names, so
a job starts in milliseconds with the pipeline in memory (`unitune` CLI jobs load their own). A job
leaves a mark (an empty file in its `marks` folder) at each moment a test may want to SIGKILL it:
started, waiting for the key's lock, holding it, tuning, saving, saved, done. `pause` names a moment
where the job then waits for the mark `go` (or for its SIGKILL): "tune" (first tune step, holding the
lock), "weights" (weights half written to their temporary file), "record" (weights in place, no record).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import tqdm
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline  # noqa: F401

import unitune.api  # noqa: F401
import unitune.cli

tqdm.tqdm.get_lock()  # made once in the fork server: a SIGKILLed job then leaks no semaphore of its own


def _load_once(model: str | None):
    from unitune import Editor

    return Editor.load(model, device="cpu") if model else None


LOADED = _load_once(os.environ.get("UNITUNE_TEST_MODEL"))


def ready() -> None:
    """A job that does nothing: once it ran, the fork server is up."""


def run(job: dict) -> None:
    """A process's body: install the hooks, run the job, write its result file."""
    marks = Path(job["marks"])
    marks.mkdir(parents=True, exist_ok=True)
    _hooks(marks, job.get("pause"))
    _mark(marks, "started")
    try:
        result = _run_cli(job) if job["action"] == "cli" else _run_api(job)
    except BaseException:
        Path(job["result"]).with_suffix(".error").write_text(traceback.format_exc())
        raise
    _write_json(Path(job["result"]), result)
    _mark(marks, "done")


def _run_api(job: dict) -> dict:
    from unitune import Editor, EditSettings, TuneCache, TuneSettings

    if LOADED is not None and LOADED.model == job["model"]:
        editor = Editor(LOADED.pipe, LOADED.model, LOADED.runtime, TuneCache(job["cache"]), LOADED.defaults)
    else:
        editor = Editor.load(job["model"], device="cpu", cache_dir=job["cache"])
    tune, tune_steps = TuneSettings(**job["tune"]), []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if job["action"] == "tune":
            result = editor.tune(job["image"], tune)
            trained, key, losses, image = result.trained, result.key, result.losses, None
        else:
            edit = EditSettings(steps=2, strength=0.5, guidance=2.0)
            [edited] = editor.edit(job["image"], ["a hat"], edit, tune, progress=tune_steps.append)
            trained = any(event.stage == "tune" for event in tune_steps)
            key, losses = edited.settings["tune_key"], None
            image = hashlib.sha256(edited.image.tobytes()).hexdigest()
    warned = [str(warning.message) for warning in caught]
    return {"trained": trained, "key": key, "losses": losses, "image": image, "warnings": warned}


def _run_cli(job: dict) -> dict:
    """`unitune <argv>` in this process, its stdout and stderr kept in files next to the result."""
    result = Path(job["result"])
    stdout, stderr = result.with_suffix(".stdout"), result.with_suffix(".stderr")
    sys.argv = ["unitune", *job["argv"]]
    with open(stdout, "w") as out, open(stderr, "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            unitune.cli.main()
            code = 0
        except SystemExit as exit:
            code = exit.code or 0
        sys.stdout.flush()
        sys.stderr.flush()
    return {"exit_code": code, "stdout": stdout.read_text(), "stderr": stderr.read_text()}


# --- hooks --------------------------------------------------------------------------------------------


def _hooks(marks: Path, pause: str | None) -> None:
    import safetensors.torch

    from unitune import cache, tuning

    locked, save, write_record = cache.TuneCache.locked, cache.TuneCache.save, cache.TuneCache._write_record
    report, save_file = tuning.report, safetensors.torch.save_file

    @contextlib.contextmanager
    def announced_lock(self, key):
        _mark(marks, "lock")
        with locked(self, key):
            _mark(marks, "locked")
            yield

    def announced_report(progress, event):
        if event.stage == "tune" and not (marks / "tuning").exists():
            _mark(marks, "tuning")
            _pause_if(marks, pause == "tune")
        report(progress, event)

    def announced_save(self, *args, **kwargs):
        _mark(marks, "saving")
        path = save(self, *args, **kwargs)
        _mark(marks, "saved")
        return path

    def half_written(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        if pause == "weights":
            os.truncate(filename, os.path.getsize(filename) // 2)
            _mark(marks, "weights")
            _pause_if(marks, True)

    def paused_record(self, key, record):
        _mark(marks, "record")
        _pause_if(marks, pause == "record")
        write_record(self, key, record)

    cache.TuneCache.locked = announced_lock
    cache.TuneCache.save = announced_save
    cache.TuneCache._write_record = paused_record
    tuning.report = announced_report
    safetensors.torch.save_file = half_written


def _mark(marks: Path, name: str) -> None:
    (marks / name).touch()


def _pause_if(marks: Path, pause: bool) -> None:
    while pause and not (marks / "go").exists():
        time.sleep(0.01)


def _write_json(path: Path, data) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(data))
    os.replace(path.with_suffix(".tmp"), path)
