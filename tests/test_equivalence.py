"""With no tuning, edit == diffusers img2img and generate == diffusers text-to-image, pixel for pixel."""

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)

from unitune import EditSettings, TuneSettings

SCHEDULERS = [DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler, PNDMScheduler]
NO_TUNE = TuneSettings(steps=0)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def diffusers_pipe(cls, editor):
    components = {k: v for k, v in editor.pipe.components.items() if k != "image_encoder"}
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("strength", "guidance"), [(0.6, 7.5), (0.8, 1.0)])
def test_edit_matches_img2img(editor, base_image, scheduler_cls, strength, guidance):
    editor.pipe.scheduler = scheduler_cls.from_config(editor.pipe.scheduler.config, skip_prk_steps=True)
    settings = EditSettings(guidance=guidance, strength=strength, steps=6, seed=3)
    ours = editor.edit(base_image, [""], settings, NO_TUNE)[0].image
    pipe = diffusers_pipe(StableDiffusionImg2ImgPipeline, editor)
    theirs = pipe(
        NO_TUNE.rare_prompt,
        image=base_image,
        strength=strength,
        guidance_scale=guidance,
        num_inference_steps=6,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1e-4


@pytest.mark.parametrize(
    "scheduler_cls, rescale",
    [(SCHEDULERS[0], 0.0), (SCHEDULERS[1], 0.0), (SCHEDULERS[0], 0.7)],
    ids=["ddim", "euler", "ddim-guidance-rescale"],
)
def test_generate_matches_text_to_image(editor, scheduler_cls, rescale):
    editor.pipe.scheduler = scheduler_cls.from_config(editor.pipe.scheduler.config)
    settings = EditSettings(guidance=5.0, steps=5, seed=1, guidance_rescale=rescale)
    ours = editor.generate(["a red square"], settings)[0].image
    pipe = diffusers_pipe(StableDiffusionPipeline, editor)
    theirs = pipe(
        "a red square",
        guidance_scale=5.0,
        guidance_rescale=rescale,
        num_inference_steps=5,
        generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1e-4
    if rescale > 0:  # the dial does something: not the plain guided image
        plain = editor.generate(["a red square"], EditSettings(guidance=5.0, steps=5, seed=1))[0].image
        assert np.abs(pixels(ours) - pixels(plain)).max() > 1e-3


def test_same_seed_same_pixels_different_seed_differs(editor, base_image):
    settings = EditSettings(guidance=3.0, strength=0.7, steps=4, seed=5)
    first = editor.edit(base_image, ["blue"], settings, NO_TUNE)[0].image
    again = editor.edit(base_image, ["blue"], settings, NO_TUNE)[0].image
    other = editor.edit(
        base_image, ["blue"], EditSettings(guidance=3.0, strength=0.7, steps=4, seed=6), NO_TUNE
    )
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert np.abs(pixels(first) - pixels(other[0].image)).max() > 1e-2


def test_autoencoder_tiny_pipeline_edits_like_img2img_and_tunes(tmp_path, base_image):
    """The embedded model's VAE is an AutoencoderTiny: no latent distribution, latents returned directly."""
    from tiny import save_tiny_pipeline
    from unitune import Editor

    editor = Editor.load(str(save_tiny_pipeline(tmp_path / "taesd", taesd=True)), cache_dir=tmp_path / "c")
    assert type(editor.pipe.vae).__name__ == "AutoencoderTiny"
    settings = EditSettings(guidance=7.5, strength=0.6, steps=4, seed=3)
    ours = editor.edit(base_image, [""], settings, NO_TUNE)[0].image
    theirs = diffusers_pipe(StableDiffusionImg2ImgPipeline, editor)(
        NO_TUNE.rare_prompt,
        image=base_image,
        strength=0.6,
        guidance_scale=7.5,
        num_inference_steps=4,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1e-4
    tuned = editor.tune(base_image, TuneSettings(method="lora", steps=2))
    assert tuned.trained and len(tuned.losses) == 2
