"""The tune cache under real processes: concurrent tunes, SIGKILL mid-tune and mid-save, and a soak.

Every job is its own process (see cache_worker.py), killed with SIGKILL where the test says; the checks
are on what the next process finds: one sound entry per key, no partial entry ever visible, lock files
gone, and every cached tune is what training gives again (same weights, same final loss).
"""

import contextlib
import itertools
import json
import multiprocessing
import multiprocessing.forkserver
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import cache_worker
from unitune import Editor, TuneSettings
from unitune.cache import TuneCache

LORA = {"method": "lora", "steps": 3, "seed": 0}


@pytest.fixture(scope="module")
def fork_server(tiny_model):
    """A fork server that has imported cache_worker (found through PYTHONPATH: Python 3.11's fork server
    does not take the parent's sys.path) and loaded the tiny model."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["cache_worker"])
    with pytest.MonkeyPatch.context() as patch:
        paths = [str(Path(cache_worker.__file__).parent), os.environ.get("PYTHONPATH", "")]
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
        patch.setenv("UNITUNE_TEST_MODEL", tiny_model)
        multiprocessing.forkserver.ensure_running()
    warm_up = context.Process(target=cache_worker.ready)
    warm_up.start()
    warm_up.join()  # the server has imported unitune and loaded the model: jobs start at once
    yield context
    with contextlib.suppress(AttributeError):
        multiprocessing.forkserver._forkserver._stop()


@dataclass
class Job:
    process: multiprocessing.Process
    folder: Path

    def reached(self, mark: str) -> bool:
        return (self.folder / "marks" / mark).exists()

    def wait_for(self, mark: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.reached(mark):
            assert self.process.is_alive() or self.reached(mark), f"job ended ({self.process.exitcode})"
            assert time.monotonic() < deadline, f"job never reached {mark!r}"
            time.sleep(0.005)

    def past(self, mark: str, seconds: float) -> bool:
        path = self.folder / "marks" / mark
        return path.exists() and time.time() - path.stat().st_mtime > seconds

    def go(self) -> None:
        (self.folder / "marks" / "go").touch()

    def kill(self) -> None:
        self.process.kill()  # SIGKILL
        self.process.join()

    def error(self) -> str:
        path = self.folder / "result.error"
        return path.read_text() if path.exists() else f"exit code {self.process.exitcode}"

    def finish(self, timeout: float = 60) -> dict:
        self.process.join(timeout)
        assert self.process.exitcode == 0, self.error()
        return json.loads((self.folder / "result.json").read_text())


@pytest.fixture
def start(fork_server, tmp_path):
    """start(action, **job) -> Job: one process running cache_worker.run."""
    numbers = itertools.count()

    def start_job(action: str, **job) -> Job:
        folder = tmp_path / f"job-{next(numbers)}"
        job.update(action=action, marks=str(folder / "marks"), result=str(folder / "result.json"))
        process = fork_server.Process(target=cache_worker.run, args=(job,), daemon=True)
        process.start()
        return Job(process, folder)

    return start_job


@pytest.fixture
def image_file(tmp_path, base_image) -> str:
    path = tmp_path / "base.png"
    base_image.save(path)
    return str(path)


def api_job(tiny_model, cache, image, tune=LORA, **extra) -> dict:
    return dict(model=tiny_model, cache=str(cache), image=image, tune=tune, **extra)


def cache_editor(editor, folder) -> Editor:
    """The session's pipeline with another cache folder (no second model load)."""
    return Editor(editor.pipe, editor.model, editor.runtime, TuneCache(folder), editor.defaults)


def assert_reproduces(editor: Editor, key: str, image) -> None:
    """The cached tune is the one training gives again: same final loss, same weights, bit for bit."""
    tensors, metadata = editor.cache.load(key)
    settings = TuneSettings(**json.loads(metadata["settings"]))
    retrained, losses = editor.train(image, settings)
    assert losses[-1] == json.loads(metadata["losses"])[-1]
    assert tensors.keys() == retrained.keys()
    assert all(torch.equal(tensors[name], retrained[name]) for name in tensors)


def lock_files(cache: Path) -> list[Path]:
    return list((cache / "locks").glob("*")) if (cache / "locks").is_dir() else []


# --- concurrency -------------------------------------------------------------------------------------------


def test_two_unitune_tunes_of_one_image_train_once(start, tiny_model, image_file, editor, tmp_path):
    """The second `unitune tune` waits at the key's lock while the first tunes, then reuses its entry."""
    cache = tmp_path / "cache"
    argv = ["tune", image_file, "--model", tiny_model, "--cache-dir", str(cache), "--tune-steps", "3"]
    first = start("cli", argv=argv, pause="tune")
    first.wait_for("tuning")
    second = start("cli", argv=argv)
    second.wait_for("lock")
    time.sleep(0.3)
    assert not second.reached("locked") and second.process.is_alive()  # waiting for the first
    first.go()
    outputs = [json.loads(job.finish()["stdout"]) for job in (first, second)]
    assert [output["status"] for output in outputs] == ["tuned", "cached"]
    assert outputs[0]["key"] == outputs[1]["key"] == editor.tune_key(image_file, TuneSettings(steps=3))
    assert [entry.key for entry in TuneCache(cache).entries()] == [outputs[0]["key"]]
    assert TuneCache(cache).stray_files() == [] and lock_files(cache) == []
    assert_reproduces(cache_editor(editor, cache), outputs[0]["key"], image_file)


def test_different_keys_never_wait_for_each_other(start, tiny_model, image_file, tmp_path):
    cache = tmp_path / "cache"
    holder = start("tune", **api_job(tiny_model, cache, image_file, pause="tune"))
    holder.wait_for("tuning")
    other = start("tune", **api_job(tiny_model, cache, image_file, {**LORA, "seed": 1}))
    assert other.finish(timeout=60)["trained"]  # done while the holder still holds its own key
    assert holder.process.is_alive() and not holder.reached("saving")
    holder.go()
    assert holder.finish()["trained"]
    assert len(TuneCache(cache).entries()) == 2 and lock_files(cache) == []


# --- crashes -----------------------------------------------------------------------------------------------


def test_sigkill_mid_tune_frees_the_lock_and_leaves_no_entry(start, tiny_model, image_file, editor, tmp_path):
    cache = tmp_path / "cache"
    holder = start("tune", **api_job(tiny_model, cache, image_file, pause="tune"))
    holder.wait_for("tuning")
    waiter = start("tune", **api_job(tiny_model, cache, image_file))
    waiter.wait_for("lock")
    holder.kill()
    result = waiter.finish()  # the kernel released the dead holder's lock
    assert result["trained"] and result["warnings"] == []
    assert [entry.key for entry in TuneCache(cache).entries()] == [result["key"]]
    assert TuneCache(cache).stray_files() == [] and lock_files(cache) == []
    assert_reproduces(cache_editor(editor, cache), result["key"], image_file)


@pytest.mark.parametrize("moment", ["weights", "record"])
def test_sigkill_mid_save_leaves_no_entry(start, tiny_model, image_file, editor, tmp_path, moment):
    """Killed with the weights half written, or written but without their record: no entry, and the
    next tune trains again and leaves no stray file; `prune` alone also clears them."""
    cache = tmp_path / "cache"
    job = start("tune", **api_job(tiny_model, cache, image_file, pause=moment))
    job.wait_for(moment)
    job.kill()
    survivor = TuneCache(cache)
    assert survivor.entries() == [] and not any(survivor.has(key.stem) for key in cache.glob("*.safetensors"))
    assert survivor.stray_files()  # the half-written file or the record-less weights, and the lock file
    survivor.prune()
    assert survivor.stray_files() == [] and lock_files(cache) == []
    job = start("tune", **api_job(tiny_model, cache, image_file, pause=moment))
    job.wait_for(moment)
    job.kill()
    retrier = cache_editor(editor, cache)
    result = retrier.tune(image_file, TuneSettings(**LORA))
    assert result.trained and [entry.key for entry in retrier.cache.entries()] == [result.key]
    assert retrier.cache.stray_files() == [] and lock_files(cache) == []
    assert_reproduces(retrier, result.key, image_file)


# --- soak --------------------------------------------------------------------------------------------------

SOAK_OPERATIONS, SOAK_PROCESSES, SOAK_KILL_CHANCE = 20, 2, 0.3
SOAK_CORRUPTIONS = {5: "truncate", 10: "flip", 15: "foreign"}  # before operation n
MARKS = ["started", "locked", "tuning", "saving", "record", "saved", "done"]


def test_soak_random_tunes_edits_kills_and_corruptions(start, tiny_model, editor, base_image, tmp_path):
    """20 random tune/edit operations on 3 images by 2 concurrent processes, some SIGKILLed at a random
    moment, with corruptions injected between them; then every cached tune reproduces its training."""
    rng, damage_rng, cache = random.Random(15), random.Random(16), tmp_path / "cache"
    images = soak_images(base_image, tmp_path)
    tunes = [LORA, {"method": "full", "steps": 3, "seed": 0}]
    began, running, jobs, corruptions = time.monotonic(), [], [], []
    for number in range(SOAK_OPERATIONS):
        action, image, tune = rng.choice(["tune", "edit"]), rng.choice(images), rng.choice(tunes)
        kill = soak_kill(rng)
        running = wait_for_free_processes(running, 1)
        if number in SOAK_CORRUPTIONS:
            corruptions += corrupt_an_entry(TuneCache(cache), SOAK_CORRUPTIONS[number], damage_rng)
        job = start(action, **api_job(tiny_model, cache, image, tune))
        jobs.append(job)
        running.append((job, kill))
    wait_for_free_processes(running, SOAK_PROCESSES)
    seconds = time.monotonic() - began

    failed = [job.error() for job in jobs if job.process.exitcode not in (0, -9)]
    assert failed == []  # nothing failed by itself
    killed = [last_mark(job) for job in jobs if job.process.exitcode == -9]
    results = [job.finish() for job in jobs if job.process.exitcode == 0]
    warned = [warning for result in results for warning in result["warnings"]]
    odd = [w for w in warned if not w.startswith("tune cache entry ") or "\n" in w]
    assert odd == []  # only one-line reports of damaged entries
    check_edits_agree(results)

    survivor = cache_editor(editor, cache)
    tune_of = {
        survivor.tune_key(path, TuneSettings(**t)): (path, TuneSettings(**t))
        for path in images
        for t in tunes
    }
    corrupted = {key for key, _, _ in corruptions}
    unsound = {
        key for key in {result["key"] for result in results} | corrupted if survivor.cache.problem(key)
    }
    lost = unsound - corrupted  # sound once, damaged by none of us, gone now
    assert lost == set()
    final_warnings = []
    for key in sorted(unsound):  # the final check: tune each again, as the next user would
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert survivor.tune(*tune_of[key]).trained
        final_warnings += [str(warning.message) for warning in caught]
    print(
        "\nDEBUG",
        corruptions,
        warned,
        final_warnings,
        sorted(unsound),
        [(r["key"][:6], r["trained"], r["warnings"]) for r in results],
    )
    found = [how_found(survivor.cache, corruption, warned, final_warnings) for corruption in corruptions]
    survivor.cache.prune()  # the killed jobs' stray files and lock files
    assert survivor.cache.stray_files() == [] and lock_files(cache) == []
    entries = survivor.cache.entries()
    for entry in entries:
        assert_reproduces(survivor, entry.key, tune_of[entry.key][0])

    phases = {phase: killed.count(phase) for phase in ["before start", *MARKS] if killed.count(phase)}
    print(
        f"\nsoak: {SOAK_OPERATIONS} operations, {SOAK_PROCESSES} processes, {seconds:.1f} s; "
        f"{len(killed)} SIGKILLed (last mark: {phases}); {len(corruptions)} corruptions injected "
        f"({', '.join(kind for _, kind, _ in corruptions)}), found by: {found}; "
        f"{len(entries)} entries reproduced; entries lost: {len(lost)}"
    )


def soak_images(base_image, folder: Path) -> list[str]:
    paths = []
    for number, image in enumerate([base_image, base_image.rotate(90), base_image.transpose(0)]):
        paths.append(str(folder / f"image-{number}.png"))
        image.save(paths[-1])
    return paths


def soak_kill(rng: random.Random) -> tuple[str, float] | None:
    """None, or when to SIGKILL a job: so long after it started (a job takes about half a second), or
    after it began to save (a save of these tunes takes some 30 ms; a job that reuses a tune never saves)."""
    if rng.random() >= SOAK_KILL_CHANCE:
        return None
    return ("saving", rng.uniform(0, 0.02)) if rng.random() < 0.3 else ("started", rng.uniform(0, 0.5))


def wait_for_free_processes(running: list, free: int) -> list:
    """Poll the running jobs, SIGKILL those past their kill time, until `free` slots are free."""
    while True:
        for job, kill in running:
            if kill is not None and job.process.is_alive() and job.past(*kill):
                job.kill()
        running = [item for item in running if item[0].process.is_alive()]
        if len(running) <= SOAK_PROCESSES - free:
            return running
        time.sleep(0.005)


def corrupt_an_entry(cache: TuneCache, kind: str, rng: random.Random) -> list[tuple[str, str, float]]:
    """Damage one entry at rest (holding its lock, as no tune is reading it): truncate its weights, flip a
    byte in them, or put another tune's weights in their place. Returns [(key, kind, time)] or []."""
    entries = sorted(entry.key for entry in cache.entries() if not cache.problem(entry.key))
    if not entries or (kind == "foreign" and len(entries) < 2):
        return []
    key = rng.choice(entries)
    with cache.locked(key):
        if cache.problem(key):
            return []  # damaged or removed since it was listed
        data = bytearray(cache.path(key).read_bytes())
        if kind == "truncate":
            data = data[: len(data) // 2]
        elif kind == "flip":
            data[-rng.randrange(1, 1000)] ^= 0xFF
        else:
            other = rng.choice([other for other in entries if other != key])
            with cache.locked(other):
                if not cache.has(other):
                    return []
                data = bytearray(cache.path(other).read_bytes())
        cache.path(key).write_bytes(bytes(data))
    return [(key, kind, time.time())]


def how_found(cache: TuneCache, corruption: tuple, job_warnings: list, final_warnings: list) -> str:
    """Who reported a damaged entry: a job, the final check, or a job that was killed after it found it
    (and removed the entry: someone trained it again since)."""
    key, _, when = corruption
    if any(key in warning for warning in job_warnings):
        return "a job"
    if any(key in warning for warning in final_warnings):
        return "the final check"
    assert json.loads(cache.record_path(key).read_text())["created"] > when, f"{key}: never found"
    return "a killed job"


def last_mark(job: Job) -> str:
    return next((mark for mark in reversed(MARKS) if job.reached(mark)), "before start")


def check_edits_agree(results: list[dict]) -> None:
    """Every edit of one (image, tune) gives the same pixels, whoever tuned and whatever was killed."""
    images = {}
    for result in results:
        if result["image"] is not None:
            images.setdefault(result["key"], []).append((result["trained"], result["image"][:12]))
    differing = {key: edits for key, edits in images.items() if len({image for _, image in edits}) > 1}
    assert differing == {}  # per tune key: (trained by this job, pixel hash) of each edit
