"""Stable Diffusion 1.x / 2.x and SDXL behind one interface: what the UNet is conditioned on.

SD conditions its UNet on one text encoder's hidden states. SDXL (Podell et al. 2023, arXiv 2307.01952)
concatenates two encoders' hidden states, adds the second one's pooled embedding, and six size numbers
(section 2.2, "micro-conditioning": original size, crop top-left corner, target size). `Conditioning`
carries either kind, so the sampler, the tuning loop and the automatic dial call the UNet one way:
`unet(latents, t, **conditioning.unet_kwargs())`. The prompts are encoded by the pipelines' own
`encode_prompt` and the size numbers by SDXL img2img's own `_get_add_time_ids`, so an untuned edit
reproduces diffusers' img2img for both families.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .loading import Runtime

# SDXL img2img's defaults for the aesthetic-score conditioning (used only by refiner-style UNets)
_AESTHETIC_SCORE, _NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5


@dataclass(frozen=True)
class Conditioning:
    """What the UNet sees besides the latents and the timestep, one row per batch item."""

    embeds: torch.Tensor  # (B, 77, D) token embeddings (SDXL: both encoders' side by side, D = 2048)
    pooled: torch.Tensor | None = None  # (B, P) SDXL: the second encoder's pooled, projected embedding
    time_ids: torch.Tensor | None = None  # (B, 6) SDXL: original (h, w), crop top-left (y, x), target (h, w)

    def unet_kwargs(self) -> dict:
        kwargs = {"encoder_hidden_states": self.embeds}
        if self.pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled, "time_ids": self.time_ids}
        return kwargs

    def _map(self, function) -> Conditioning:
        return Conditioning(
            *(None if t is None else function(t) for t in (self.embeds, self.pooled, self.time_ids))
        )

    def expand(self, batch: int) -> Conditioning:
        """A batch of `batch` copies of a one-row conditioning (views, no copies)."""
        return self._map(lambda tensor: tensor.expand(batch, *tensor.shape[1:]))

    def float(self) -> Conditioning:
        return self._map(lambda tensor: tensor.float())

    def __getitem__(self, rows: slice) -> Conditioning:
        return self._map(lambda tensor: tensor[rows])

    def __len__(self) -> int:
        return len(self.embeds)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """The rows of `parts`, in order (as torch.cat of their tensors)."""
        fields = zip(*((p.embeds, p.pooled, p.time_ids) for p in parts), strict=True)
        return Conditioning(*(None if group[0] is None else torch.cat(group) for group in fields))


def is_xl(pipe) -> bool:
    """Whether `pipe` is an SDXL pipeline (two text encoders, pooled embedding and size conditioning)."""
    return hasattr(pipe, "text_encoder_2")


def text_encoders(pipe) -> list:
    return [pipe.text_encoder, pipe.text_encoder_2] if is_xl(pipe) else [pipe.text_encoder]


def vae_precision(pipe, runtime: Runtime):
    """The context the VAE runs in: the runtime's autocast, except for a VAE that overflows in float16
    (SDXL's; `force_upcast` in its config), which diffusers runs in float32 and so do we."""
    if is_xl(pipe) and pipe.vae.config.get("force_upcast", False) and runtime.dtype == torch.float16:
        return contextlib.nullcontext()
    return runtime.autocast()


@torch.no_grad()
def encode(
    pipe, prompt: str, negative_prompt: str, guided: bool, runtime: Runtime, size: tuple[int, int]
) -> Conditioning:
    """The prompt's conditioning at image `size` (width, height): rows [negative, prompt] with guidance,
    else [prompt], stacked as the diffusers pipelines stack them. An empty negative prompt is None to
    diffusers (SDXL then guides against zeros, as its pipelines do)."""
    negative = negative_prompt or None
    with runtime.autocast():
        if not is_xl(pipe):
            embeds, negative_embeds = pipe.encode_prompt(prompt, runtime.device, 1, guided, negative)
            return Conditioning(torch.cat([negative_embeds, embeds]) if guided else embeds).float()
        embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompt,
            device=runtime.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative,
        )
    time_ids, negative_time_ids = size_ids(pipe, size, pooled.shape[-1])
    if guided:
        return Conditioning(
            torch.cat([negative_embeds, embeds]).float(),
            torch.cat([negative_pooled, pooled]).float(),
            torch.cat([negative_time_ids, time_ids]).to(runtime.device),
        )
    return Conditioning(embeds.float(), pooled.float(), time_ids.to(runtime.device))


def size_ids(pipe, size: tuple[int, int], projection_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's size conditioning for an image of `size` (width, height), uncropped, as img2img builds it:
    (1, 6) for the prompt and for the negative prompt."""
    height_width = (size[1], size[0])
    return pipe._get_add_time_ids(
        height_width,
        (0, 0),
        height_width,
        _AESTHETIC_SCORE,
        _NEGATIVE_AESTHETIC_SCORE,
        height_width,
        (0, 0),
        height_width,
        dtype=torch.float32,
        text_encoder_projection_dim=projection_dim,
    )
