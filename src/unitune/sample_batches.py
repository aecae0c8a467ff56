"""Edits, generations, sweep cells and dial candidates sampled together: the requests that can share a UNet
batch (same steps, untuned tail, guidance on or off, and start: fresh noise or the base's inversion) are
denoised `sample_batch` at a time, in the stages of diffusers' img2img `__call__` (unitune.sampling).

On a small model a step's cost is mostly per call, not per sample: the embedded model's guided step takes
24 ms for one sample and 39 ms for three on two CPU cores, so a batch of three costs about half of three
runs. A request alone is the one-sample loop to the pixel (tests/test_equivalence.py); in a batch its
pixels can differ from its run alone by float rounding (a batched UNet call rounds differently).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from .decoder_gate import decode_samples
from .errors import out_of_memory
from .interpolation import interpolate_details
from .inversion import InversionCache, NoiseMaps, ddim_scheduler, invert
from .loading import Runtime
from .localize import (
    BaseEncoding,
    difference_map,
    grow_mask,
    mask_image,
    thresholded,
    to_latent_size,
    to_pixel_size,
)
from .progress import Progress, RunControl
from .regions import edit_mask, image_regions
from .sampling import (
    Blend,
    ModelGuidance,
    Row,
    encode_prompts,
    initial_latents,
    iter_denoise_rows,
    schedule,
    to_pil,
    to_tensor,
    untuned_start,
)
from .settings import EditSettings
from .weights import UNetWeights


@dataclass(frozen=True)
class SamplingModel:
    """What sampling uses of a loaded model (`Editor.sampling_model()`): the pipeline, where and how it
    runs, the owner of the UNet's weights (the untuned tail and model guidance swap them), and the size
    (width, height) to generate at when there is no base image."""

    pipe: object
    runtime: Runtime
    weights: UNetWeights
    generate_size: tuple[int, int]
    inversions: InversionCache | None = None  # kept across calls (the editor's); None: within a batch only


@dataclass(frozen=True)
class SampleRequest:
    """One image to sample: the full prompt, its dials and seed, a label for progress and errors, and the
    edit's words without R (for model guidance; None for R alone or a generation)."""

    prompt: str
    settings: EditSettings
    seed: int
    label: str
    edit_words: str | None = None
    rare_prompt: str | None = None  # R: the automatic mask compares "R edit words" with it
    mask: torch.Tensor | None = None  # a user's mask (1, 1, H, W) at the working size; 1 = may change

    def localized(self) -> bool:
        """Whether this request keeps the base outside a mask: a user's, or the tuned model's own."""
        if self.mask is not None:
            return True
        return self.settings.localize == "auto" and bool(self.edit_words) and self.rare_prompt is not None

    def guidance(self) -> float:
        """The guidance it samples with: inside the automatic mask `auto_mask_guidance` where set, inside
        any mask `mask_guidance` where set, else `guidance`."""
        s = self.settings
        if not self.localized():
            return s.guidance
        if self.mask is None and s.auto_mask_guidance is not None:
            return s.auto_mask_guidance
        return s.guidance if s.mask_guidance is None else s.mask_guidance

    def batch_key(self) -> tuple:
        """Requests with the same key can share a UNet batch."""
        s = self.settings
        return s.steps, s.untuned_tail, self.guidance() > 1.0, s.sample_batch, s.inversion


class Sample(NamedTuple):
    """One sampled image, its raw sample before base-detail interpolation, and the mask it was localised
    with (at the working size; None when it was not)."""

    image: Image.Image
    raw: Image.Image
    mask: Image.Image | None = None


def sample_requests(
    model: SamplingModel, requests: list[SampleRequest], base, *, run: RunControl
) -> list[Sample]:
    """One Sample per request, in order; `base` is the working image (None: from pure noise, where no
    request may be localised)."""
    results: list = [None] * len(requests)
    for batch in _batches(requests):
        labels = [requests[i].label for i in batch]
        label = labels[0] if len(set(labels)) == 1 else f"{labels[0]} and {len(batch) - 1} more"
        hint = "try a smaller --size" + (" or --sample-batch 1" if len(batch) > 1 else "")
        inverting = base is not None and requests[batch[0]].settings.inversion
        memory = out_of_memory(model.runtime.device.type, f"an edit ({label})", hint)
        with memory, ddim_scheduler(model.pipe, inverting):
            samples = _sample_batch(model, [requests[i] for i in batch], base, label, run=run)
        for index, sample in zip(batch, samples, strict=True):
            results[index] = sample
    return results


def _batches(requests: list[SampleRequest]) -> list[list[int]]:
    """The requests' indices grouped by batch key (in order of first appearance), cut into batches of the
    settings' `sample_batch`."""
    groups: dict[tuple, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.batch_key(), []).append(index)
    batches = []
    for indices in groups.values():
        size = requests[indices[0]].settings.sample_batch
        batches += [indices[start : start + size] for start in range(0, len(indices), size)]
    return batches


def _sample_batch(
    model: SamplingModel, requests: list[SampleRequest], base, label: str, *, run: RunControl
) -> list:
    pipe, runtime, common = model.pipe, model.runtime, requests[0].settings  # what a batch shares

    # 1. the shared timesteps (the full schedule) and the image size (SDXL conditions on it)
    size = base.size if base is not None else model.generate_size
    timesteps = schedule(pipe, common.steps, 1.0, runtime.device)

    # 2-3. per request: its conditioning, its start latents (the base's inversion where asked) and its own
    #      scheduler, joining the schedule at its strength's first step
    inverting = base is not None and any(request.settings.inversion for request in requests)
    localized = base is not None and any(request.localized() for request in requests)
    shared = _Shared(
        timesteps,
        untuned_start(pipe, timesteps, common.untuned_tail),
        functools.cache(functools.partial(encode_prompts, pipe, runtime=runtime, size=size)),
        BaseEncoding.of(pipe, base, runtime) if localized or inverting else None,  # once for the batch
    )
    rows = [_row(model, request, base, size, shared) for request in requests]

    # 4. denoise, reporting every step and stopping when asked; the low-noise tail with the untuned weights
    #    when `untuned_tail` asks for it, model guidance at the tuned steps before it
    switch = shared.switch
    tuned_steps = len(timesteps) if switch is None else switch
    guidance = (
        ModelGuidance(model.weights.untuned, tuned_steps) if any(r.model_guidance for r in rows) else None
    )
    first = min(row.start for row in rows)
    steps = iter_denoise_rows(pipe, rows, timesteps, runtime, capture=switch is None, model_guidance=guidance)
    with contextlib.ExitStack() as tail:
        if switch is not None and switch <= first:
            tail.enter_context(model.weights.untuned())
        for index in steps:
            latents = torch.cat([row.latents for row in rows])
            run.report(
                Progress("sample", index - first + 1, len(timesteps) - first, latents=latents, label=label)
            )
            run.check_stop()
            if index + 1 == switch:
                tail.enter_context(model.weights.untuned())

    # 5-6. decode each row to pixels in [0, 1] (a tune's fitted decoder behind its gate); base-detail
    #      interpolation (a post-process of the sample)
    gates = [request.settings.decoder_gate for request in requests]
    raws = decode_samples(model, [row.latents for row in rows], gates, base)
    masks = [_pixel_mask(row, base) for row in rows]
    return [
        _finish(raw, request.settings, base, mask)
        for raw, request, mask in zip(raws, requests, masks, strict=True)
    ]


@dataclass
class _Shared:
    """What a batch's rows share: the full schedule, the index where the untuned tail starts, the prompt
    encoder (each text encoded once), the base's encoding, the automatic masks' reference readings, the
    inversions and the base's regions."""

    timesteps: torch.Tensor
    switch: int | None
    encoded: Callable  # (prompt, negative prompt, guided) -> Conditioning
    encoding: BaseEncoding | None
    readings: dict = field(default_factory=dict)
    inversions: dict = field(default_factory=dict)
    regions: np.ndarray | None = None  # the base's segmentation (unitune.regions), made when first needed


def _row(model, request: SampleRequest, base, size, shared: _Shared) -> Row:
    pipe, runtime, settings = model.pipe, model.runtime, request.settings
    generator = torch.Generator("cpu").manual_seed(request.seed)  # all its randomness, drawn on the CPU
    guided = request.guidance() > 1.0
    conditioning = shared.encoded(request.prompt, settings.negative_prompt, guided)
    own = schedule(pipe, settings.steps, settings.strength, runtime.device)
    start = len(shared.timesteps) - len(own)
    scheduler = copy.deepcopy(pipe.scheduler)  # set for this row's strength by `schedule`
    maps = None
    if base is not None and settings.inversion and request.rare_prompt is not None:
        maps = _inversion(model, request, scheduler, start, shared)
        latents = maps.start.clone()
    else:
        state = generator.get_state()
        latents = initial_latents(pipe, base, own, settings.strength, generator, runtime, size)
    blend = None
    if base is not None and request.localized():
        blend = _blend(model, request, base, shared)
        if maps is not None:  # outside its mask, the inversion's own noised base
            blend.noised = maps.noised
        else:
            replay = state if settings.strength < 1.0 else None
            blend.noise = shared.encoding.start_noise(pipe, latents, replay, runtime)
    model_guidance, edit_conditioning = 0.0, None
    if settings.model_guidance and request.edit_words and model.weights.applied_key is not None:
        model_guidance = settings.model_guidance  # an edit's words and a tune in the UNet to guide against
        edit_conditioning = shared.encoded(request.edit_words, settings.negative_prompt, True)
    return Row(
        latents,
        start,
        conditioning,
        scheduler,
        pipe.prepare_extra_step_kwargs(generator, 0.0),
        request.guidance(),
        settings.guidance_rescale,
        model_guidance,
        edit_conditioning,
        blend,
        maps,
    )


def _inversion(model, request: SampleRequest, scheduler, start: int, shared: _Shared) -> NoiseMaps:
    """The base's DDPM inversion under R for a row joining the schedule at `start` (unitune.inversion),
    with the weights each step will be sampled with (the tune; the untuned ones from the tail on); rows
    that would invert alike (seed, start, R, its guidance and negative prompt) share one, and so do later
    calls on the same base, tune and schedule (the model's `inversions`)."""
    settings = request.settings
    guidance, negative = settings.inversion_guidance, settings.negative_prompt
    key = (request.seed, start, request.rare_prompt, guidance, negative)
    if key not in shared.inversions:

        def weights_at(step: int):
            tail = shared.switch is not None and start + step >= shared.switch
            return model.weights.untuned() if tail else contextlib.nullcontext()

        def make() -> NoiseMaps:
            return invert(
                model.pipe,
                scheduler,
                shared.encoding.latent,
                shared.timesteps[start:],
                shared.encoded(request.rare_prompt, negative, guidance > 1.0),
                guidance,
                torch.Generator("cpu").manual_seed(request.seed),
                model.runtime,
                weights_at,
            )

        tune = model.weights.applied_key
        if model.inversions is None or tune is None:  # no tune to name: nothing kept past this batch
            shared.inversions[key] = make()
        else:
            identity = InversionCache.identity(shared.encoding.latent, scheduler)
            schedule_key = (len(shared.timesteps), shared.switch)
            shared.inversions[key] = model.inversions.get((tune, *identity, *schedule_key, *key), make)
    return shared.inversions[key]


def _blend(model, request: SampleRequest, base, shared: _Shared) -> Blend:
    """The request's mask at latent size (its user's, else estimated from the UNet now in the pipeline,
    the tune) and the base latent it keeps outside it (the caller says how that base is noised); a mask
    made at the image's size (a user's, or one snapped to its regions) is kept as `pixel_mask`."""
    latent, settings = shared.encoding.latent, request.settings
    pixels = request.mask
    if pixels is None:
        if not settings.mask_regions:
            return Blend(thresholded(_difference(model, request, shared), settings), latent)
        if shared.regions is None:  # the base's segmentation, once per batch
            shared.regions = image_regions(base)
        read_map = functools.partial(_difference, model, request, shared)
        snapped = edit_mask(request.edit_words, shared.regions, read_map, settings.mask_background_ratio)
        snapped = snapped.astype(np.float32)
        pixels = torch.from_numpy(grow_mask(snapped, settings.mask_grow))[None, None]
    mask = to_latent_size(pixels.to(model.runtime.device), latent.shape)
    return Blend(mask, latent, pixel_mask=pixels.cpu())


def _difference(model, request: SampleRequest, shared: _Shared) -> torch.Tensor:
    """DiffEdit's difference map for the request: the tuned "R edit words" against "R", or (mask_reading
    "untuned") the edit's words against none with the model before the tune."""
    pipe, runtime, settings, encoded = model.pipe, model.runtime, request.settings, shared.encoded
    latent, readings = shared.encoding.latent, shared.readings
    if settings.mask_reading == "untuned":
        edit, reference = encoded(request.edit_words, "", False), encoded("", "", False)
        with model.weights.untuned():
            return difference_map(pipe, latent, edit, reference, settings, request.seed, runtime, readings)
    edit, reference = encoded(request.prompt, "", False), encoded(request.rare_prompt, "", False)
    return difference_map(pipe, latent, edit, reference, settings, request.seed, runtime, readings)


def _pixel_mask(row: Row, base) -> torch.Tensor | None:
    """The row's mask at the image's size (1, 1, H, W) on the CPU: one made there, else the estimated
    latent mask enlarged (bilinear: soft at its edges); None when the row was not localised."""
    if row.blend is None:
        return None
    if row.blend.pixel_mask is not None:
        return row.blend.pixel_mask
    return to_pixel_size(row.blend.mask.cpu(), (base.height, base.width))


def _finish(raw: torch.Tensor, settings: EditSettings, base, mask: torch.Tensor | None) -> Sample:
    images = raw
    if base is not None and settings.interpolation > 0:
        images = interpolate_details(raw, to_tensor(base), settings.interpolation)
    if mask is not None and settings.mask_composite:  # outside the mask, the base's own pixels
        images = mask * images + (1 - mask) * to_tensor(base)
    shown = mask_image(mask, base.size) if mask is not None else None
    return Sample(to_pil(images)[0], to_pil(raw)[0], shown)
