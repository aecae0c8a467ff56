"""Does DreamBooth's prior preservation help UniTune? A full tune whose every batch holds 2 noised copies
of the base (with R) and 2 images the untuned model drew for captions of other random scenes (with
their captions; Ruiz et al. 2023, "DreamBooth", section 4.2), against the plain tune (4 copies of the
base), at the same 128 steps and rate 1e-4. Embedded model, edit benchmark validation split, same seeds.
A benchmark, not a test; results in docs/binding.md ("Prior preservation: tried, not adopted").

Usage: HF_HUB_OFFLINE=1 python bench/prior_preservation.py SCENES MODES     e.g. 8 plain,prior

Prints per mode and (guidance, strength): R alone scored as a no-op edit (preserved %, median PSNR to
the base), and the edits (success, expressive, preserved %). The tune loop is written out here (the
plain mode reproduces unitune's own tune: same draws, same optimizer); edits sample through the Editor.
"""

import random
import sys

import torch
from variant_tunes import compare, train_in_place

from unitune import EditSettings
from unitune.pipelines import Conditioning
from unitune.shapes.world import caption, sample_scene
from unitune.tuning import (
    encode_latent,
    encode_text,
    noisy_batch,
    trainable_parameters,
    training_scheduler,
)

CELLS = ((3, 1.0), (6, 1.0), (6, 0.8))


def make_tune(editor):
    """The prior images (8 captions of random scenes, drawn by the untuned model) are made once."""
    pipe, runtime = editor.pipe, editor.runtime
    rng = random.Random(777)
    prior_captions = [caption(sample_scene(rng, num_objects=1 + i % 2)) for i in range(8)]
    prior_images = [
        result.image for result in editor.generate(prior_captions, EditSettings(guidance=6, steps=20, seed=0))
    ]
    prior_latents = [encode_latent(pipe, image, runtime) for image in prior_images]
    prior_texts = [encode_text(pipe, text, runtime) for text in prior_captions]
    scheduler = training_scheduler(pipe)

    def batch(step, latent, text, mode, generator):
        if mode == "plain":
            noisy, t, target = noisy_batch(scheduler, latent, 4, generator)
            return noisy, t, target, text.expand(4)
        n1, t1, g1 = noisy_batch(scheduler, latent, 2, generator)
        i, j = (2 * step) % 8, (2 * step + 1) % 8
        n2a, t2a, g2a = noisy_batch(scheduler, prior_latents[i], 1, generator)
        n2b, t2b, g2b = noisy_batch(scheduler, prior_latents[j], 1, generator)
        texts = Conditioning.cat([text.expand(2), prior_texts[i], prior_texts[j]])
        return torch.cat([n1, n2a, n2b]), torch.cat([t1, t2a, t2b]), torch.cat([g1, g2a, g2b]), texts

    def tune(base, rare, mode, rate=1e-4):
        latent = encode_latent(pipe, base, runtime)
        text = encode_text(pipe, rare, runtime, base.size)
        groups = [{"params": trainable_parameters(pipe.unet, "full"), "lr": rate}]
        train_in_place(editor, groups, lambda step, generator: batch(step, latent, text, mode, generator))

    return tune


if __name__ == "__main__":
    compare(make_tune, int(sys.argv[1]), sys.argv[2].split(","), cells=CELLS)
