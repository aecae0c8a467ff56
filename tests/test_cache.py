"""The tune cache in one process: what the key covers, checked reads, lock files, LRU pruning, commands.

Real processes (concurrent tunes, SIGKILL mid-tune and mid-save, the soak) are in test_cache_processes.py.
"""

import ast
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from typer.testing import CliRunner

from unitune import Editor, EditSettings, TuneSettings, UnituneError, UnituneWarning, tuning
from unitune import cache as cache_module
from unitune.cache import TuneCache, key_settings, parse_size, tune_key
from unitune.cli import app
from unitune.loading import load_pipeline, model_identity
from unitune.settings import LORA_TARGET_SETS

LORA = TuneSettings(method="lora", steps=2, seed=0)


@pytest.fixture
def cached(editor, tmp_path):
    """The session's pipeline with an empty cache of its own (the UNet's base weights back afterwards:
    an edit leaves its tune applied, and only the editor that applied it knows)."""
    cached = Editor(editor.pipe, editor.model, editor.runtime, TuneCache(tmp_path / "cache"), editor.defaults)
    yield cached
    cached.restore_base()


def tune_warnings(editor: Editor, image, settings: TuneSettings = LORA):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = editor.tune(image, settings)
    return result, [str(w.message) for w in caught if issubclass(w.category, UnituneWarning)]


# --- keys ----------------------------------------------------------------------------------------------


def test_key_names_the_cache_format_and_the_recipe_version(editor, base_image, monkeypatch):
    key = editor.tune_key(base_image, LORA)
    monkeypatch.setattr(cache_module, "CACHE_FORMAT", cache_module.CACHE_FORMAT + 1)
    assert editor.tune_key(base_image, LORA) != key
    monkeypatch.undo()
    import unitune.api

    monkeypatch.setattr(unitune.api, "TUNE_RECIPE_VERSION", tuning.TUNE_RECIPE_VERSION + 1)
    assert editor.tune_key(base_image, LORA) != key


@pytest.mark.parametrize(
    "file",
    [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
        "scheduler/scheduler_config.json",
        "model_index.json",
    ],
)
def test_every_file_a_tune_depends_on_is_in_the_model_identity(editor, tiny_model, tmp_path, file):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)  # copy2: same sizes and mtimes
    (copy / "unitune.json").write_text("{}")
    before = model_identity(str(copy), editor.pipe)
    os.utime(copy / file, ns=(0, (copy / file).stat().st_mtime_ns + 1))  # as a replaced file would be
    assert model_identity(str(copy), editor.pipe) != before
    (copy / "unitune.json").write_text('{"tune": {}}')  # recommended settings: in the key as settings
    (copy / "safety_checker").mkdir()
    (copy / "safety_checker" / "model.safetensors").write_bytes(b"x")  # not used by a tune
    os.utime(copy / file, ns=(0, (copy / file).stat().st_mtime_ns - 1))
    assert model_identity(str(copy), editor.pipe) == before


def test_a_hub_model_is_keyed_by_its_revision(tiny_model, tmp_path, monkeypatch):
    """A hub id loads the snapshot its refs/main names; two revisions with equal files get two keys."""
    import huggingface_hub

    repo = tmp_path / "hub" / "models--org--tiny"
    for revision in ("1" * 40, "2" * 40):
        shutil.copytree(tiny_model, repo / "snapshots" / revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    identities = []
    for revision in ("1" * 40, "2" * 40):
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        identities.append(model_identity("org/tiny", load_pipeline("org/tiny")))
    assert identities[0] != identities[1] and all(i.endswith(":org/tiny") for i in identities)


def test_recipe_changes_come_with_a_version_bump():
    """If this fails, the tuning recipe's code changed. If the change trains other weights from the same
    settings, bump tuning.TUNE_RECIPE_VERSION (old tunes are then trained again, not reused); either way
    record the new fingerprint below under the (new) version."""
    # 1 re-recorded: noisy_batch calls noised(); then: SDXL conditioning, gradient checkpointing and the
    # optimizer choice (3-step full and LoRA tunes: identical losses and weights before and after); then
    # the lr schedule (constant = the old weights). 2: stratified timesteps (other weights); recorded
    # together with train() choosing checkpointing from the free memory (the same weights); re-recorded
    # when train() went through a CUDA-graph-ready forward and backward (3-step full and LoRA tunes:
    # identical losses and weights before and after). 3: AdamW fused on the CPU and MPS too (other
    # weights there; make_optimizer joined the fingerprint); re-recorded when the loss took noise weights
    # (uniform ones train the same weights bit for bit, tested; other weights are part of the key)
    fingerprints = {1: "b90828e4bc77932c", 2: "356090743366e4a0", 3: "79c05204e066bf3d"}
    assert recipe_fingerprint() == fingerprints[tuning.TUNE_RECIPE_VERSION]


def recipe_fingerprint() -> str:
    """The tuning functions' code (docstrings, comments and formatting aside) and the LoRA target sets."""
    functions = [tuning.training_scheduler, tuning.noisy_batch, tuning.denoising_loss, tuning.add_lora]
    functions += [tuning.trainable_parameters, tuning.train, tuning.encode_latent, tuning.encode_text]
    functions += [tuning.loss_of, tuning._backward_pass, tuning.make_optimizer]
    parts = [json.dumps(LORA_TARGET_SETS, sort_keys=True)]
    for function in functions:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        body = tree.body[0].body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body.pop(0)  # the docstring
        parts.append(ast.unparse(tree))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def test_lora_tunes_repeat_bit_for_bit(editor, base_image):
    """The LoRA's random initialisation comes from the tune seed, so a key always names the same weights."""
    first, losses = editor.train(base_image, LORA.resolved())
    again, losses_again = editor.train(base_image, LORA.resolved())
    assert losses == losses_again and all((first[name] == again[name]).all() for name in first)


# --- checked reads -------------------------------------------------------------------------------------


def truncate(cache, key, other):
    data = cache.path(key).read_bytes()
    cache.path(key).write_bytes(data[: len(data) // 2])


def flip_a_byte(cache, key, other):
    data = bytearray(cache.path(key).read_bytes())
    data[-7] ^= 0x01
    cache.path(key).write_bytes(bytes(data))


def foreign_weights(cache, key, other):
    shutil.copyfile(cache.path(other), cache.path(key))  # a LoRA of the same size: only the header tells


def foreign_entry(cache, key, other):
    foreign_weights(cache, key, other)
    shutil.copyfile(cache.record_path(other), cache.record_path(key))


def lost_weights(cache, key, other):
    cache.path(key).unlink()


def garbage_record(cache, key, other):
    cache.record_path(key).write_text("{not json")


def older_format_record(cache, key, other):
    record = json.loads(cache.record_path(key).read_text())
    cache.record_path(key).write_text(json.dumps({**record, "cache_format": 1}))


DAMAGE = [truncate, flip_a_byte, foreign_weights, foreign_entry, lost_weights, garbage_record]
DAMAGE += [older_format_record]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda d: d.__name__)
def test_a_damaged_entry_is_reported_in_one_line_and_retrained(cached, base_image, damage):
    other = cached.tune(base_image.rotate(90), LORA).key  # another image: a tune of the same size
    first = cached.tune(base_image, LORA)
    damage(cached.cache, first.key, other)
    with pytest.raises(UnituneError, match=first.key):
        cached.cache.load(first.key)
    again, warned = tune_warnings(cached, base_image)
    assert again.trained and again.losses == first.losses
    assert len(warned) == 1 and first.key in warned[0] and "\n" not in warned[0]
    assert cached.cache.problem(first.key) is None and cached.cache.problem(other) is None


def test_an_edit_never_uses_a_corrupt_tune(cached, base_image):
    edit = EditSettings(steps=2, strength=0.5)
    [clean] = cached.edit(base_image, ["x"], edit, LORA)
    flip_a_byte(cached.cache, cached.tune_key(base_image, LORA), None)
    with pytest.warns(UnituneWarning, match="corrupt"):
        [again] = cached.edit(base_image, ["x"], edit, LORA)
    assert again.image.tobytes() == clean.image.tobytes()


def test_weights_read_from_the_cache_do_not_change_when_the_file_is_rewritten_in_place(cached, base_image):
    """A read hands out copies, not views of the file's memory map: damage done to the file afterwards
    (in place, as the soak test's corruptions are) must not reach tensors already in use."""
    key = cached.tune(base_image, LORA).key
    tensors, _ = cached.cache.read(key)
    before = {name: tensor.clone() for name, tensor in tensors.items()}
    flip_a_byte(cached.cache, key, None)
    data = bytearray(cached.cache.path(key).read_bytes())
    data[-400:] = bytes(400)  # zero the end of the data: the last tensor's values
    cached.cache.path(key).write_bytes(bytes(data))
    assert all(torch.equal(tensors[name], before[name]) for name in before)


def test_applied_refuses_a_tune_gone_from_the_cache(cached, base_image):
    result = cached.tune(base_image, LORA)
    cached.cache.remove(result.key)
    with pytest.raises(UnituneError, match="not in the cache"):
        with cached.applied(result):
            pass


def test_format_1_files_are_never_read_and_are_removed_as_strays(cached, base_image):
    """unitune 0.1.0 left `<key>.safetensors` and `<key>.lock` alone in the folder: no entry, no
    warning, retrained (even at the current key); stray files, which the prune after a save removes."""
    from safetensors.torch import save_file

    folder, key = cached.cache.folder, cached.tune_key(base_image, LORA)
    other = cached.tune(base_image.rotate(90), LORA).key
    old_key = "0123456789abcdef0123456789abcdef"
    for name in (key, old_key):
        metadata = {"format": "unitune-tune/1", "settings": json.dumps(key_settings(LORA))}
        save_file({"weight": torch.zeros(2)}, folder / f"{name}.safetensors", metadata=metadata)
    (folder / f"{old_key}.lock").touch()
    assert not cached.cache.has(key) and [entry.key for entry in cached.cache.entries()] == [other]
    assert len(cached.cache.stray_files()) == 3
    result, warned = tune_warnings(cached, base_image)
    assert result.trained and warned == []
    assert {entry.key for entry in cached.cache.entries()} == {key, other}
    assert cached.cache.stray_files() == []


# --- locks ---------------------------------------------------------------------------------------------


def test_lock_files_do_not_pile_up(cached, base_image):
    key = cached.tune_key(base_image, LORA)
    cached.cache.lock_path(key).parent.mkdir(parents=True)
    cached.cache.lock_path(key).touch()  # as a SIGKILLed holder leaves it
    cached.tune(base_image, LORA)
    cached.edit(base_image, ["x"], EditSettings(steps=1, strength=1.0), LORA)
    assert list(cached.cache.lock_path(key).parent.iterdir()) == []


def test_a_held_lock_makes_others_wait_and_a_free_one_does_not(tmp_path):
    from unitune import locks

    path = tmp_path / "locks" / "key.lock"
    with locks.exclusive(path):
        assert locks.is_held(path)
        with locks.exclusive(path, wait=False) as free:
            assert not free
        with locks.exclusive(tmp_path / "locks" / "other.lock", wait=False) as free:
            assert free
    assert not path.exists() and not locks.is_held(path)


COUNT_UNDER_LOCK = """
import sys, threading
from pathlib import Path
from unitune import locks

lock, counter, threads, times = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def count():
    for _ in range(times):
        with locks.exclusive(lock):
            counter.write_text(str(int(counter.read_text()) + 1))

workers = [threading.Thread(target=count) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
"""


def test_no_count_is_lost_when_processes_and_threads_share_a_lock_whose_file_each_holder_deletes(tmp_path):
    """Each holder deletes the lock file before it lets go; a waiter that then wins the lock of the deleted
    file must lock the path again, or two holders would overlap and a count would be lost."""
    lock, counter = tmp_path / "locks" / "count.lock", tmp_path / "count"
    counter.write_text("0")
    command = [sys.executable, "-c", COUNT_UNDER_LOCK, str(lock), str(counter), "3", "100"]
    workers = [subprocess.Popen(command) for _ in range(4)]
    assert [worker.wait(timeout=120) for worker in workers] == [0] * 4
    assert int(counter.read_text()) == 4 * 3 * 100 and not lock.exists()


# --- size limit and LRU --------------------------------------------------------------------------------


def three_entries(editor: Editor, image) -> list[str]:
    """Three LoRA tunes, last used in the order returned (oldest first)."""
    keys = [editor.tune(image, TuneSettings(method="lora", steps=1, seed=seed)).key for seed in (1, 2, 3)]
    for age, key in enumerate(keys):
        os.utime(editor.cache.record_path(key), (1e9 + age, 1e9 + age))
    return keys


def test_prune_evicts_least_recently_used_first(cached, base_image):
    first, second, third = three_entries(cached, base_image)
    cached.tune(base_image, TuneSettings(method="lora", steps=1, seed=1))  # used again: newest now
    size = max(entry.size for entry in cached.cache.entries())
    assert [entry.key for entry in cached.cache.prune(2 * size)] == [second]
    assert [entry.key for entry in cached.cache.entries()] == [first, third]


def test_prune_never_evicts_an_entry_in_use(cached, base_image):
    first, second, third = three_entries(cached, base_image)
    with cached.cache.locked(first):
        assert [entry.key for entry in cached.cache.prune(0)] == [second, third]
    assert [entry.key for entry in cached.cache.entries()] == [first]


def test_the_size_limit_evicts_after_a_tune_with_a_note(cached, base_image):
    cached.tune(base_image, LORA)
    cached.cache.max_bytes = int(1.5 * cached.cache.entries()[0].size)
    second, warned = tune_warnings(cached, base_image, TuneSettings(method="lora", steps=2, seed=1))
    assert [entry.key for entry in cached.cache.entries()] == [second.key]
    assert len(warned) == 1 and "evicted 1 least recently used tune" in warned[0]


@pytest.mark.parametrize(
    "text, size",
    [("20GB", 20 * 10**9), ("1.5 GiB", int(1.5 * 2**30)), ("500m", 500 * 10**6), ("0", 0), ("none", None)],
)
def test_sizes(text, size):
    assert parse_size(text) == size


def test_the_limit_comes_from_the_environment(monkeypatch, tmp_path):
    assert TuneCache(tmp_path).max_bytes == 20 * 10**9
    monkeypatch.setenv("UNITUNE_CACHE_MAX_SIZE", "3GB")
    assert TuneCache(tmp_path).max_bytes == 3 * 10**9 and TuneCache(tmp_path, "1kB").max_bytes == 1000


# --- commands ------------------------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cache_ls_rm_and_prune(cached, base_image):
    folder = cached.cache.folder
    keys = [cached.tune(image, LORA).key for image in (base_image, base_image.rotate(90))]
    listing = run("cache", "ls", "--cache-dir", folder)
    assert listing.exit_code == 0 and all(key in listing.stdout for key in keys)
    assert "2 tune(s)" in listing.stdout and "lora" in listing.stdout and cached.model in listing.stdout
    removed = run("cache", "rm", keys[0][:8], "--cache-dir", folder)
    assert removed.exit_code == 0 and keys[0] in removed.stdout
    assert [entry.key for entry in cached.cache.entries()] == [keys[1]]
    pruned = run("cache", "prune", "--max-size", "0", "--cache-dir", folder)
    assert pruned.exit_code == 0 and f"evicted {keys[1]}" in pruned.stdout
    assert "0 tune(s)" in run("cache", "ls", "--cache-dir", folder).stdout


@pytest.mark.parametrize(
    "args",
    [["rm", "0123abcd"], ["rm", ""], ["prune", "--max-size", "lots"], ["prune", "--max-size", "-1GB"]],
    ids=" ".join,
)
def test_bad_cache_commands_fail_in_one_line(tmp_path, args):
    result = run("cache", *args, "--cache-dir", tmp_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unitune: error: ") and "Traceback" not in result.output


@pytest.mark.parametrize(
    "settings, key",
    [
        (TuneSettings(), "9e50e6fdc86ff10d9505def683623b3b"),
        (TuneSettings(method="lora"), "7eab51a9ebca99e17bdde734aaec775e"),
        (
            TuneSettings(decoder_steps=50, noise_weights="1,1,1,0.25", optimizer="adamw8bit"),
            "88d7fb48157738c61baab163a6adfe66",
        ),
    ],
)
def test_keys_stay_what_they_were(settings, key):
    """Keys recorded when the compatibility rules moved from TuneSettings.to_dict to cache.key_settings
    (the same three keys from both): a change to what a key depends on must not go unnoticed."""
    assert tune_key("model-x", "image-y", key_settings(settings), 3) == key
