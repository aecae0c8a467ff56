"""The automatic dial: pick one of a few candidate edits without ground truth and without extra weights,
from what the tuned model itself says about each candidate.

Each candidate image is encoded back to a latent and noised at a few fixed timesteps with fixed noises
(the same for every candidate and prompt, so the comparisons are paired). The tuned UNet's denoising error
is measured under two prompts:

- `fit_edit`: under "R edit"; `fit_base`: under "R" alone (which, after the tune, is the base image).
- `gain = fit_base - fit_edit`: how much better the edit prompt explains the candidate than the image's
  own prompt: the diffusion model as its own zero-shot classifier (Li et al. 2023, "Your Diffusion Model
  is Secretly a Zero-Shot Classifier"); about zero or negative when the edit did not happen. `fit_edit`
  alone is lowest for base-like samples (the tuned model explains the base best under any prompt), so
  it is not used on its own.

`pick` turns the signals into a choice (rule in its docstring, chosen on the benchmark's validation
split; docs/benchmark.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .loading import Runtime
from .pipelines import Conditioning
from .tuning import encode_latent, encode_text, noised, training_scheduler

SCORE_TIMESTEPS = (250, 450, 650, 850)  # of the 1000 training timesteps
SCORE_SEED = 0
AUTO_STRENGTHS = (0.6, 0.8, 1.0)  # the candidates `--auto` samples (each at the edit's other dials)


@dataclass(frozen=True)
class Signals:
    """The tuned model's denoising errors on one candidate (mean squared error per element)."""

    fit_edit: float
    fit_base: float

    @property
    def gain(self) -> float:
        return self.fit_base - self.fit_edit

    def to_dict(self) -> dict[str, float]:
        return {"fit_edit": self.fit_edit, "fit_base": self.fit_base, "gain": self.gain}


@torch.no_grad()
def denoising_errors(
    pipe, latents: torch.Tensor, embeds: Conditioning, runtime: Runtime, chunk: int = 64
) -> torch.Tensor:
    """(N, P): the mean denoising error of each of N latents under each of P prompts' conditionings,
    over SCORE_TIMESTEPS with fixed noises; the target follows the scheduler's prediction_type."""
    scheduler = training_scheduler(pipe)
    generator = torch.Generator("cpu").manual_seed(SCORE_SEED)
    steps = torch.tensor(SCORE_TIMESTEPS)
    noise = torch.randn((len(steps), *latents.shape[1:]), generator=generator).to(latents.device)
    count, prompts, times = len(latents), len(embeds), len(steps)
    clean = latents.repeat_interleave(times, dim=0)  # (N*T, ...): candidate-major, then timestep
    noises, timesteps = noise.repeat(count, 1, 1, 1), steps.repeat(count).to(latents.device)
    noisy, target = noised(scheduler, clean, noises, timesteps)
    errors = torch.empty(prompts, count * times)
    for p in range(prompts):
        for start in range(0, count * times, chunk):
            part = slice(start, start + chunk)
            text = embeds[p : p + 1].expand(len(noisy[part]))
            with runtime.autocast():
                pred = pipe.unet(noisy[part], timesteps[part], **text.unet_kwargs()).sample
            errors[p, part] = (pred.float() - target[part]).pow(2).flatten(1).mean(1).cpu()
    return errors.view(prompts, count, times).mean(2).T


def score_candidates(pipe, images, rare_prompt: str, edit_prompt: str, runtime: Runtime) -> list[Signals]:
    """Signals for each candidate PIL image of the edit "`rare_prompt` `edit_prompt`"; the UNet must
    hold the tune's weights."""
    latents = encode_latent(pipe, images, runtime)  # a list of images: (N, C, h, w)
    prompts = (f"{rare_prompt} {edit_prompt}".strip(), rare_prompt)
    embeds = Conditioning.cat([encode_text(pipe, prompt, runtime, images[0].size) for prompt in prompts])
    errors = denoising_errors(pipe, latents, embeds, runtime)
    return [Signals(float(edit), float(base)) for edit, base in errors.tolist()]


def pick(signals: list[Signals]) -> int:
    """The index of the candidate to keep: the one whose `gain` is largest, i.e. where "R edit" explains
    the sample best relative to R alone. Chosen on the benchmark's validation split (full tune, at the
    fixed setting's guidance 6 and interpolation 0.5: 27% success, vs 9% for the lowest `fit_edit`, which
    favours base-like low-strength samples, and 24% for the best fixed strength); docs/benchmark.md."""
    return max(range(len(signals)), key=lambda index: signals[index].gain)
