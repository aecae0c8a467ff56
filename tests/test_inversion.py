"""Edits from the base's edit-friendly DDPM inversion (unitune.inversion)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from unitune import EditSettings, TuneSettings, UnituneError
from unitune.images import fit
from unitune.sampling import decode, to_pil

TUNE = TuneSettings(steps=2, learning_rate=5e-2, seed=91)


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def _reconstruction(editor, base_image):
    base = fit(base_image, editor.work_size(base_image.size))
    pipe = editor.pipe
    with torch.no_grad():
        latent = pipe.vae.encode(pipe.image_processor.preprocess(base)).latent_dist.mode()
    return to_pil(decode(pipe, latent * pipe.vae.config.scaling_factor, editor.runtime))[0]


@pytest.mark.parametrize(("strength", "tail"), [(0.6, 0.0), (1.0, 0.0), (1.0, 0.5)])
def test_r_alone_from_the_inversion_returns_the_base_images_reconstruction(
    editor, base_image, strength, tail
):
    """The noise maps are what sampling "R" needs to land on the base latent, with the weights each step
    samples with (the tune; the untuned ones in the tail)."""
    settings = EditSettings(
        steps=4,
        strength=strength,
        guidance=3.0,
        seed=2,
        inversion=True,
        inversion_guidance=3.0,
        untuned_tail=tail,
    )
    [kept] = editor.edit(base_image, [""], settings, TUNE)
    assert np.abs(_pixels(kept.image) - _pixels(_reconstruction(editor, base_image))).max() <= 1


def test_an_inverted_edit_follows_its_words_and_its_seed(editor, base_image):
    settings = EditSettings(steps=4, strength=1.0, guidance=3.0, seed=2, inversion=True)
    first, other_words = editor.edit(base_image, ["a green background", "a red circle"], settings, TUNE)
    [again] = editor.edit(base_image, ["a green background"], settings, TUNE)
    [plain] = editor.edit(
        base_image, ["a green background"], EditSettings(steps=4, strength=1.0, guidance=3.0, seed=2), TUNE
    )
    assert np.array_equal(_pixels(first.image), _pixels(again.image))
    assert not np.array_equal(_pixels(first.image), _pixels(other_words.image))
    assert not np.array_equal(_pixels(first.image), _pixels(plain.image))
    assert first.settings["inversion"] is True


def test_a_later_edit_of_the_same_image_and_tune_reuses_the_inversion_and_gets_the_same_pixels(
    editor, base_image
):
    """The editor keeps the last inversions: another guidance on the same base, tune and schedule inverts
    nothing new and gives the pixels a fresh inversion gives; another seed, strength, untuned tail or
    image inverts again."""
    settings = EditSettings(steps=4, strength=1.0, guidance=3.0, seed=2, inversion=True)
    editor.edit(base_image, ["a red circle"], settings, TUNE)
    cache = editor.inversions
    misses = cache.misses
    [reused] = editor.edit(base_image, ["a red circle"], replace(settings, guidance=5.0), TUNE)
    assert cache.misses == misses
    cache.clear()
    [fresh] = editor.edit(base_image, ["a red circle"], replace(settings, guidance=5.0), TUNE)
    assert cache.misses == misses + 1
    assert np.array_equal(_pixels(reused.image), _pixels(fresh.image))
    for other in (
        {"seed": 3},
        {"strength": 0.6},
        {"untuned_tail": 0.5},
        {"inversion_guidance": 2.0},
        {"steps": 5},
    ):
        before = cache.misses
        editor.edit(base_image, ["a red circle"], replace(settings, **other), TUNE)
        assert cache.misses == before + 1, other
    before = cache.misses
    editor.edit(base_image.transpose(0), ["a red circle"], settings, TUNE)  # mirrored: another image, tune
    assert cache.misses == before + 1


@pytest.mark.parametrize("guidance", [-1.0, float("nan"), float("inf")])
def test_an_absurd_inversion_guidance_is_refused(guidance):
    with pytest.raises(UnituneError, match="inversion guidance"):
        EditSettings(inversion=True, inversion_guidance=guidance)


def test_the_cli_takes_the_inversion_and_records_it(tmp_path, base_image, tiny_model):
    from typer.testing import CliRunner

    from unitune.cli import app

    image, out = tmp_path / "in.png", tmp_path / "out"
    base_image.save(image)
    args = ["edit", str(image), "x", "--model", tiny_model, "--out", str(out), "--cache-dir", str(tmp_path)]
    args += ["--tune-steps", "0", "--steps", "2", "--inversion", "--inversion-guidance", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "manifest.json").read_text())["images"][0]["settings"]
    assert settings["inversion"] is True and settings["inversion_guidance"] == 2.0
