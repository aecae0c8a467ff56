"""Does weighting the tune's loss by timestep help UniTune? Binding errors sit in details (edges a pixel
off, colour drift), which the low-noise timesteps draw; the edit words compete with R at the high-noise
ones. A full tune whose loss weights sample i of the stratified batch (i = 0: the lowest-noise quarter of
the schedule) by w_i, at a given rate, against the plain tune (every w_i = 1, rate 1e-4: unitune's own
tune, same draws and optimizer). Embedded model, edit benchmark validation split, same seeds. A
benchmark, not a test; results in docs/binding.md ("Timestep weights in the tune").

Usage: HF_HUB_OFFLINE=1 python bench/timestep_weights.py SCENES MODE [MODE ...]
       a MODE is `w0:w1:w2:w3@rate`, e.g. `1:1:1:1@1e-4` (plain) or `1:1:0.5:0.25@2e-4`

Prints per mode and (guidance, strength): R alone scored as a no-op edit (preserved %, median PSNR to
the base), and the edits (success, expressive, preserved %).
"""

import sys

import torch
import torch.nn.functional as F
from variant_tunes import compare, train_in_place

from unitune.tuning import (
    encode_latent,
    encode_text,
    loss_of,
    noisy_batch,
    trainable_parameters,
    training_scheduler,
)


def parse_mode(text: str) -> tuple[torch.Tensor, float]:
    weights, rate = text.split("@")
    return torch.tensor([float(w) for w in weights.split(":")]), float(rate)


def weighted_loss(unet, noisy, steps, target, text, runtime, weights):
    """The per-sample MSE weighted by stratum, normalised so the weights average to 1."""
    if bool((weights == 1).all()):
        return loss_of(unet, noisy, steps, target, text, runtime)  # unitune's own loss, bit for bit
    with runtime.autocast():
        pred = unet(noisy, steps, **text.unet_kwargs()).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weights / weights.mean()).mean()


def make_tune(editor):
    pipe, runtime = editor.pipe, editor.runtime
    scheduler = training_scheduler(pipe)

    def tune(base, rare, mode):
        weights, rate = parse_mode(mode)
        latent = encode_latent(pipe, base, runtime)
        text = encode_text(pipe, rare, runtime, base.size).expand(len(weights))

        def batch(step, generator):
            return *noisy_batch(scheduler, latent, len(weights), generator), text

        def loss(unet, noisy, steps, target, text, runtime):
            return weighted_loss(unet, noisy, steps, target, text, runtime, weights)

        groups = [{"params": trainable_parameters(pipe.unet, "full"), "lr": rate}]
        train_in_place(editor, groups, batch, loss)

    return tune


if __name__ == "__main__":
    compare(make_tune, int(sys.argv[1]), sys.argv[2:])
