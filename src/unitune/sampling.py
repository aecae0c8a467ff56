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
class Blend:
    """What a localised row (unitune.localize) keeps outside its mask: the mask (1, 1, h, w) in [0, 1]
    (1 = may change) and the base's clean latent, noised after every step either with the noise the row's
    start was drawn with (`noise`; the blend of diffusers' inpainting with a plain UNet) or, for a row
    started from an inversion, as the inversion noised it (`noised`, by timestep: where R alone stays).
    `pixel_mask`: the mask at the image's size (1, 1, H, W) when it was made there (a user's, or one
    snapped to the image's regions), for the pixel composite."""

    mask: torch.Tensor
    base_latent: torch.Tensor
    noise: torch.Tensor | None = None
    noised: dict[int, torch.Tensor] | None = None
    pixel_mask: torch.Tensor | None = None

    def apply(self, scheduler, latents: torch.Tensor, next_timestep) -> torch.Tensor:
        """The sample inside the mask, the base noised to `next_timestep` (None: clean) outside it."""
        kept = self.base_latent
        if next_timestep is not None and self.noised is not None:
            kept = self.noised[int(next_timestep)]
        elif next_timestep is not None:
            kept = scheduler.add_noise(self.base_latent, self.noise, next_timestep.reshape(1))
        return self.mask * latents + (1 - self.mask) * kept


@dataclass
class Row:
    """One sample of a batch being denoised: its latents, where it joins the shared schedule, its own
    dials, its conditioning and its own scheduler (a copy: multistep schedulers keep per-sample state) and
    generator. Rows of one batch share the timesteps, the weights and whether guidance is on."""

    latents: torch.Tensor  # (1, C, h, w), updated in place of the old ones after every step
    start: int  # the index into the shared timesteps of this row's first step (its strength's)
    conditioning: Conditioning  # [negative, prompt] with guidance, else [prompt]
    scheduler: object
    step_kwargs: dict  # the scheduler's step kwargs (its generator, for a scheduler that draws noise)
    guidance: float = 1.0
    guidance_rescale: float = 0.0
    model_guidance: float = 0.0  # SINE's model guidance weight (0: off)
    edit_conditioning: Conditioning | None = None  # [negative, the edit's words], for model guidance
    blend: Blend | None = None  # a localised edit: what it keeps outside its mask (unitune.localize)
    noise_maps: object | None = None  # an inverted start: unitune.inversion.NoiseMaps (built on this module)


@dataclass
class ModelGuidance:
    """SINE's model guidance (Zhang et al. 2023), in UniTune's sampler: at each of the first `steps`
    steps (the tuned ones), add each row's `model_guidance` times the untuned model's edit direction, its
    prediction for the edit's words alone less its unconditional one. The tune binds the scene to R so that
    the words after R lose (docs/lab/binding.md); the untuned model reads them as any caption."""

    untuned: Callable[[], AbstractContextManager]  # the untuned weights in the UNet for a block
    steps: int  # shared-schedule indices below this are the tuned steps


def iter_denoise_rows(
    pipe,
    rows: list[Row],
    timesteps,
    runtime: Runtime,
    capture: bool = True,
    model_guidance: ModelGuidance | None = None,
) -> Iterator[int]:
    """Denoise `rows` together, one UNet batch per step for the rows that have joined by then; yield the
    step index after every step (each row's `latents` then hold its new latents).

    With guidance each row's prediction is u + g (c - u) (and, with `guidance_rescale` > 0, rescaled
    towards the conditional one's standard deviation: Lin et al. 2023, section 3.4; diffusers'
    `rescale_noise_cfg`, which keeps strong guidance from over-exposing a zero-terminal-SNR model); with
    `model_guidance`, rows whose weight is > 0 add the untuned model's edit direction at the tuned steps;
    a row with a `blend` keeps the base outside its mask after every step (unitune.localize).
    One row is the diffusers pipelines' loop to the pixel; several give each row's pixels to within float
    rounding of its own run (a batched UNet call rounds differently). `capture=False` keeps the UNet calls
    eager (no CUDA graph), for a caller that changes the UNet's weights between steps; a graph is only
    captured when every row starts at the first step and nothing swaps weights."""
    guided = len(rows[0].conditioning) == 2
    first = min(row.start for row in rows)
    capture = capture and model_guidance is None and all(row.start == first for row in rows)
    predictors: dict[tuple, Callable] = {}  # (conditioning kind, active rows) -> its noise predictor

    def predictor(active: list[int], conditioning: Callable[[Row], Conditioning], calls: int, pairs: bool):
        key = (conditioning.__name__, *active)
        if key not in predictors:
            stacked = _stack([conditioning(rows[i]) for i in active], pairs)
            predictors[key] = noise_predictor(pipe.unet, stacked, runtime, calls)
        return predictors[key]

    for index in range(first, len(timesteps)):
        t = timesteps[index]
        active = [i for i, row in enumerate(rows) if row.start <= index]
        calls = len(timesteps) - first if capture else 0
        inputs = [_model_input(rows[i], t, guided) for i in active]
        prompt = predictor(active, _prompt_rows, calls, guided)
        predictions = _split(prompt(_stack_inputs(inputs), t), guided)
        guiding = model_guidance is not None and index < model_guidance.steps
        guided_rows = [i for i in active if guiding and rows[i].model_guidance > 0]
        directions = {}
        if guided_rows:
            with model_guidance.untuned():
                untuned = predictor(guided_rows, _edit_rows, 0, True)  # always [negative, edit words]
                edit_inputs = _stack_inputs([_model_input(rows[i], t, True) for i in guided_rows])
                for i, (uncond, edit) in zip(guided_rows, _split(untuned(edit_inputs, t), True), strict=True):
                    directions[i] = rows[i].model_guidance * (edit - uncond)
        for i, prediction in zip(active, predictions, strict=True):
            row = rows[i]
            pred = _guided(prediction, row) if guided else prediction[0]
            if i in directions:
                pred = pred + directions[i]
            row.latents = _step(row, pred, t, index)
            if row.blend is not None:
                following = timesteps[index + 1] if index + 1 < len(timesteps) else None
                row.latents = row.blend.apply(row.scheduler, row.latents, following)
        yield index


def _step(row: Row, prediction: torch.Tensor, t, index: int) -> torch.Tensor:
    """The row's scheduler step at shared step `index`; from an inversion, with its noise map."""
    if row.noise_maps is not None:
        return row.noise_maps.step(row.scheduler, prediction, t, row.latents, index - row.start)
    return row.scheduler.step(prediction, t, row.latents, **row.step_kwargs, return_dict=False)[0]


def _prompt_rows(row: Row) -> Conditioning:
    return row.conditioning


def _edit_rows(row: Row) -> Conditioning:
    return row.edit_conditioning


def _model_input(row: Row, t, guided: bool) -> torch.Tensor:
    """The row's scaled UNet input: its latents twice with guidance (negative, prompt), else once."""
    model_input = torch.cat([row.latents] * 2) if guided else row.latents
    return row.scheduler.scale_model_input(model_input, t)


def _stack_inputs(inputs: list[torch.Tensor]) -> torch.Tensor:
    """The rows' inputs as one batch: every row's first half (negative), then every row's second half."""
    halves = len(inputs[0])
    return torch.cat([part[h : h + 1] for h in range(halves) for part in inputs])


def _stack(conditionings: list[Conditioning], guided: bool) -> Conditioning:
    """The rows' conditionings stacked as `_stack_inputs` stacks their inputs."""
    halves = 2 if guided else 1
    return Conditioning.cat([c[h : h + 1] for h in range(halves) for c in conditionings])


def _split(prediction: torch.Tensor, guided: bool) -> list[tuple[torch.Tensor, ...]]:
    """Per row, its predictions: (unconditional, conditional) with guidance, else (conditional,)."""
    halves = prediction.chunk(2) if guided else (prediction,)
    return list(zip(*(half.split(1) for half in halves), strict=True))


def _guided(prediction: tuple[torch.Tensor, torch.Tensor], row: Row) -> torch.Tensor:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    uncond, cond = prediction
    pred = uncond + row.guidance * (cond - uncond)
    if row.guidance_rescale > 0:
        pred = rescale_noise_cfg(pred, cond, guidance_rescale=row.guidance_rescale)
    return pred


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
