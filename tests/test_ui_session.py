"""The web UI's actions without a browser or gradio: load, tune once, edit, sweep, history, stop."""

import socket
import sys

import pytest
from typer.testing import CliRunner

from unitune import Cancelled, EditSettings, TuneSettings, UnituneError, read_settings
from unitune.cli import app
from unitune.ui.session import SessionState, Studio, example_images, history_rows, parse_prompts

TUNE = TuneSettings(steps=2, seed=5)
EDIT = EditSettings(steps=2)


@pytest.fixture
def studio(editor, tmp_path):
    return Studio(editor, tmp_path / "work")


@pytest.fixture
def image(tmp_path, base_image):
    path = tmp_path / "photo.png"
    base_image.save(path)
    return path


def test_examples_are_bundled_with_the_readme_input_first():
    names = [p.name for p in example_images()]
    assert names[0] == "shapes.png" and len(names) >= 3
    assert not any(name.endswith("-mask.png") for name in names)  # the demo's mask is no example


def test_bad_file_names_the_file_not_the_temp_path(studio, tmp_path):
    broken = tmp_path / "upload-dir" / "broken.png"
    broken.parent.mkdir()
    broken.write_text("not an image")
    with pytest.raises(UnituneError) as error:
        studio.load(SessionState(), broken, "s1")
    assert str(error.value) == "broken.png: not an image file"


def test_nothing_runs_before_an_image_is_chosen(studio):
    with pytest.raises(UnituneError, match="upload an image"):
        studio.tune(SessionState(), TUNE, "s1")


def test_tune_once_then_edits_reuse_it(studio, image):
    tune = TuneSettings(steps=2, seed=4242)  # a tune no other test makes
    state = studio.load(SessionState(), image, "s1")
    assert "Not tuned yet" in studio.tune_status(state, tune)
    tune_bars = []
    state, message = studio.tune(state, tune, "s1", bar=_record(tune_bars))
    assert message.startswith("**Tuned** in") and state.tune_key
    assert [step for step, _ in tune_bars] == [(1, 2), (2, 2)]
    assert all(desc.startswith("Tuning on the image · loss ") for _, desc in tune_bars)
    assert "cached tune" in studio.tune_status(state, tune)

    bars = []
    state, paths, message = studio.edit(state, "a hat\n\n at sunset ", EDIT, tune, "s1", bar=_record(bars))
    assert "reused the cached tune" in message
    assert not any(desc.startswith("Tuning") for _, desc in bars)  # the reused tune did not train again
    assert (
        bars[0] == ((1, 1), "Editing 1/2: a hat (seed 0)")  # 2 steps x strength 0.9
        and bars[-1][1] == "Editing 2/2: at sunset (seed 0)"
    )
    assert [read_settings(p)["prompt"] for p in paths] == ["a hat", "at sunset"]
    assert read_settings(paths[0])["tune_key"] == state.tune_key
    assert (paths[0].parent / "manifest.json").is_file()

    state, more, _ = studio.edit(state, "a hat", EditSettings(steps=2, seed=3, num_images=2), tune, "s1")
    assert len(more) == 2 and len(state.history) == 4
    rows = history_rows(state.history)
    assert rows[0][0] == 2 and rows[0][6] == 4 and rows[-1][1] == "a hat"  # newest first, seed 3 + 1


def test_a_new_image_keeps_the_history(studio, image, tmp_path, base_image):
    state = studio.load(SessionState(), image, "s1")
    state, _, _ = studio.edit(state, "a hat", EDIT, TUNE, "s1")
    other = tmp_path / "other.png"
    base_image.rotate(90).save(other)
    state = studio.load(state, other, "s1")
    assert state.name == "other.png" and state.tune_key is None and len(state.history) == 1


def test_sweep_writes_sheet_and_cells(studio, image):
    state = studio.load(SessionState(), image, "s2")
    state, sheet, files = studio.sweep(state, "pixel art", "5, 10", "0.5,1", EDIT, TUNE, "s2")
    assert sheet.is_file() and read_settings(sheet)["guidances"] == [5.0, 10.0]
    assert len([f for f in files if f.name.endswith(".png")]) == 1 + 4


@pytest.mark.parametrize(
    ("guidances", "strengths", "message"),
    [("5,x", "1", "guidances: expected"), ("", "1", "guidances: give"), ("5", "0", "strength must be")],
)
def test_bad_sweep_grid_fails_before_any_work(studio, image, guidances, strengths, message):
    state = studio.load(SessionState(), image, "s2")
    with pytest.raises(UnituneError, match=message):
        studio.sweep(state, "pixel art", guidances, strengths, EDIT, TUNE, "s2")
    assert state.runs == 0


def test_empty_prompts_are_refused():
    with pytest.raises(UnituneError, match="at least one edit prompt"):
        parse_prompts(" \n \n")


def test_stop_interrupts_tuning_and_caches_nothing(studio, image):
    state = studio.load(SessionState(), image, "s3")
    settings = TuneSettings(steps=50, seed=99)

    def stop_on_first_step(step, desc):
        studio.stop("s3")

    with pytest.raises(Cancelled):
        studio.tune(state, settings, "s3", bar=stop_on_first_step)
    assert "Not tuned yet" in studio.tune_status(state, settings)
    studio.stop("other-session")  # another session's stop does not touch this one
    state, message = studio.tune(state, TuneSettings(steps=1, seed=99), "s3")
    assert "Tuned" in message


def test_ui_without_gradio_is_one_line_and_exit_2(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    result = CliRunner().invoke(app, ["ui", "--model", "unused"])
    assert result.exit_code == 2
    assert result.output.strip() == "unitune: error: the web UI needs gradio: pip install 'unitune[ui]'"


def _record(bars):
    def bar(step, desc):
        bars.append((step, desc))

    return bar


def test_ui_on_a_busy_port_is_one_line_and_exit_2(tiny_model, tmp_path):
    pytest.importorskip("gradio")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            app, ["ui", "--model", tiny_model, "--port", port, "--cache-dir", tmp_path]
        )
    assert result.exit_code == 2
    assert f"unitune: error: cannot listen on 127.0.0.1:{port}: the port is in use" in result.output


def test_each_session_works_at_its_own_size(studio, tmp_path):
    """One loaded model, two sessions: one at the model's size, one at about 48 x 48 pixels; the image's
    aspect is kept, edits come back at the session's size, and a new size fits the same upload again."""
    from PIL import Image

    photo = tmp_path / "wide.png"
    Image.new("RGB", (80, 60), (200, 30, 30)).save(photo)
    native = studio.load(SessionState(), photo, "s1")
    larger = studio.load(SessionState(), photo, "s2", size=48)
    native_size, larger_size = Image.open(native.base).size, Image.open(larger.base).size
    assert larger_size[0] * larger_size[1] > native_size[0] * native_size[1]
    assert abs(larger_size[0] / larger_size[1] - 4 / 3) < 0.15 and studio.editor.sizing.size is None
    _, paths, _ = studio.edit(larger, "a hat", EDIT, TUNE, "s2")
    assert Image.open(paths[0]).size == larger_size
    back = studio.resize(larger, 0, "s2")
    assert back.size is None and Image.open(back.base).size == native_size and back.name == "wide.png"


def test_the_tune_steps_box_follows_the_method_unless_steps_were_given(editor, tmp_path):
    import copy

    from unitune.settings import ModelDefaults

    model = copy.copy(editor)
    model.defaults = ModelDefaults(tune_steps={"lora": 3})
    studio = Studio(model, tmp_path / "work")
    assert studio.tune_steps_for(TuneSettings(), "lora") == 3
    assert studio.tune_steps_for(TuneSettings(), "full") == 128  # not named: the built-in count
    assert studio.tune_steps_for(TuneSettings(steps=7), "lora") == 7  # given at launch: kept
