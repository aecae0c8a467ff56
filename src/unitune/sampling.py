"""UniTune step 2: sample "R edit_prompt" with classifier-free guidance, from noise or a noised base image.

Built from the pipeline's own pieces (encode_prompt, get_timesteps, prepare_latents, scheduler.step,
image_processor), so with an untuned UNet it reproduces StableDiffusionImg2ImgPipeline for strength < 1
and StableDiffusionPipeline (text-to-image) for strength = 1, pixel for pixel, with the same generator.
The loop is a generator that yields every step, so callers can stream and stop it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from . import graphs
from .errors import UnituneWarning
from .loading import Runtime
from .pipelines import Conditioning, encode, vae_precision


def check_prompt_length(pipe, prompt: str) -> None:
    """Warn when a prompt is longer than the tokenizer's limit (CLIP: 77 tokens); it will be truncated."""
    limit = pipe.tokenizer.model_max_length
    count = len(pipe.tokenizer(prompt, truncation=False).input_ids)
    if count > limit:
        warnings.warn(
            f"prompt has {count} tokens, truncated to {limit}: {prompt[:60]!r}...",
            UnituneWarning,
            stacklevel=3,
        )


def encode_prompts(
    pipe,
    prompt: str,
    negative_prompt: str,
    guided: bool,
    runtime: Runtime,
    size: tuple[int, int] | None = None,
) -> Conditioning:
    """Two rows [negative, prompt] with guidance, else one, as the diffusers pipelines stack them; `size`
    (width, height; default the native square) is the image's, for SDXL's size conditioning."""
    for text in (prompt, negative_prompt):
        check_prompt_length(pipe, text)
    size = size or (pipe.unet.config.sample_size * pipe.vae_scale_factor,) * 2
    return encode(pipe, prompt, negative_prompt, guided, runtime, size)


def schedule(pipe, steps: int, strength: float, device) -> torch.Tensor:
    """The timesteps to run: the last `strength` fraction of a `steps`-step schedule (img2img semantics)."""
    pipe.scheduler.set_timesteps(steps, device=device)
    if strength >= 1.0:
        return pipe.scheduler.timesteps
    timesteps, _ = pipe.get_timesteps(steps, strength, device)
    return timesteps


@torch.no_grad()
def initial_latents(
    pipe, image, timesteps, strength: float, generator, runtime: Runtime, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Pure noise (strength 1) or the base image's VAE sample noised to the first timestep, (1, 4, h, w).

    `size` (width, height) in pixels: the image's, else the native square. The generator is consumed
    exactly as diffusers does: the VAE latent sample first, then the noise.
    """
    unet, scale = pipe.unet, pipe.vae_scale_factor
    width, height = size or (image.size if image is not None else (unet.config.sample_size * scale,) * 2)
    if width % scale or height % scale:
        raise ValueError(f"image sides must be multiples of {scale} pixels, got {width} x {height}")
    if strength >= 1.0 or image is None:
        shape = (1, unet.config.in_channels, height // scale, width // scale)
        noise = randn_tensor(shape, generator=generator, device=runtime.device, dtype=torch.float32)
        return noise * pipe.scheduler.init_noise_sigma
    pixels = pipe.image_processor.preprocess(image)
    with vae_precision(pipe, runtime):
        latents = pipe.prepare_latents(pixels, timesteps[:1], 1, 1, torch.float32, runtime.device, generator)
    return latents.float()


@dataclass
class ModelGuidance:
    """SINE's model guidance (Zhang et al. 2023), in UniTune's sampler: at each of the first `steps`
    steps (the tuned ones), add `weight` times the untuned model's edit direction, its prediction for the
    edit's words alone less its unconditional one. The tune binds the scene to R so that the words after
    R lose (docs/binding.md); the untuned model reads them as any caption."""

    weight: float
    predict: Callable  # (model input, t) -> the UNet's predictions for [negative prompt, the edit's words]
    untuned: Callable[[], AbstractContextManager]  # the untuned weights in the UNet for a block
    steps: int

    def direction(self, pipe, latents: torch.Tensor, t) -> torch.Tensor:
        model_input = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
        with self.untuned():
            uncond, edit = self.predict(model_input, t).chunk(2)
        return self.weight * (edit - uncond)


def iter_denoise(
    pipe,
    latents,
    timesteps,
    conditioning: Conditioning,
    guidance: float,
    generator,
    runtime: Runtime,
    guidance_rescale: float = 0.0,
    capture: bool = True,
    model_guidance: ModelGuidance | None = None,
) -> Iterator:
    """Yield (step index, latents) after every scheduler step (DDIM/PNDM/Euler/DPM-Solver: any scheduler).

    `guidance_rescale` > 0 rescales the guided prediction towards the conditional one's standard
    deviation (Lin et al. 2023, section 3.4; diffusers' `rescale_noise_cfg`), which keeps strong guidance
    from over-exposing a zero-terminal-SNR model. `capture=False` keeps the UNet calls eager (no CUDA
    graph), for a caller that changes the UNet's weights between steps (as `model_guidance` does)."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    guided = len(conditioning) == 2
    extra = pipe.prepare_extra_step_kwargs(generator, 0.0)
    predict = noise_predictor(pipe.unet, conditioning, runtime, len(timesteps) if capture else 0)
    for index, t in enumerate(timesteps):
        model_input = torch.cat([latents] * 2) if guided else latents
        model_input = pipe.scheduler.scale_model_input(model_input, t)
        pred = predict(model_input, t)
        if guided:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance * (cond - uncond)
            if guidance_rescale > 0:
                pred = rescale_noise_cfg(pred, cond, guidance_rescale=guidance_rescale)
        if model_guidance is not None and index < model_guidance.steps:
            pred = pred + model_guidance.direction(pipe, latents, t)
        latents = pipe.scheduler.step(pred, t, latents, **extra, return_dict=False)[0]
        yield index, latents


def untuned_start(pipe, timesteps: torch.Tensor, tail: float) -> int | None:
    """The index of the first step whose timestep lies in the last `tail` share of the training schedule
    (at or below tail x num_train_timesteps): where an edit with `untuned_tail` drops the tune; None when
    `tail` is 0 or no step does."""
    if tail <= 0:
        return None
    threshold = tail * pipe.scheduler.config.num_train_timesteps
    return next((index for index, t in enumerate(timesteps.tolist()) if t <= threshold), None)


def noise_predictor(unet, conditioning: Conditioning, runtime: Runtime, calls: int):
    """(model input, timestep) -> the UNet's prediction in float32, a new tensor: replayed as a CUDA graph
    for a loop of `calls` steps where `unitune.graphs.wanted`, else an eager call."""
    unet_kwargs = conditioning.unet_kwargs()
    captured = graphs.wanted(runtime, calls)

    def forward(model_input, t):
        with torch.no_grad(), runtime.autocast(cache=not captured):
            return unet(model_input, t, **unet_kwargs, return_dict=False)[0]

    replayed = graphs.Replayed(forward, captured)

    def predict(model_input, t):
        prediction = replayed(model_input, t).float()
        return prediction.clone() if replayed.replaying else prediction  # a replay's output is reused

    return predict


@torch.no_grad()
def decode(pipe, latents: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Latents to images in [0, 1], (B, 3, H, W), float32 on the CPU."""
    with vae_precision(pipe, runtime):
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(images.float(), output_type="pt").cpu()


def to_pil(images: torch.Tensor):
    """[0, 1] images (B, 3, H, W) to PIL, rounding as diffusers does."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(images))


def to_tensor(image) -> torch.Tensor:
    """A PIL image or an (H, W, 3) uint8 array to (1, 3, H, W) float32 in [0, 1], on the CPU: the form
    `unitune.interpolation` takes the base image in."""
    pixels = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
