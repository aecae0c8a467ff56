"""Images sampled together in one UNet batch (`--sample-batch`): each row is still its own diffusers loop
(anchored to img2img / text-to-image row by row), the order is kept, and the batches have the size asked."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

from test_equivalence import NO_TUNE, SCHEDULERS, diffusers_pipe, pixels
from unitune import EditSettings, TuneSettings, UnituneError
from unitune.images import fit
from unitune.progress import RunControl
from unitune.sample_batches import SampleRequest, sample_requests

# rows that join the schedule at three different steps, two prompts, two seeds
ROWS = [("a red square", 0.6, 3), ("", 0.8, 4), ("a red square", 1.0, 5)]
ROUNDING = 3 / 255  # a batched UNet call rounds differently; the difference must stay at rounding level


def _reference(editor, base, prompt, strength, seed, scheduler_cls):
    """The row alone, as diffusers samples it (img2img below strength 1, else text-to-image)."""
    common = dict(guidance_scale=5.0, num_inference_steps=6, generator=torch.Generator().manual_seed(seed))
    if strength < 1:
        pipe = diffusers_pipe(StableDiffusionImg2ImgPipeline, editor)
        return pipe(prompt, image=base, strength=strength, **common).images[0]
    pipe = diffusers_pipe(StableDiffusionPipeline, editor)
    return pipe(prompt, height=base.height, width=base.width, **common).images[0]


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS, ids=lambda c: c.__name__)
def test_each_row_of_a_batch_is_its_own_diffusers_sample(editor, base_image, scheduler_cls):
    editor.pipe.scheduler = scheduler_cls.from_config(editor.pipe.scheduler.config, skip_prk_steps=True)
    base = fit(base_image, editor.work_size(base_image.size))
    requests = [
        SampleRequest(prompt, EditSettings(guidance=5.0, strength=s, steps=6, sample_batch=3), seed, prompt)
        for prompt, s, seed in ROWS
    ]
    ours = sample_requests(editor.sampling_model(), requests, base, run=RunControl(None, None))
    theirs = [_reference(editor, base, p, s, seed, scheduler_cls) for p, s, seed in ROWS]
    differences = [[np.abs(pixels(o) - pixels(t)).max() for t in theirs] for o, *_ in ours]
    for row, row_differences in enumerate(differences):
        assert row_differences[row] <= ROUNDING  # its own reference, at rounding level
        assert all(d > 10 * ROUNDING for i, d in enumerate(row_differences) if i != row)  # no other's


def test_a_batched_tuned_edit_keeps_order_and_matches_one_at_a_time(editor, base_image):
    """Tune, untuned tail and model guidance, two prompts x two seeds: sampled three at a time (a batch of
    three and one of one) or one at a time, the same images at rounding level, in the same order."""
    tune = TuneSettings(steps=2, learning_rate=5e-2, seed=97)
    settings = EditSettings(
        steps=5, strength=0.8, guidance=3.0, untuned_tail=0.3, model_guidance=1.0, num_images=2
    )
    prompts = ["a red circle", "a green background"]
    alone = editor.edit(base_image, prompts, settings, tune)
    together = editor.edit(
        base_image, prompts, EditSettings(**{**settings.to_dict(), "sample_batch": 3}), tune
    )
    order = [(prompt, seed) for prompt in prompts for seed in (0, 1)]
    for one, batched, (prompt, seed) in zip(alone, together, order, strict=True):
        assert (batched.settings["prompt"], batched.settings["seed"]) == (prompt, seed)
        assert batched.settings["sample_batch"] == 3
        assert np.abs(pixels(one.image) - pixels(batched.image)).max() <= ROUNDING
    assert np.abs(pixels(alone[0].image) - pixels(alone[1].image)).max() > 10 * ROUNDING  # seeds differ


def test_batches_have_the_size_asked_and_keys_split_them(editor, base_image):
    sizes = []
    hook = editor.pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        settings = EditSettings(steps=2, strength=1.0, guidance=3.0, sample_batch=2)
        editor.generate(["a", "b", "c"], settings)  # guided: two UNet rows per image
        assert sizes == [4, 4, 2, 2]
        sizes.clear()
        editor.sweep(base_image, "a", [1.0, 3.0], [1.0], settings, NO_TUNE)  # guidance off and on: apart
        assert sizes == [1, 1, 2, 2]
    finally:
        hook.remove()


@pytest.mark.parametrize("size", [0, 65])
def test_absurd_sample_batch_is_an_error(size):
    with pytest.raises(UnituneError, match="sample batch"):
        EditSettings(sample_batch=size)
