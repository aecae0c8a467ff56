"""Model guidance (SINE's, in UniTune's sampler): the untuned model's edit direction at the tuned steps."""

import copy

import numpy as np
import pytest
import torch

from unitune import EditSettings, TuneSettings, UnituneError
from unitune.images import fit
from unitune.sampling import decode, encode_prompts, initial_latents, schedule, to_pil

TUNE = TuneSettings(steps=2, learning_rate=5e-2, seed=96)
SETTINGS = EditSettings(steps=4, strength=1.0, guidance=3.0, model_guidance=1.5)


@pytest.mark.parametrize("guidance", [3.0, 1.0], ids=["guided", "unguided"])
def test_model_guidance_adds_the_untuned_models_reading_of_the_edit_words(editor, base_image, guidance):
    """The sampler against a loop written out here with two UNets: u + g (c - u) + e (c0 - u0), u and c
    the tuned UNet's predictions for "" and "R a red circle", u0 and c0 the base UNet's for "" and "a red
    circle"; without guidance c + e (c0 - u0); the same pixels."""
    settings = EditSettings(**{**SETTINGS.to_dict(), "guidance": guidance})
    [result] = editor.edit(base_image, ["a red circle"], settings, TUNE)
    tuned = copy.deepcopy(editor.pipe.unet)  # the tune stays applied after an edit
    editor.restore_base()
    untuned, pipe, runtime = editor.pipe.unet, editor.pipe, editor.runtime
    base = fit(base_image, editor.work_size(base_image.size))
    guided = guidance > 1
    rows = encode_prompts(pipe, result.settings["full_prompt"], "", guided, runtime, base.size).unet_kwargs()
    edit_rows = encode_prompts(pipe, "a red circle", "", True, runtime, base.size).unet_kwargs()
    timesteps = schedule(pipe, SETTINGS.steps, 1.0, runtime.device)
    generator = torch.Generator().manual_seed(SETTINGS.seed)
    latents = initial_latents(pipe, base, timesteps, 1.0, generator, runtime, base.size)
    extra = pipe.prepare_extra_step_kwargs(generator, 0.0)
    with torch.no_grad():
        for t in timesteps:
            model_input = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
            if guided:
                u, c = tuned(model_input, t, **rows).sample.chunk(2)
                pred = u + guidance * (c - u)
            else:
                pred = tuned(model_input[:1], t, **rows).sample
            u0, c0 = untuned(model_input, t, **edit_rows).sample.chunk(2)
            pred = pred + SETTINGS.model_guidance * (c0 - u0)
            latents = pipe.scheduler.step(pred, t, latents, **extra, return_dict=False)[0]
    expected = to_pil(decode(pipe, latents, runtime))[0]
    assert np.array_equal(np.asarray(result.image), np.asarray(expected))


def test_model_guidance_changes_the_edit_records_itself_and_puts_the_tune_back(editor, base_image):
    plain_settings = EditSettings(**{**SETTINGS.to_dict(), "model_guidance": 0.0})
    [plain] = editor.edit(base_image, ["a"], plain_settings, TUNE)
    applied = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    [guided] = editor.edit(base_image, ["a"], SETTINGS, TUNE)
    assert guided.settings["model_guidance"] == 1.5 and plain.settings["model_guidance"] == 0.0
    assert not np.array_equal(np.asarray(plain.image), np.asarray(guided.image))
    assert all(torch.equal(applied[k], v) for k, v in editor.pipe.unet.state_dict().items())  # tune back
    [again] = editor.edit(base_image, ["a"], SETTINGS, TUNE)
    assert np.array_equal(np.asarray(guided.image), np.asarray(again.image))  # reproducible


def test_model_guidance_leaves_the_untuned_tail_to_the_untuned_model(editor, base_image):
    """With every step in the untuned tail there is no tuned step to guide: the plain tail's pixels."""
    tail = {**SETTINGS.to_dict(), "untuned_tail": 0.99}
    [guided] = editor.edit(base_image, ["a"], EditSettings(**tail), TUNE)
    [plain] = editor.edit(base_image, ["a"], EditSettings(**{**tail, "model_guidance": 0.0}), TUNE)
    assert np.array_equal(np.asarray(guided.image), np.asarray(plain.image))


def test_generation_has_no_edit_to_guide(editor):
    plain = EditSettings(**{**SETTINGS.to_dict(), "model_guidance": 0.0})
    [guided], [unguided] = editor.generate("a", SETTINGS), editor.generate("a", plain)
    assert np.array_equal(np.asarray(guided.image), np.asarray(unguided.image))


@pytest.mark.parametrize("weight", [-0.5, 21.0])
def test_absurd_model_guidance_is_an_error(weight):
    with pytest.raises(UnituneError, match="model guidance"):
        EditSettings(model_guidance=weight)


def test_an_output_with_model_guidance_says_so_in_its_file_name():
    from unitune.outputs import EditResult, result_name

    settings = {"prompt": "a", "guidance": 3.0, "strength": 1.0, "seed": 0, "model_guidance": 1.0}
    assert result_name(0, EditResult(None, settings)) == "000-a-g3-s1-mg1-seed0.png"
    assert result_name(0, EditResult(None, {**settings, "model_guidance": 0.0})) == "000-a-g3-s1-seed0.png"
