"""SDXL (two text encoders, pooled embedding, size conditioning): tune, edit, sweep, cache and CLI on a tiny
random SDXL pipeline; with no tuning, edit == diffusers' SDXL img2img and generate == SDXL text-to-image."""

import json

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image
from typer.testing import CliRunner

from tiny import save_tiny_xl_pipeline
from unitune import Editor, EditSettings, TuneSettings
from unitune.cli import app

NO_TUNE = TuneSettings(steps=0)


@pytest.fixture(scope="module")
def xl_model(tmp_path_factory) -> str:
    return str(save_tiny_xl_pipeline(tmp_path_factory.mktemp("tiny-sdxl")))


@pytest.fixture(scope="module")
def xl_editor(xl_model, tmp_path_factory) -> Editor:
    return Editor.load(xl_model, device="cpu", cache_dir=tmp_path_factory.mktemp("xl-cache"))


@pytest.fixture
def xl(xl_editor):
    scheduler = xl_editor.pipe.scheduler
    xl_editor.restore_base()
    yield xl_editor
    xl_editor.pipe.scheduler = scheduler


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def diffusers_xl(cls, editor):
    names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")
    pipe = cls(**{name: getattr(editor.pipe, name) for name in names}, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_an_sdxl_folder_loads_as_sdxl_img2img(xl):
    assert isinstance(xl.pipe, StableDiffusionXLImg2ImgPipeline)
    assert xl.native_size == 32 and xl.stride == 2


@pytest.mark.parametrize("scheduler_cls", [EulerDiscreteScheduler, DDIMScheduler], ids=lambda c: c.__name__)
@pytest.mark.parametrize(("strength", "guidance", "size"), [(0.6, 7.5, (32, 32)), (0.8, 1.0, (42, 28))])
def test_edit_matches_sdxl_img2img(xl, base_image, scheduler_cls, strength, guidance, size):
    xl.pipe.scheduler = scheduler_cls.from_config(xl.pipe.scheduler.config)
    base = base_image.resize(size)
    settings = EditSettings(guidance=guidance, strength=strength, steps=6, seed=3)
    ours = xl.edit(base, [""], settings, NO_TUNE)[0].image
    theirs = diffusers_xl(StableDiffusionXLImg2ImgPipeline, xl)(
        NO_TUNE.rare_prompt,
        image=base,
        strength=strength,
        guidance_scale=guidance,
        num_inference_steps=6,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert ours.size == theirs.size == size
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1e-4


def test_generate_matches_sdxl_text_to_image(xl):
    settings = EditSettings(guidance=5.0, steps=5, seed=1)
    ours = xl.generate(["a red square"], settings)[0].image
    theirs = diffusers_xl(StableDiffusionXLPipeline, xl)(
        "a red square",
        guidance_scale=5.0,
        num_inference_steps=5,
        height=32,
        width=32,
        generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1e-4


@pytest.mark.parametrize("method", ["full", "lora"])
def test_sdxl_tunes_lower_the_loss_edit_and_restore_the_unet(xl, base_image, method):
    from unitune.tuning import encode_latent, encode_text, evaluate_loss

    before = {k: v.clone() for k, v in xl.pipe.unet.state_dict().items()}
    tune = TuneSettings(method=method, steps=12, learning_rate=1e-3 if method == "full" else 1e-2, seed=4)
    result = xl.tune(base_image, tune)
    assert result.trained and len(result.losses) == 12
    latent = encode_latent(xl.pipe, base_image, xl.runtime)
    text = encode_text(xl.pipe, tune.rare_prompt, xl.runtime, base_image.size)
    untuned = evaluate_loss(xl.pipe, latent, text, xl.runtime)
    with xl.applied(result):
        tuned = evaluate_loss(xl.pipe, latent, text, xl.runtime)
    assert tuned < untuned
    events = []
    [edited] = xl.edit(base_image, ["x"], EditSettings(steps=2, strength=0.5), tune, progress=events.append)
    assert not [e for e in events if e.stage == "tune"]  # cached
    assert edited.image.size == (32, 32) and edited.settings["tune_key"] == result.key
    xl.restore_base()  # the edit left its tune applied
    after = xl.pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sdxl_sweep_with_the_automatic_dial(xl, base_image):
    tune = TuneSettings(method="lora", steps=2, seed=5)
    sweep = xl.sweep(base_image, "x", [1.0, 3.0], [0.5, 1.0], EditSettings(steps=2, auto=True), tune)
    assert len(sweep.results) == 4 and sweep.picked in range(4) and sweep.sheet.size[0] > 64


def test_the_sdxl_identity_covers_the_second_text_encoder(xl, xl_model, tmp_path):
    import os
    import shutil

    from unitune.loading import model_identity

    copy = tmp_path / "model"
    shutil.copytree(xl_model, copy)
    before = model_identity(str(copy), xl.pipe)
    for file in ("text_encoder_2/model.safetensors", "tokenizer_2/tokenizer_config.json"):
        os.utime(copy / file, ns=(0, (copy / file).stat().st_mtime_ns + 1))
        assert model_identity(str(copy), xl.pipe) != before
        before = model_identity(str(copy), xl.pipe)


def test_sdxl_from_the_cli(xl_model, tmp_path, base_image):
    path = tmp_path / "base.png"
    base_image.save(path)
    out = tmp_path / "out"
    args = [
        "edit",
        str(path),
        "x",
        "--model",
        xl_model,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, [*args, "--tune-steps", "1", "--method", "lora", "--steps", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert Image.open(out / manifest["images"][0]["file"]).size == (32, 32)


def test_sdxl_in_the_web_ui_session(xl, tmp_path):
    """The UI holds no diffusion logic: its actions on an SDXL editor tune and edit as on SD."""
    from unitune.ui.session import SessionState, Studio

    path = tmp_path / "wide.png"
    Image.new("RGB", (60, 40), (200, 40, 40)).save(path)
    studio = Studio(xl, tmp_path / "work")
    tune = TuneSettings(method="lora", steps=1, seed=6)
    state = studio.load(SessionState(), path, "s1")
    state, message = studio.tune(state, tune, "s1")
    assert message.startswith("**Tuned**")
    state, paths, _ = studio.edit(state, "x", EditSettings(steps=2, strength=0.5), tune, "s1")
    assert Image.open(paths[0]).size == (42, 28)  # 3:2 kept


@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, EulerDiscreteScheduler], ids=lambda c: c.__name__)
def test_a_localised_sdxl_edit_estimates_its_mask_and_keeps_the_base_outside_it(
    xl, base_image, tmp_path, scheduler_cls
):
    """The automatic mask works with SDXL's two encoders and size conditioning; a white mask gives the
    unlocalised edit bit for bit and a black one the base's reconstruction, with a sigma-based scheduler
    (Euler: the blend noises the base with the row's own scheduler) as with DDIM."""
    xl.pipe.scheduler = scheduler_cls.from_config(xl.pipe.scheduler.config)
    settings = EditSettings(steps=4, strength=0.6, guidance=3.0, seed=1)
    tune = TuneSettings(steps=1, learning_rate=1e-2)
    [auto] = xl.edit(
        base_image, ["a red circle"], EditSettings(**{**settings.to_dict(), "localize": "auto"}), tune
    )
    assert auto.settings["mask_source"] == "auto" and auto.mask.size == auto.image.size
    [plain] = xl.edit(base_image, ["a red circle"], settings, tune)
    white, black = tmp_path / "white.png", tmp_path / "black.png"
    Image.new("L", (8, 8), 255).save(white)
    Image.new("L", (8, 8), 0).save(black)
    [same] = xl.edit(base_image, ["a red circle"], settings, tune, mask=white)
    assert np.array_equal(np.asarray(same.image), np.asarray(plain.image))
    [kept] = xl.edit(base_image, ["a red circle"], settings, tune, mask=black)
    assert not np.array_equal(np.asarray(kept.image), np.asarray(plain.image))


def test_an_sdxl_edit_from_the_inversion_returns_the_base_for_r_alone_with_a_euler_model(
    xl, base_image, tmp_path
):
    """Inversion samples with DDIM (noise maps need its noise input) whatever the model's scheduler, and
    leaves the model's own in place; R alone lands on the base latent, as an all-black mask does."""
    xl.pipe.scheduler = EulerDiscreteScheduler.from_config(xl.pipe.scheduler.config)
    settings = EditSettings(
        steps=4, strength=1.0, guidance=3.0, seed=1, inversion=True, inversion_guidance=3.0
    )
    tune = TuneSettings(steps=1, learning_rate=1e-2)
    [kept, edited] = xl.edit(base_image, ["", "a red circle"], settings, tune)
    black = tmp_path / "black.png"
    Image.new("L", (8, 8), 0).save(black)
    [reconstruction] = xl.edit(base_image, ["a red circle"], settings, tune, mask=black)
    assert np.abs(pixels(kept.image) - pixels(reconstruction.image)).max() <= 1 / 255
    assert not np.array_equal(np.asarray(edited.image), np.asarray(kept.image))
    assert isinstance(xl.pipe.scheduler, EulerDiscreteScheduler)
