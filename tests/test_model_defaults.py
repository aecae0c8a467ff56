"""Per-model recommended settings: a model folder's unitune.json, below explicit flags, above the defaults."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import unitune
from unitune import Editor, EditSettings, TuneSettings, read_settings
from unitune.cache import key_settings
from unitune.cli import app
from unitune.loading import load_model_defaults
from unitune.settings import ModelDefaults

RECOMMENDED = {"edit": {"guidance": 3.5, "steps": 3, "seed": 5}, "tune": {"steps": 1, "batch_size": 2}}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def model_with(tiny_model, folder, defaults) -> str:
    """A copy of the tiny pipeline whose folder holds `defaults` as unitune.json (None: no file)."""
    shutil.copytree(tiny_model, folder)
    if defaults is not None:
        (folder / "unitune.json").write_text(json.dumps(defaults))
    return str(folder)


@pytest.fixture(scope="module")
def recommended_model(tiny_model, tmp_path_factory):
    return model_with(tiny_model, tmp_path_factory.mktemp("recommended") / "model", RECOMMENDED)


@pytest.fixture
def good_image(tmp_path, base_image):
    base_image.save(tmp_path / "base.png")
    return tmp_path / "base.png"


def test_model_defaults_are_used_when_flags_are_absent(recommended_model, good_image, tmp_path):
    out = tmp_path / "out"
    result = run("edit", good_image, "a", "--model", recommended_model, "--out", out, "--cache-dir", tmp_path)
    assert result.exit_code == 0, result.output
    settings = read_settings(next(out.glob("*.png")))
    assert (settings["guidance"], settings["steps"], settings["seed"]) == (3.5, 3, 5)
    assert settings["strength"] == EditSettings().strength  # not in unitune.json: the dataclass default
    assert settings["tune"]["steps"] == 1 and settings["tune"]["batch_size"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"][0]["settings"]["guidance"] == 3.5


def test_a_no_flag_switches_off_a_yes_no_default_of_the_model(tiny_model, tmp_path):
    """`--no-X` overrides a model's `X: true` (the embedded model starts edits from the inversion)."""
    model = model_with(tiny_model, tmp_path / "model", {"edit": {"inversion": True, "steps": 2}})
    for flags, expected in (([], True), (["--no-inversion"], False)):
        out = tmp_path / f"gen-{expected}"
        result = run("generate", "a square", "--model", model, "--out", out, *flags)
        assert result.exit_code == 0, result.output
        assert read_settings(next(out.glob("*.png")))["inversion"] is expected


def test_an_explicit_flag_wins_over_the_model(recommended_model, tmp_path):
    out = tmp_path / "gen"
    result = run("generate", "a square", "--model", recommended_model, "--guidance", "2", "--out", out)
    assert result.exit_code == 0, result.output
    settings = read_settings(next(out.glob("*.png")))
    assert settings["guidance"] == 2.0 and settings["steps"] == 3  # the flag; the model for the rest
    assert "generate a square" in result.stderr and "edit a square" not in result.stderr  # progress label


@pytest.mark.parametrize(
    "defaults, named",
    [
        ({"edit": {"guidnce": 5.0}}, "'guidnce'"),
        ({"tune": {"steps": 1, "learning_rte": 1e-3}}, "'learning_rte'"),
        ({"sample": {}}, "'sample'"),
        ({"edit": {"steps": "many"}}, "steps"),
        ({"edit": {"strength": 2.0}}, "strength"),
        ({"learning_rates": {"dreambooth": 1e-5}}, "'dreambooth'"),
        ({"learning_rates": {"lora": -1}}, "lora"),
        ({"lr_schedules": {"dreambooth": "cosine"}}, "'dreambooth'"),
        ({"lr_schedules": {"full": "exponential"}}, "exponential"),
        ({"tune_steps": {"dreambooth": 64}}, "'dreambooth'"),
        ({"tune_steps": {"lora": 9.5}}, "lora"),
        ({"tune_steps": {"lora": -1}}, "lora"),
        ({"noise_weights": {"full": [1, 0.25]}}, "full"),
        ({"noise_weights": {"full": "1,-2"}}, "noise weights"),
    ],
    ids=[
        "edit key",
        "tune key",
        "section",
        "type",
        "range",
        "rate method",
        "rate value",
        "schedule method",
        "schedule name",
        "steps method",
        "steps type",
        "steps range",
        "weights type",
        "weights value",
    ],
)
def test_a_bad_unitune_json_fails_cleanly(tiny_model, good_image, tmp_path, defaults, named):
    model = model_with(tiny_model, tmp_path / "model", defaults)
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run("edit", good_image, "a", "--model", model, "--out", out, "--cache-dir", cache)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unitune: error: ") and "Traceback" not in result.output
    assert "unitune.json" in lines[0] and named in lines[0]
    assert not out.exists() and not cache.exists()


def test_help_shows_the_dataclass_default():
    result = run("edit", "--help")
    assert result.exit_code == 0
    assert "[default: 10.0 or the model's]" in " ".join(result.output.split())


def test_editor_uses_the_model_defaults_when_given_none(recommended_model, tmp_path):
    editor = Editor.load(recommended_model, device="cpu", cache_dir=tmp_path)
    assert editor.default_edit_settings() == EditSettings(guidance=3.5, steps=3, seed=5)
    assert editor.default_tune_settings().steps == 1
    [result] = editor.generate("a square")
    assert result.settings["guidance"] == 3.5 and result.settings["seed"] == 5


def test_embedded_model_defaults_live_in_its_folder():
    folder = Path(unitune.__file__).parent / "embedded" / "shapes"
    expected = ModelDefaults.from_dict(json.loads((folder / "unitune.json").read_text()), "unitune.json")
    assert load_model_defaults(str(folder)) == expected != ModelDefaults()
    assert load_model_defaults("some-org/some-model") == ModelDefaults()


def test_per_method_learning_rates_follow_the_method(tiny_model, good_image, tmp_path):
    """A model's recommended rate is per method: asking for LoRA does not inherit the full tune's rate."""
    from unitune import TuneSettings

    model = model_with(tiny_model, tmp_path / "model", {"learning_rates": {"lora": 0.02, "full": 3e-5}})
    editor = Editor.load(model, device="cpu", cache_dir=tmp_path / "cache")
    lora = editor.tune(good_image, TuneSettings(method="lora", steps=1))
    full = editor.tune(good_image, TuneSettings(method="full", steps=1))
    given = editor.tune(good_image, TuneSettings(method="lora", steps=1, learning_rate=1e-3))
    assert (lora.settings["learning_rate"], full.settings["learning_rate"]) == (0.02, 3e-5)
    assert given.settings["learning_rate"] == 1e-3
    plain = Editor.load(tiny_model, device="cpu", cache_dir=tmp_path / "cache")
    assert plain.tune_key(good_image, TuneSettings(method="lora", steps=1)) != lora.key


def test_a_model_sets_the_schedule_per_method_and_a_given_schedule_wins(tiny_model, tmp_path):
    defaults = {"learning_rates": {"full": 3e-4}, "lr_schedules": {"full": "cosine"}}
    editor = Editor.load(model_with(tiny_model, tmp_path / "model", defaults), device="cpu")
    full = editor.resolve_tune(TuneSettings(method="full"))
    assert (full.learning_rate, full.lr_schedule) == (3e-4, "cosine")
    assert editor.resolve_tune(TuneSettings(method="lora")).lr_schedule == "constant"  # not named: built-in
    assert editor.resolve_tune(TuneSettings(lr_schedule="constant")).lr_schedule == "constant"


def test_a_model_sets_the_noise_weights_per_method_and_given_weights_win(tiny_model, tmp_path):
    defaults = {"noise_weights": {"full": "1,1,1,0.25"}}
    editor = Editor.load(model_with(tiny_model, tmp_path / "model", defaults), device="cpu")
    assert editor.resolve_tune(TuneSettings(method="full")).noise_weights == "1,1,1,0.25"
    assert editor.resolve_tune(TuneSettings(method="lora")).noise_weights == "1"  # not named: uniform
    assert editor.resolve_tune(TuneSettings(noise_weights="1")).noise_weights == "1"


def test_a_model_sets_the_step_count_per_method_and_given_steps_win(tiny_model, tmp_path):
    editor = Editor.load(
        model_with(tiny_model, tmp_path / "model", {"tune_steps": {"lora": 3}}), device="cpu"
    )
    assert editor.resolve_tune(TuneSettings(method="lora")).steps == 3
    assert editor.resolve_tune(TuneSettings(method="full")).steps == 128  # not named: built-in
    assert editor.resolve_tune(TuneSettings(method="lora", steps=5)).steps == 5
    assert key_settings(editor.resolve_tune(TuneSettings(method="lora"))) == key_settings(
        TuneSettings(method="lora", steps=3)
    )  # the same tune, so the same cache key, whether the count was given or the model's


def test_the_cli_tunes_at_the_models_step_count_unless_given(tiny_model, good_image, tmp_path):
    model = model_with(tiny_model, tmp_path / "model", {"tune_steps": {"lora": 2, "full": 1}})
    common = ["--model", model, "--cache-dir", tmp_path / "cache", "--steps", "2"]
    for flags, steps in ((["--method", "lora"], 2), (["--method", "lora", "--tune-steps", "1"], 1), ([], 1)):
        out = tmp_path / f"out{len(flags)}"
        result = run("edit", good_image, "a", *common, *flags, "--out", out)
        assert result.exit_code == 0, result.output
        assert read_settings(next(out.glob("*.png")))["tune"]["steps"] == steps
