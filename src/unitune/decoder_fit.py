"""The decoder fit: after the UNet's tune, fit the autoencoder's decoder so that it decodes the image's own
latent as the image (Blended Latent Diffusion's per-image decoder fit, Avrahami et al. 2023, section 4.2).

The UNet's tune binds the scene to R in latent space, but no latent decodes better than the decoder
allows: the embedded model's round trip alone costs 29.9-35 dB, and on thin edges and fine texture that
is most of what R redrawn from noise misses (docs/lab/binding.md). The fit is part of the tune
(`TuneSettings.decoder_steps`, the cache key, the cached file: its tensors under `DECODER_PREFIX`) and is
applied with it by `weights.UNetWeights`; the encoder is untouched, so the automatic dial reads samples as
before. Off (0 steps) by default; the embedded model fits 50 steps (its `unitune.json`). A fitted decoder
decodes behind `unitune.decoder_gate`: alone it pulls edits back towards the image (docs/lab/binding.md,
"Fitting the decoder to the image" and "The decoder gate").
"""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler

from .errors import UnituneError
from .loading import Runtime
from .progress import Progress, ProgressFn, StopFn, check_stop, report
from .settings import TuneSettings

DECODER_PREFIX = "vae.decoder."  # the decoder's tensors in a cached tune's file
WARMUP_SHARE = 5  # the learning rate rises linearly over the first 1/5 of the fit's steps


def split_decoder(tensors: dict[str, torch.Tensor] | None):
    """A cached tune's tensors as (the UNet's, the fitted decoder's without the prefix; empty: none)."""
    if tensors is None:
        return None, {}
    decoder = {
        name[len(DECODER_PREFIX) :]: t for name, t in tensors.items() if name.startswith(DECODER_PREFIX)
    }
    unet = {name: t for name, t in tensors.items() if not name.startswith(DECODER_PREFIX)}
    return unet, decoder


def fit_decoder(
    pipe,
    latent: torch.Tensor,
    image: torch.Tensor,
    settings: TuneSettings,
    runtime: Runtime,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> list[float]:
    """Fit pipe.vae.decoder in place for `settings.decoder_steps` Adam steps so that it decodes `latent`
    (scaled, as `tuning.encode_latent` gives it) as `image` ((1, 3, H, W) in [-1, 1]); returns the step
    losses (mean squared error in [-1, 1]). Gradients and optimizer state are gone when it returns."""
    decoder = pipe.vae.decoder
    if any(p.dtype != torch.float32 for p in decoder.parameters()):
        raise UnituneError(
            "--decoder-steps needs the autoencoder in float32 (load the model with --dtype float32)"
        )
    unscaled = (latent / pipe.vae.config.scaling_factor).to(runtime.device, torch.float32)
    target = image.to(runtime.device, torch.float32)
    params = list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=settings.decoder_learning_rate)
    # Adam's first steps move every weight by about the rate whatever its gradient: on a small decoder
    # that first undoes the fit it then repairs (loss x10 by step 2 at 2e-4, docs/lab/binding.md); a warm-up
    # over the first fifth of the steps keeps the loss falling from the start
    schedule = get_scheduler(
        "constant_with_warmup", optimizer, num_warmup_steps=max(1, settings.decoder_steps // WARMUP_SHARE)
    )
    losses = []
    decoder.requires_grad_(True)
    try:
        for step in range(1, settings.decoder_steps + 1):
            check_stop(should_stop)
            decoded = pipe.vae.decode(unscaled, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(decoded.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            report(progress, Progress("decoder", step, settings.decoder_steps, loss=losses[-1]))
    finally:
        for param in params:
            param.grad = None
        optimizer.state.clear()
        decoder.requires_grad_(False)
    return losses


def decoder_tensors(pipe) -> dict[str, torch.Tensor]:
    """CPU copies of the decoder's weights, named as a cached tune stores them."""
    state = pipe.vae.decoder.state_dict()
    return {DECODER_PREFIX + name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}
