"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2023, arXiv 2304.06140; the inversion of
LEDITS++ and diffusers' `LEditsPPPipelineStableDiffusion.invert`): the noise maps with which a DDPM
(DDIM at eta 1) sampler, run under the source prompt, returns the base image exactly.

The base latent x0 is noised to every timestep of the row's schedule with its own, independent draw,
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps_t; then, step by step, z_t is what the sampler's noise must
be for its step from x_t to land on x_{t-1}: (x_{t-1} - mu(x_t)) / sigma_t, with mu the step's mean under
the source prompt. Sampling "R edit words" from x_T with these z_t in place of fresh noise keeps the
base's layout, which the noise maps carry, while the prompt changes what is drawn. The maps are kept as
sigma_t z_t, what each step adds to its mean: the same where sigma_t > 0, and where it is 0 (a final step
to alpha 1) the residual that still lands the step on x_{t-1}.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from .loading import Runtime
from .pipelines import Conditioning
from .sampling import noise_predictor

# DDPM's posterior variance is DDIM at eta 1; a hair below, because at a zero-terminal-SNR model's first
# step DDIM's deterministic share, sqrt(1 - abar_prev - sigma^2), is 0 analytically and NaN when sigma^2
# rounds above 1 - abar_prev
ETA = 1.0 - 1e-4


@dataclass
class NoiseMaps:
    """A row's inverted start: its latents at its first timestep and one noise map per step."""

    maps: list[torch.Tensor]  # sigma_t z_t for each of the row's steps, in order
    noised: dict[int, torch.Tensor]  # the base noised to each of the row's timesteps, by timestep

    @property
    def start(self) -> torch.Tensor:
        """The row's latents at its first timestep, (1, C, h, w)."""
        return next(iter(self.noised.values()))

    def step(self, scheduler, prediction, t, latents, step: int) -> torch.Tensor:
        """The row's `step`-th step: the DDPM step's mean, plus its noise map in place of a draw."""
        return _mean(scheduler, prediction, t, latents) + self.maps[step]


class InversionCache:
    """The last few inversions, kept across edits (an `Editor`'s): editing the same image under the same
    tune again (another prompt, guidance or mask; the benchmark's grid) inverts it once. An inversion is a
    function of everything in its key, so a hit gives the pixels a fresh one would."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._entries: OrderedDict[tuple, NoiseMaps] = OrderedDict()
        self.misses = 0  # inversions computed (tests count them)

    def get(self, key: tuple, make: Callable[[], NoiseMaps]) -> NoiseMaps:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        self._entries[key] = maps = make()
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return maps

    def clear(self) -> None:
        self._entries.clear()

    @staticmethod
    def identity(base_latent: torch.Tensor, scheduler) -> tuple[str, str]:
        """What an inversion's key holds of its inputs besides the dials: a digest of the base latent and
        the scheduler's class and configuration."""
        digest = hashlib.sha256(base_latent.detach().float().cpu().numpy().tobytes())
        digest.update(str(tuple(base_latent.shape)).encode())
        config = json.dumps(dict(scheduler.config), sort_keys=True, default=str)
        return digest.hexdigest(), f"{type(scheduler).__name__} {config}"


@contextlib.contextmanager
def ddim_scheduler(pipe, wanted: bool) -> Iterator[None]:
    """For the block, the pipeline's scheduler as DDIM with the model's own schedule settings (noise maps
    replace DDIM's noise draw; other schedulers have no such input), when `wanted`; the model's own after."""
    own = pipe.scheduler
    if wanted and not isinstance(own, DDIMScheduler):
        pipe.scheduler = DDIMScheduler.from_config(own.config)
    try:
        yield
    finally:
        pipe.scheduler = own


@torch.no_grad()
def invert(
    pipe,
    scheduler,
    base_latent: torch.Tensor,
    timesteps: torch.Tensor,
    conditioning: Conditioning,
    guidance: float,
    generator: torch.Generator,
    runtime: Runtime,
    weights_at: Callable[[int], contextlib.AbstractContextManager] | None = None,
) -> NoiseMaps:
    """The noise maps of `base_latent` (clean, scaled) along `timesteps` (the row's own, a DDIM schedule
    set on `scheduler`) under `conditioning` ([negative, source] guided by `guidance`, or [source]);
    `weights_at(step)`: the UNet weights the sampler will use at the row's `step`-th step (its untuned
    tail), so that sampling the source prompt returns `base_latent`."""
    guided = len(conditioning) == 2
    predict = noise_predictor(pipe.unet, conditioning, runtime, 0)
    noised = [
        scheduler.add_noise(base_latent, _draw(base_latent, generator, runtime), t.reshape(1))
        for t in timesteps
    ]
    targets = [*noised[1:], base_latent]
    maps = []
    for step, (t, latents, target) in enumerate(zip(timesteps, noised, targets, strict=True)):
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
        with weights_at(step) if weights_at else contextlib.nullcontext():
            prediction = predict(model_input, t)
        if guided:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance * (cond - uncond)
        maps.append(target - _mean(scheduler, prediction, t, latents))
    return NoiseMaps(maps, {int(t): x for t, x in zip(timesteps, noised, strict=True)})


def _draw(like: torch.Tensor, generator: torch.Generator, runtime: Runtime) -> torch.Tensor:
    return randn_tensor(like.shape, generator=generator, device=runtime.device, dtype=torch.float32)


def _mean(scheduler, prediction, t, latents) -> torch.Tensor:
    noise = torch.zeros_like(latents)
    return scheduler.step(prediction, t, latents, eta=ETA, variance_noise=noise, return_dict=False)[0]
