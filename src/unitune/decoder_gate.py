"""The decoder gate: a tune's fitted decoder (unitune.decoder_fit) decodes a sample only where the sample
is still the image; where the edit changed it, the model's own decoder does.

A decoder fitted to one latent is right near that latent and pulls a latent away from it back towards
the image: decoding an edit's ideal target, the fitted decoder draws a recoloured object nearer the
image's colour than the model's decoder does (docs/lab/binding.md, "The decoder gate"). The gate mixes the
two decodings, out = m * fitted(z) + (1 - m) * model(z), with the mask of base-detail interpolation,
m = `interpolation.unchanged_mask(model(z), model(z_image), gate)`. Both sides of the mask are the model's
own decodings, so its blur cancels and only a real change closes the gate.
"""

from __future__ import annotations

import torch

from .interpolation import unchanged_mask
from .sampling import decode
from .tuning import encode_latent


def decode_samples(model, latents: list[torch.Tensor], gates: list[float], base) -> list[torch.Tensor]:
    """`model`: anything with the loaded `pipe`, `runtime` and `weights` (a `SamplingModel`, an Editor).
    Each sample's latents ((1, C, h, w), scaled) to pixels in [0, 1], (1, 3, H, W) on the CPU. With a
    tune's fitted decoder in place, a sample whose gate (`EditSettings.decoder_gate`) is > 0 is decoded by
    both decoders and mixed; else by the decoder in place. `base`: the working image the tune was fitted
    on (None, from pure noise without one: no gate)."""
    pipe, runtime, weights = model.pipe, model.runtime, model.weights
    decoded = [decode(pipe, z, runtime) for z in latents]
    gated = [i for i, gate in enumerate(gates) if gate > 0]
    if not (weights.decoder_fitted and gated and base is not None):
        return decoded
    with weights.model_decoder():
        image = decode(pipe, encode_latent(pipe, base, runtime), runtime)
        model = {i: decode(pipe, latents[i], runtime) for i in gated}
    for i in gated:
        mask = unchanged_mask(model[i], image, gates[i])
        decoded[i] = mask * decoded[i] + (1 - mask) * model[i]
    return decoded
