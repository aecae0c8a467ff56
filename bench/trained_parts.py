"""Does training only part of the UNet help UniTune? A full tune of a subset of the UNet's weights (the
rest frozen; autograd then skips the weight gradients of frozen layers and the whole backward pass below
the first trained one), against the plain tune of every weight: same 128 steps, rate 1e-4, draws and
optimizer. Custom Diffusion (Kumari et al. 2023) trains only cross-attention; a decoder-only tune skips
the encoder's backward pass. Embedded model, edit benchmark validation split, same seeds. A benchmark,
not a test; results in docs/binding.md ("Training part of the UNet").

Usage: HF_HUB_OFFLINE=1 python bench/trained_parts.py SCENES PART [PART ...]
       PART: all, decoder (mid and up blocks, output layers), up (up blocks, output layers),
       attention (every transformer block), cross (cross-attention projections only)

Prints per part: seconds per tune (mean; compare only within one run), and per (guidance, strength) R
alone scored as a no-op edit (preserved %, median PSNR to the base) and the edits (success, expressive,
preserved %). THREADS=1 runs one thread.
"""

import sys

import torch
from variant_tunes import compare, train_in_place

from unitune.tuning import encode_latent, encode_text, noisy_batch, training_scheduler

BATCH = 4
PARTS = {
    "all": lambda name: True,
    "decoder": lambda name: name.startswith(("mid_block", "up_blocks", "conv_norm_out", "conv_out")),
    "up": lambda name: name.startswith(("up_blocks", "conv_norm_out", "conv_out")),
    "attention": lambda name: ".attentions." in name,
    "cross": lambda name: ".attn2.to_" in name,
}


def trained(unet, part: str) -> list[torch.nn.Parameter]:
    unet.requires_grad_(False)
    params = [p for name, p in unet.named_parameters() if PARTS[part](name)]
    for param in params:
        param.requires_grad_(True)
    return params


def make_tune(editor):
    pipe, runtime = editor.pipe, editor.runtime
    scheduler = training_scheduler(pipe)

    def tune(base, rare, part, rate=1e-4):
        latent = encode_latent(pipe, base, runtime)
        text = encode_text(pipe, rare, runtime, base.size).expand(BATCH)

        def batch(step, generator):
            return *noisy_batch(scheduler, latent, BATCH, generator), text

        train_in_place(editor, [{"params": trained(pipe.unet, part), "lr": rate}], batch)

    return tune


if __name__ == "__main__":
    compare(make_tune, int(sys.argv[1]), sys.argv[2:])
