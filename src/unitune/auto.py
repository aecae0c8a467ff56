"""The automatic dial: pick one of a few candidate edits without ground truth and without extra weights,
from what the model itself says about each candidate.

Each candidate image is encoded back to a latent and noised at a few fixed timesteps with fixed noises
(the same for every candidate and prompt, so the comparisons are paired). The UNet's denoising error is
measured under two prompts each, with the untuned weights and, when asked, the tune's:

- with the untuned weights (the model before the tune, `UNetWeights.untuned`; no extra weights):
  `read_edit` under the edit's words alone, `read_none` under the empty prompt;
  `evidence = read_none - read_edit`: how much better the edit's words explain the candidate than no
  words, to a model the tune has not pulled towards the base (the diffusion model as its own zero-shot
  classifier, Li et al. 2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier");
- only when asked (`tuned=True`: the benchmark, to replay the rule before it), with the tune's weights:
  `fit_edit` under "R edit", `fit_base` under "R" alone (which, after the tune, is the base image);
  `gain = fit_base - fit_edit`. `--auto` does not pay for them: `pick` reads `evidence` only.

`pick` turns the signals into a choice (rule in its docstring, chosen on validation edits;
docs/lab/auto-dial.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .loading import Runtime
from .pipelines import Conditioning
from .settings import EditSettings
from .tuning import encode_latent, encode_text, noised, training_scheduler
from .weights import UNetWeights

SCORE_TIMESTEPS = (250, 450, 650, 850)  # of the 1000 training timesteps
SCORE_SEED = 0
AUTO_STRENGTHS = (0.6, 0.8, 1.0)  # the candidates `--auto` samples (each at the edit's other dials)


def candidates(settings: EditSettings) -> list[EditSettings]:
    """The edits `--auto` samples and picks among: each of AUTO_STRENGTHS at the edit's other dials, and
    with `auto_model_guidance` > 0 strength 1 with that model guidance too (unless the edit already
    asks for it)."""
    options = [replace(settings, strength=strength) for strength in AUTO_STRENGTHS]
    weight = settings.auto_model_guidance
    if weight > 0 and weight != settings.model_guidance:
        options.append(replace(settings, strength=1.0, model_guidance=weight))
    return options


@dataclass(frozen=True)
class Signals:
    """The denoising errors on one candidate (mean squared error per element): the tuned model's under "R
    edit" and "R", the untuned model's under the edit's words and no words (NaN when not measured)."""

    fit_edit: float = math.nan
    fit_base: float = math.nan
    read_edit: float = math.nan
    read_none: float = math.nan

    @property
    def gain(self) -> float:
        return self.fit_base - self.fit_edit

    @property
    def evidence(self) -> float:
        return self.read_none - self.read_edit

    def to_dict(self) -> dict[str, float]:
        """The measured signals (a NaN one was not measured and is left out)."""
        errors = {"fit_edit": self.fit_edit, "fit_base": self.fit_base, "gain": self.gain}
        errors |= {"read_edit": self.read_edit, "read_none": self.read_none, "evidence": self.evidence}
        return {name: value for name, value in errors.items() if not math.isnan(value)}


@torch.no_grad()
def timestep_errors(
    pipe,
    latents: torch.Tensor,
    embeds: Conditioning,
    runtime: Runtime,
    timesteps=SCORE_TIMESTEPS,
    seed: int = SCORE_SEED,
    chunk: int = 64,
) -> torch.Tensor:
    """(N, P, T): the denoising error of each of N latents under each of P prompts' conditionings at each
    of `timesteps`, with one fixed noise per timestep entry (drawn from `seed`; a timestep named twice gets
    two noises); the target follows the scheduler's prediction_type."""
    scheduler = training_scheduler(pipe)
    generator = torch.Generator("cpu").manual_seed(seed)
    steps = torch.tensor(timesteps)
    noise = torch.randn((len(steps), *latents.shape[1:]), generator=generator).to(latents.device)
    count, prompts, times = len(latents), len(embeds), len(steps)
    clean = latents.repeat_interleave(times, dim=0)  # (N*T, ...): candidate-major, then timestep
    noises, steps = noise.repeat(count, 1, 1, 1), steps.repeat(count).to(latents.device)
    noisy, target = noised(scheduler, clean, noises, steps)
    errors = torch.empty(prompts, count * times)
    for p in range(prompts):
        for start in range(0, count * times, chunk):
            part = slice(start, start + chunk)
            text = embeds[p : p + 1].expand(len(noisy[part]))
            with runtime.autocast():
                pred = pipe.unet(noisy[part], steps[part], **text.unet_kwargs()).sample
            errors[p, part] = (pred.float() - target[part]).pow(2).flatten(1).mean(1).cpu()
    return errors.view(prompts, count, times).permute(1, 0, 2)


def denoising_errors(
    pipe, latents: torch.Tensor, embeds: Conditioning, runtime: Runtime, chunk: int = 64
) -> torch.Tensor:
    """(N, P): the mean denoising error of each of N latents under each of P prompts' conditionings,
    over SCORE_TIMESTEPS with the dial's fixed noises."""
    return timestep_errors(pipe, latents, embeds, runtime, chunk=chunk).mean(2)


def score_candidates(
    pipe,
    images,
    rare_prompt: str,
    edit_prompt: str,
    runtime: Runtime,
    weights: UNetWeights,
    tuned: bool = False,
) -> list[Signals]:
    """Signals for each candidate PIL image of the edit "`rare_prompt` `edit_prompt`"; the UNet must
    hold the tune's weights (`weights` swaps the untuned ones in for the `read_` errors, then back).
    `tuned` also measures the tune's `fit_` errors (two more UNet passes per timestep and candidate)."""
    latents = encode_latent(pipe, images, runtime)  # a list of images: (N, C, h, w)

    def errors(*prompts: str) -> list[list[float]]:
        embeds = [encode_text(pipe, prompt, runtime, images[0].size) for prompt in prompts]
        return denoising_errors(pipe, latents, Conditioning.cat(embeds), runtime).tolist()

    fits = (
        errors(f"{rare_prompt} {edit_prompt}".strip(), rare_prompt)
        if tuned
        else [[math.nan] * 2] * len(images)
    )
    with weights.untuned():
        reads = errors(edit_prompt, "")
    return [Signals(*fit, *read) for fit, read in zip(fits, reads, strict=True)]


def pick(signals: list[Signals]) -> int:
    """The index of the candidate to keep: the one with the most `evidence`, i.e. whose edit the untuned
    model reads best. Chosen on 127 validation edits (`git show bdc5c4e:bench/auto_regions.py`, LoRA
    tune, guidance 3, the untuned tail 0.2; docs/lab/auto-dial.md): over three seeds 32.7 successes on average
    against 30.3 for the largest tuned `gain` (the rule before it) and 30.3 for the best fixed strength;
    between two candidates of one edit of which one succeeds, the more evidence marks it 96% of the
    time, the larger gain 77%."""
    return max(range(len(signals)), key=lambda index: signals[index].evidence)
