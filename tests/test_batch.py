"""`unitune batch` on the tiny model: the jobs file, grouping, the ledger, resume after kill -9, and Ray.

The in-process runner is tested always; the Ray runner where Ray is installed (scripts/setup.sh installs
the `scale` extra), on a local two-CPU cluster this module starts once.
"""

import collections
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from unitune import EditSettings, TuneSettings, UnituneError, UnituneWarning, read_settings
from unitune.batch import read_jobs, run_batch
from unitune.batch.ledger import Ledger
from unitune.batch.ray_runner import placement
from unitune.cli import app
from unitune.outputs import mask_path

SRC = Path(__file__).resolve().parents[1] / "src"
FAST = ["--tune-steps", "2", "--steps", "2"]
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'unitune[scale]')")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[...] = rng.integers(0, 255, 3)
    pixels[8:20, 6:18] = rng.integers(0, 255, 3)
    return Image.fromarray(pixels)


@pytest.fixture
def folder(tmp_path):
    """a.png, a-copy.png (the same pixels), b.png, broken.png (not an image) and a jobs file's home."""
    picture(0).save(tmp_path / "a.png")
    picture(0).save(tmp_path / "a-copy.png")
    picture(1).save(tmp_path / "b.png")
    (tmp_path / "broken.png").write_text("not an image\n")
    return tmp_path


def write_jobs(path: Path, jobs: list) -> Path:
    path.write_text("".join((j if isinstance(j, str) else json.dumps(j)) + "\n" for j in jobs))
    return path


def ledger_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]


def ok_counts(out: Path) -> collections.Counter:
    return collections.Counter(r["edit"] for r in ledger_lines(out) if r["status"] == "ok")


def pngs(out: Path) -> list[Path]:
    return sorted(out.glob("*.png"))


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".lock"))]


# --- the jobs file -------------------------------------------------------------------------------------

BAD_LINES = {
    "not JSON": ('{"image": "a.png", "prompts": ["x"]', "not valid JSON"),
    "not an object": ('["a.png", "x"]', "expected a JSON object"),
    "unknown key": ('{"image": "a.png", "prompt": ["x"]}', "unknown key 'prompt'"),
    "no image": ('{"prompts": ["x"]}', "'image' must be an image path"),
    "no prompts": ('{"image": "a.png", "prompts": []}', "'prompts' must be a non-empty list"),
    "prompt not text": ('{"image": "a.png", "prompts": ["x", 3]}', "'prompts' must be a non-empty list"),
    "unknown edit field": ('{"image": "a.png", "prompts": ["x"], "edit": {"guidence": 3}}', "unknown key"),
    "edit field type": ('{"image": "a.png", "prompts": ["x"], "edit": {"steps": "many"}}', "steps must be"),
    "edit value": ('{"image": "a.png", "prompts": ["x"], "edit": {"strength": 2}}', "strength must be"),
    "tune method": ('{"image": "a.png", "prompts": ["x"], "tune": {"method": "db"}}', "unknown tune method"),
    "mask not a path": (
        '{"image": "a.png", "prompts": ["x"], "mask": 3}',
        "'mask' must be a mask image path",
    ),
}


@pytest.mark.parametrize("name", BAD_LINES)
def test_a_bad_line_fails_the_whole_file_cleanly(folder, tiny_model, name):
    text, message = BAD_LINES[name]
    jobs = write_jobs(folder / "jobs.jsonl", [{"image": "a.png", "prompts": ["x"]}, "", text])
    out, cache = folder / "out", folder / "cache"
    result = run("batch", jobs, "--out", out, "--model", tiny_model, "--cache-dir", cache, *FAST)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"unitune: error: {jobs} line 3: "), result.stderr
    assert message in lines[0] and "Traceback" not in result.output
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize("content", [None, "", "\n  \n"], ids=["missing", "empty", "blank"])
def test_a_missing_or_empty_jobs_file_fails_cleanly(folder, tiny_model, content):
    jobs = folder / "jobs.jsonl"
    if content is not None:
        jobs.write_text(content)
    result = run("batch", jobs, "--out", folder / "out", "--model", tiny_model, *FAST)
    assert result.exit_code == 2 and result.stderr.startswith(f"unitune: error: {jobs}"), result.output
    assert not (folder / "out").exists()


def test_jobs_resolve_paths_and_settings_over_the_defaults(folder):
    jobs = write_jobs(
        folder / "jobs.jsonl",
        [
            {"image": "a.png", "prompts": ["x", "y"], "edit": {"guidance": 3, "num_images": 2, "seed": 5}},
            {"image": str(folder / "b.png"), "prompts": ["x"], "tune": {"method": "lora"}},
        ],
    )
    first, second = read_jobs(jobs, EditSettings(steps=7), TuneSettings(steps=3))
    assert first.image == folder / "a.png" and second.image == folder / "b.png"
    assert (first.edit.guidance, first.edit.steps, first.tune.steps) == (3.0, 7, 3)
    assert (second.tune.method, second.tune.steps, second.tune.learning_rate) == ("lora", 3, None)
    edits = first.edits()
    assert [(e.prompt, e.settings.seed, e.settings.num_images) for e in edits] == [
        ("x", 5, 1),
        ("x", 6, 1),
        ("y", 5, 1),
        ("y", 6, 1),
    ]
    assert len({e.id for e in edits}) == 4 and len({e.file_name() for e in edits}) == 4
    # the key follows the line's content and the defaults, not its position in the file
    moved = write_jobs(
        folder / "moved.jsonl",
        [{"image": "z.png", "prompts": ["q"]}, json.loads(jobs.read_text().splitlines()[0])],
    )
    assert read_jobs(moved, EditSettings(steps=7), TuneSettings(steps=3))[1].key == first.key
    assert read_jobs(jobs, EditSettings(steps=8), TuneSettings(steps=3))[0].key != first.key


# --- running, grouping, the ledger, resuming -------------------------------------------------------------


def test_batch_groups_tunes_records_every_edit_and_resumes(folder, tiny_model):
    jobs = write_jobs(
        folder / "jobs.jsonl",
        [
            {"image": "a.png", "prompts": ["x", "y"]},
            {"image": "a-copy.png", "prompts": ["z"]},  # the same pixels and tune: no second tune
            {"image": "b.png", "prompts": ["x"], "edit": {"num_images": 2}},
            {"image": "broken.png", "prompts": ["x", "y"]},
            {"image": "a.png", "prompts": ["w"], "tune": {"method": "lora"}},  # another tune of a.png
        ],
    )
    out, cache = folder / "out", folder / "cache"
    args = ["batch", jobs, "--out", out, "--model", tiny_model, "--cache-dir", cache, *FAST]
    first = run(*args)
    assert first.exit_code == 1, first.output  # broken.png failed
    assert "6 ran, 0 skipped, 2 failed (tunes: 3 trained, 0 cached;" in first.stdout
    assert "line 4 (broken.png): " in first.stderr and "not an image file" in first.stderr
    assert "tunes: 100%" in first.stderr and "3/3" in first.stderr  # the two bars, with their rates
    assert "edits: 100%" in first.stderr and "8/8" in first.stderr
    assert "edit/s" in first.stderr or "s/edit" in first.stderr
    records = ledger_lines(out)
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] == "failed"]
    assert len(ok) == 6 and len(failed) == 2 and len(pngs(out)) == 6
    assert {r["line"] for r in failed} == {4} and all("not an image file" in r["reason"] for r in failed)
    tune_of = {(r["line"], r["prompt"]): r["tune_key"] for r in ok}
    assert tune_of[1, "x"] == tune_of[1, "y"] == tune_of[2, "z"] != tune_of[3, "x"]
    assert tune_of[5, "w"] not in (tune_of[1, "x"], tune_of[3, "x"])
    assert sorted(r["seed"] for r in ok if r["line"] == 3) == [0, 1]
    settings = read_settings(out / ok[0]["output"])
    assert settings["batch"]["edit"] == ok[0]["edit"] and settings["tune"]["steps"] == 2
    assert not leftovers(out)

    again = run(*args)  # nothing is done twice; the broken image is tried again and fails again
    assert again.exit_code == 1 and "0 ran, 6 skipped, 2 failed (tunes: 0 trained, 0 cached;" in again.stdout
    assert len(ok_counts(out)) == 6 and max(ok_counts(out).values()) == 1

    (out / ok[0]["output"]).unlink()  # a lost output and a damaged one are made again
    (out / ok[1]["output"]).write_bytes(b"\x89PNG")
    jobs.write_text("\n".join(jobs.read_text().splitlines()[:3]) + "\n")  # and the broken job removed
    third = run(*args)
    assert third.exit_code == 0, third.output
    assert "2 ran, 3 skipped, 0 failed (tunes: 0 trained, 1 cached;" in third.stdout
    assert ok_counts(out)[ok[0]["edit"]] == 2 and len(pngs(out)) == 6


def test_batch_output_is_what_edit_makes(folder, editor):
    """The same tune and seed give the same pixels as Editor.edit; the batch reuses the editor's tune."""
    edit, tune = EditSettings(steps=3, guidance=3.0, strength=0.8), TuneSettings(steps=2)
    expected = editor.edit(
        folder / "a.png", ["x", "y"], EditSettings(**{**edit.to_dict(), "seed": 5, "num_images": 2}), tune
    )
    jobs = [{"image": str(folder / "a.png"), "prompts": ["x", "y"], "edit": {"seed": 5, "num_images": 2}}]
    out = folder / "out"
    summary = run_batch(
        jobs, out, edit, tune, model=editor.model, device="cpu", cache_dir=editor.cache.folder, progress=False
    )
    assert (summary.ran, summary.failed, summary.tunes_trained, summary.tunes_cached) == (4, 0, 0, 1)
    records = sorted(ledger_lines(out), key=lambda r: (r["prompt_index"], r["image_index"]))
    for record, result in zip(records, expected, strict=True):
        assert record["seed"] == result.settings["seed"]
        with Image.open(out / record["output"]) as image:
            assert np.array_equal(np.array(image), np.array(result.image))


def test_a_jobs_mask_localises_its_edits_is_written_beside_them_and_a_bad_mask_fails_only_its_job(
    folder, editor
):
    """A job's mask is the edit's `mask=`: the same pixels as Editor.edit with it, `NAME-mask.png` beside
    each output; a job whose mask is not an image fails its edits and the others run."""
    right = np.zeros((32, 32), np.uint8)
    right[:, 16:] = 255
    Image.fromarray(right).save(folder / "right.png")
    edit, tune = EditSettings(steps=3, guidance=3.0, strength=1.0, seed=4), TuneSettings(steps=2)
    [expected] = editor.edit(folder / "a.png", ["x"], edit, tune, mask=folder / "right.png")
    jobs = [
        {"image": "a.png", "prompts": ["x"], "mask": "right.png"},
        {"image": "b.png", "prompts": ["y"], "mask": "broken.png"},
        {"image": "b.png", "prompts": ["z"]},
    ]
    out = folder / "out"
    summary = run_batch(
        write_jobs(folder / "jobs.jsonl", jobs), out, edit, tune, model=editor.model, device="cpu",
        cache_dir=editor.cache.folder, progress=False,
    )  # fmt: skip
    assert (summary.ran, summary.failed) == (2, 1)
    records = {r["prompt"]: r for r in ledger_lines(out)}
    assert records["y"]["status"] == "failed" and "not a readable mask image" in records["y"]["reason"]
    with Image.open(out / records["x"]["output"]) as image:
        assert np.array_equal(np.array(image), np.array(expected.image))
        assert json.loads(image.text["unitune"])["mask_source"] == "user"
    with Image.open(mask_path(out / records["x"]["output"])) as mask:
        assert np.array_equal(np.array(mask), np.array(expected.mask))
    assert not mask_path(out / records["z"]["output"]).exists()


def test_a_failing_edit_does_not_stop_the_others(folder, tiny_model, monkeypatch):
    from unitune.api import Editor

    real_edit = Editor.edit

    def failing_edit(self, image, prompts, *args, **kwargs):
        if prompts == ["boom"]:
            raise RuntimeError("the model fell over\nsecond line")
        return real_edit(self, image, prompts, *args, **kwargs)

    jobs = [{"image": str(folder / "a.png"), "prompts": ["x", "boom", "y"]}]
    options = dict(model=tiny_model, cache_dir=folder / "cache", progress=False)
    fast = (EditSettings(steps=2), TuneSettings(steps=2))
    monkeypatch.setattr(Editor, "edit", failing_edit)
    summary = run_batch(jobs, folder / "out", *fast, **options)
    assert (summary.ran, summary.skipped, summary.failed, summary.ok) == (2, 0, 1, False)
    (failed,) = [r for r in ledger_lines(folder / "out") if r["status"] == "failed"]
    assert failed["prompt"] == "boom" and failed["reason"] == "RuntimeError: the model fell over"
    monkeypatch.setattr(Editor, "edit", real_edit)
    summary = run_batch(jobs, folder / "out", *fast, **options)
    assert (summary.ran, summary.skipped, summary.failed) == (1, 2, 0)


def test_ledger_survives_a_torn_last_line(folder, tiny_model):
    jobs = [{"image": str(folder / "a.png"), "prompts": ["x", "y"]}]
    options = dict(model=tiny_model, cache_dir=folder / "cache", progress=False)
    fast = (EditSettings(steps=2), TuneSettings(steps=2))
    out = folder / "out"
    assert run_batch(jobs, out, *fast, **options).ran == 2
    text = (out / "batch.jsonl").read_text()
    last = text.splitlines()[-1]
    (out / "batch.jsonl").write_text(text[: -len(last) // 2 - 1])  # the last write cut in half
    (out / ".0001-x.png.abc.tmp").write_bytes(b"half a png")  # and a killed write's temporary file
    summary = run_batch(jobs, out, *fast, **options)
    assert (summary.ran, summary.skipped) == (1, 1)
    lines = (out / "batch.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["status"] == "ok"  # the torn line stays alone
    assert len(Ledger(out).latest()) == 2 and not leftovers(out)


def test_a_busy_folder_is_refused(folder, tiny_model):
    from unitune import locks

    out = folder / "out"
    with locks.exclusive(out / "batch.lock"):
        with pytest.raises(UnituneError, match="another unitune batch"):
            run_batch([{"image": str(folder / "a.png"), "prompts": ["x"]}], out, model=tiny_model)


def test_without_ray_the_same_command_runs_in_process(folder, tiny_model, monkeypatch):
    from unitune.batch import driver

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        driver.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ray" else real_find_spec(name, *a),
    )
    jobs = write_jobs(folder / "jobs.jsonl", [{"image": "a.png", "prompts": ["x"]}])
    args = ["batch", jobs, "--out", folder / "out", "--model", tiny_model, "--cache-dir", folder / "c"]
    with pytest.warns(UnituneWarning, match="Ray is not installed"):
        result = run(*args, *FAST, "--ray", "auto")
    assert result.exit_code == 0, result.output
    assert "1 ran, 0 skipped, 0 failed" in result.stdout


@pytest.mark.parametrize(
    "resources, device, workers, tasks, expected",
    [
        ({"CPU": 2}, None, None, 100, (2, 1, 0, "cpu")),
        ({"CPU": 16}, None, None, 100, (8, 2, 0, "cpu")),
        ({"CPU": 16}, None, 3, 100, (3, 2, 0, "cpu")),
        ({"CPU": 16}, None, None, 5, (5, 2, 0, "cpu")),
        ({"CPU": 32, "GPU": 4}, None, None, 100, (4, 1, 1, None)),
        ({"CPU": 32, "GPU": 4}, "cuda", None, 100, (4, 1, 1, "cuda")),
        ({"CPU": 32, "GPU": 4}, "cpu", None, 100, (16, 2, 0, "cpu")),
    ],
)
def test_placement_one_actor_per_device(resources, device, workers, tasks, expected):
    shape = placement(resources, device, workers, tasks)
    assert (shape.actors, shape.num_cpus, shape.num_gpus, shape.device) == expected


# --- kill -9 and resume, in this process's runner and on Ray ---------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with two CPUs, started once; its address."""
    if not HAS_RAY:
        pytest.skip("Ray is not installed (pip install 'unitune[scale]')")
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# Generous: on a starved CPU (two cores under others' jobs, the tests niced) a driver and its Ray actors
# took minutes to start; on an idle machine they take seconds.
SLOW = 600


@pytest.fixture
def start_batch(tiny_model, tmp_path):
    """Start `unitune batch` on the tiny model in a subprocess, its output going to files (a full pipe
    would stall it); `finish(process)` waits and returns (exit code, stdout, stderr). Any process still
    running at teardown is killed."""
    started = []

    def start(jobs: Path, out: Path, cache: Path, *extra) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "unitune.cli", "batch", str(jobs), "--out", str(out)]
        command += ["--model", tiny_model, "--cache-dir", str(cache), "--tune-steps", "2", "--steps", "8"]
        logs = tmp_path / f"driver-{len(started)}"
        with open(f"{logs}.out", "w") as stdout, open(f"{logs}.err", "w") as stderr:
            process = subprocess.Popen([*command, *extra], env=env, stdout=stdout, stderr=stderr, text=True)
        process.logs = logs
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    code = process.wait(timeout=SLOW)
    return code, Path(f"{process.logs}.out").read_text(), Path(f"{process.logs}.err").read_text()


def wait_for_lines(out: Path, count: int, process: subprocess.Popen, timeout: float = SLOW) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "batch.jsonl").exists() and len(ledger_lines_safe(out)) >= count:
            return
        assert process.poll() is None, finish(process)
        time.sleep(0.02)
    raise AssertionError(f"no {count} ledger lines in {timeout} s")


def ledger_lines_safe(out: Path) -> list[str]:
    return [line for line in (out / "batch.jsonl").read_text().splitlines() if line.endswith("}")]


def ray_workers() -> list:
    """The live processes of EditWorker actors in the cluster this test process started (the killed
    driver's actors are gone by then: Ray ends an actor whose owner died)."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and "EditWorker" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("runner", ["in-process", pytest.param("ray", marks=needs_ray)])
def test_kill_and_resume(folder, runner, request, start_batch):
    """kill -9 the driver after its first finished edit; the re-run does the rest, nothing twice. On Ray,
    a worker is killed during the re-run as well: it is restarted and its task retried."""
    # one Ray worker: it starts sooner on two CPUs, and killing it makes the re-run wait for its restart
    ray_args = ["--ray", request.getfixturevalue("ray_cluster"), "--workers", "1"] if runner == "ray" else []
    jobs = write_jobs(
        folder / "jobs.jsonl",
        [
            {"image": "a.png", "prompts": ["p1", "p2", "p3", "p4"], "edit": {"num_images": 2}},
            {"image": "b.png", "prompts": ["p1", "p2", "p3", "p4"], "edit": {"num_images": 2}},
        ],
    )
    out, cache = folder / "out", folder / "cache"
    killed = start_batch(jobs, out, cache, *ray_args)
    wait_for_lines(out, 1, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done_before = len(ok_counts(out))
    assert 1 <= done_before < 16, "the kill came too late to test anything"

    rerun = start_batch(jobs, out, cache, *ray_args)
    if runner == "ray":
        wait_for_lines(out, done_before + 1, rerun)
        (worker,) = ray_workers()
        worker.kill()
        while not [w for w in ray_workers() if w.pid != worker.pid]:  # the actor restarts elsewhere
            assert rerun.poll() is None, "the re-run ended without restarting its only worker"
            time.sleep(0.05)
    code, stdout, stderr = finish(rerun)
    assert code == 0, stderr
    assert f"{16 - done_before} ran, {done_before} skipped, 0 failed" in stdout
    counts = ok_counts(out)
    assert len(counts) == 16 and set(counts.values()) == {1}  # every edit, none twice
    assert len(pngs(out)) == 16 and not leftovers(out)
    assert all(read_settings(p)["batch"]["edit"] in counts for p in pngs(out))


# --- Ray ---------------------------------------------------------------------------------------------------


@needs_ray
def test_ray_gives_the_in_process_pixels_and_isolates_a_bad_image(folder, tiny_model, ray_cluster):
    jobs = [
        {"image": str(folder / "a.png"), "prompts": ["x", "y"]},
        {"image": str(folder / "b.png"), "prompts": ["x"], "tune": {"method": "lora"}},
        {"image": str(folder / "broken.png"), "prompts": ["x"]},
    ]
    fast = (EditSettings(steps=3), TuneSettings(steps=2))
    local = run_batch(
        jobs, folder / "local", *fast, model=tiny_model, cache_dir=folder / "c1", progress=False
    )
    on_ray = run_batch(
        jobs, folder / "ray", *fast, ray="auto", model=tiny_model, cache_dir=folder / "c2", progress=False
    )
    for summary in (local, on_ray):
        assert (summary.ran, summary.failed, summary.tunes_trained) == (3, 1, 2)
    names = [p.name for p in pngs(folder / "local")]
    assert names == [p.name for p in pngs(folder / "ray")] and len(names) == 3
    for name in names:
        with Image.open(folder / "local" / name) as a, Image.open(folder / "ray" / name) as b:
            assert np.array_equal(np.array(a), np.array(b))


@needs_ray
def test_an_unreachable_ray_address_fails_cleanly(folder, start_batch):
    """In a process of its own: this one is already connected to the module's cluster."""
    jobs = write_jobs(folder / "jobs.jsonl", [{"image": "a.png", "prompts": ["x"]}])
    process = start_batch(jobs, folder / "out", folder / "cache", "--ray", "127.0.0.1:9")
    code, _, stderr = finish(process)
    assert code == 2, stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and "Traceback" not in stderr
    assert stderr.startswith("unitune: error: could not reach Ray at 127.0.0.1:9")
    assert not (folder / "out").exists()
