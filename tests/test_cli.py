"""The CLI end to end on the tiny model, and every kind of bad input: exit 2, one line, nothing written."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from unitune import read_settings
from unitune.cli import app

FAST = ["--tune-steps", "2", "--steps", "2"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("1", (9000, 9000)).save(folder / "bomb.png")  # 81 Mpx > MAX_IMAGE_PIXELS, a few kB on disk
    (folder / "a-folder").mkdir()
    (folder / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (folder / "model.txt").write_text("no")
    (folder / "not-a-pipeline").mkdir()
    return folder


@pytest.fixture
def good_image(tmp_path, base_image):
    path = tmp_path / "base.png"
    base_image.save(path)
    return path


BAD_IMAGES = ["missing.png", "empty.png", "text.png", "truncated.png", "bomb.png", "a-folder"]


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_image_fails_cleanly(bad_files, tiny_model, tmp_path, name):
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run(
        "edit", bad_files / name, "x", "--model", tiny_model, "--out", out, "--cache-dir", cache, *FAST
    )
    assert_clean_failure(result, out, cache)


@pytest.mark.parametrize(
    "flags",
    [
        ["--guidance", "-1"],
        ["--strength", "0"],
        ["--strength", "1.5"],
        ["--steps", "0"],
        ["--steps", "-3"],
        ["--tune-steps", "-1"],
        ["--method", "dreambooth"],
        ["--dtype", "float8"],
        ["--device", "toaster"],
        ["--interpolation", "2"],
        ["--model-guidance", "-1"],
        ["--model-guidance", "1000"],
        ["--auto-model-guidance", "-1"],
        ["--sample-batch", "0"],
        ["--sample-batch", "1000"],
        ["--cache-max-size", "lots"],
        ["--size", "100000"],
        ["--batch-size", "100000"],
        ["--lora-rank", "100000"],
        ["--decoder-steps", "-1"],
        ["--decoder-steps", "1000000"],
        ["--decoder-lr", "0"],
        ["--decoder-gate", "-1"],
        ["--decoder-gate", "nan"],
        ["--cuda-graphs", "maybe"],
    ],
    ids=lambda f: " ".join(f),
)
def test_bad_dial_fails_cleanly(good_image, tiny_model, tmp_path, flags):
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run("edit", good_image, "x", "--model", tiny_model, "--out", out, "--cache-dir", cache, *flags)
    assert_clean_failure(result, out, cache)


@pytest.mark.parametrize("model", ["missing-folder/", "not-a-pipeline", "junk.safetensors", "model.txt"])
def test_bad_model_fails_cleanly(bad_files, good_image, tmp_path, model):
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run(
        "edit", good_image, "x", "--model", bad_files / model, "--out", out, "--cache-dir", cache, *FAST
    )
    assert_clean_failure(result, out, cache)


def test_missing_embedded_model_is_one_line(good_image, tmp_path, monkeypatch):
    from unitune import loading

    monkeypatch.setattr(loading, "embedded_model_dir", lambda: tmp_path / "nothing-here")
    result = run("edit", good_image, "x", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert_clean_failure(result, tmp_path / "out", tmp_path / "cache")
    assert "embedded model" in result.stderr


def assert_clean_failure(result, out, cache):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unitune: error: "), result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not cache.exists() or not any(cache.iterdir())


def test_edit_writes_pngs_with_settings_and_manifest(good_image, tiny_model, tmp_path):
    out = tmp_path / "out"
    args = ["edit", good_image, "a", "b", "--model", tiny_model, "--out", out, "--cache-dir", tmp_path / "c"]
    result = run(*args, *FAST, "--num-images", "2", "--seed", "7", "--interpolation", "0.5")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["images"]) == 4
    settings = read_settings(out / manifest["images"][3]["file"])
    assert settings["prompt"] == "b" and settings["seed"] == 8 and settings["model"] == tiny_model
    assert settings["tune_key"] and settings["tune"]["steps"] == 2 and settings["interpolation"] == 0.5
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_edit_auto_records_the_dial(good_image, tiny_model, tmp_path):
    out = tmp_path / "auto"
    args = ["edit", good_image, "a", "--model", tiny_model, "--out", out, "--cache-dir", tmp_path / "c"]
    result = run(*args, *FAST, "--auto")
    assert result.exit_code == 0, result.output
    settings = read_settings(next(out.glob("*.png")))
    assert settings["auto"] is True and len(settings["auto_dial"]["candidates"]) == 3
    assert settings["strength"] == settings["auto_dial"]["picked_strength"]


def test_sweep_writes_grid_and_contact_sheet(good_image, tiny_model, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", good_image, "a", "--model", tiny_model, "--out", out, "--cache-dir", tmp_path / "c"]
    result = run(*args, *FAST, "--guidances", "1,4", "--strengths", "0.5,1")
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("0*.png"))) == 4
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.width > 2 * 32 and sheet.height > 2 * 32


def test_generate_and_tune_commands(tiny_model, good_image, tmp_path):
    result = run("generate", "a square", "--model", tiny_model, "--steps", "2", "--out", tmp_path / "g")
    assert result.exit_code == 0, result.output
    assert read_settings(next((tmp_path / "g").glob("*.png")))["command"] == "generate"
    tune = ["tune", good_image, "--model", tiny_model, "--cache-dir", tmp_path / "c", "--tune-steps", "1"]
    first, second = run(*tune), run(*tune)
    assert json.loads(first.stdout)["status"] == "tuned" and json.loads(second.stdout)["status"] == "cached"


def test_the_reference_documents_every_flag():
    """docs/reference.md lists every tune, edit and model option the commands take."""
    from dataclasses import fields
    from pathlib import Path

    from unitune.cli import _MODEL_OPTIONS
    from unitune.settings import EditSettings, TuneSettings

    text = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()
    flags = [f.metadata["flag"] for cls in (TuneSettings, EditSettings) for f in fields(cls)]
    flags += ["--" + name.replace("_", "-") for name, *_ in _MODEL_OPTIONS]
    missing = [flag for flag in flags if f"`{flag}" not in text and f" {flag}`" not in text]
    assert not missing, f"docs/reference.md lacks {missing}"


def test_load_options_are_the_one_list_of_model_options():
    """The CLI's model flags come from LoadOptions; Editor.load and the batch runner take the same names."""
    import inspect
    from dataclasses import fields

    from unitune import Editor
    from unitune.batch import run_batch
    from unitune.cli import _MODEL_OPTIONS
    from unitune.settings import LoadOptions

    names = [f.name for f in fields(LoadOptions)]
    assert [name for name, *_ in _MODEL_OPTIONS] == names
    assert list(inspect.signature(Editor.load).parameters) == names
    batch = inspect.signature(run_batch).parameters
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in batch.values())  # the rest pass through
    assert all(
        batch[name].default is LoadOptions.__dataclass_fields__[name].default
        for name in names
        if name in batch
    )
