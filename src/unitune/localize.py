"""Localised edits: a mask of where an edit may change the image, and the blend that keeps the rest.

The mask is DiffEdit's estimator (Couairon et al. 2022, arXiv 2210.11427, section 3.2; diffusers'
`StableDiffusionDiffEditPipeline.generate_mask`) read from the tuned model: noise the base image's latent
to `mask_strength`, predict the noise under "R edit words" and under "R" alone for `mask_draws` noise
draws, average |difference| over draws and channels, clamp at `mask_ratio` times its spatial mean,
rescale to [0, 1] and keep what lies above `mask_threshold`. After a UniTune tune "R" is the image, so
where the two readings disagree is where the edit wants to act. A user's own mask skips the estimate.

The blend (`unitune.sampling.Blend`) is diffusers' inpainting with a plain UNet
(`StableDiffusionInpaintPipeline` for a 4-channel UNet): after every step, outside the mask, the
sample is replaced by the base latent noised to the next timestep with the start's own noise, and by
the base latent itself after the last step. `--mask-composite` then pastes the base's pixels back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import UnituneError, first_line
from .loading import Runtime
from .pipelines import Conditioning, vae_precision
from .sampling import noise_predictor


@dataclass
class BaseEncoding:
    """The base image through the VAE's encoder, once per batch: its deterministic latent (the mode; the
    tiny autoencoder's latents), scaled, and the encoder's output, to replay a row's start noise."""

    encoded: object
    latent: torch.Tensor

    @classmethod
    @torch.no_grad()
    def of(cls, pipe, image: Image.Image, runtime: Runtime) -> BaseEncoding:
        pixels = pipe.image_processor.preprocess(image).to(runtime.device)
        with vae_precision(pipe, runtime):
            encoded = pipe.vae.encode(pixels.to(pipe.vae.dtype))
        mode = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
        return cls(encoded, mode.float() * pipe.vae.config.scaling_factor)  # as tuning.encode_latent

    def start_noise(self, pipe, start_latents, state: torch.Tensor | None, runtime: Runtime) -> torch.Tensor:
        """The noise a row's start latents were drawn with. From pure noise (`state` None) it is the start
        itself over the scheduler's initial sigma; from a noised base it is drawn again from the
        generator's `state` before the start as diffusers' img2img `prepare_latents` draws it: the VAE
        sample first (`retrieve_latents`, which draws only for a Gaussian latent), then the noise."""
        if state is None:
            return start_latents / pipe.scheduler.init_noise_sigma
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
        from diffusers.utils.torch_utils import randn_tensor

        replay = torch.Generator("cpu").set_state(state)  # rows draw all their randomness on the CPU
        retrieve_latents(self.encoded, generator=replay)
        return randn_tensor(start_latents.shape, generator=replay, device=runtime.device, dtype=torch.float32)


@torch.no_grad()
def difference_map(
    pipe,
    latent: torch.Tensor,
    edit: Conditioning,
    reference: Conditioning,
    settings,
    seed: int,
    runtime: Runtime,
    readings: dict | None = None,
) -> torch.Tensor:
    """DiffEdit's difference map (1, 1, h, w), before its threshold, from the UNet now in the pipeline: the
    mean |difference| of its noise predictions for the `edit` and `reference` conditionings (one row
    each) over the draws and channels. `settings`: an EditSettings (its mask_* dials). `readings`: a
    dict shared by the masks of one batch, in which the predictions are kept (requests of one image
    with the same seed draw the same noise).
    The pipeline's scheduler is left as it was (a copy is set to the mask's noise level)."""
    scheduler, t = _mask_timestep(pipe, settings.steps, settings.mask_strength, latent.device)
    generator = torch.Generator("cpu").manual_seed(seed)
    draws = settings.mask_draws
    noise = torch.randn((draws, *latent.shape[1:]), generator=generator).to(runtime.device)
    noised = scheduler.add_noise(latent.expand(draws, -1, -1, -1), noise, t.reshape(1))
    model_input = scheduler.scale_model_input(noised, t)

    readings = {} if readings is None else readings
    shared = (seed, draws, settings.steps, settings.mask_strength, settings.mask_reading)

    def read(conditioning: Conditioning) -> torch.Tensor:
        """The UNet's predictions for one conditioning at the draws, computed once per batch: the edits of
        one image share R's, and --auto's candidates and a sweep's cells share their words' too."""
        key = (*shared, conditioning.embeds.data_ptr())  # the batch's conditionings are cached objects
        if key not in readings:
            stacked = Conditioning.cat([conditioning] * draws)
            readings[key] = noise_predictor(pipe.unet, stacked, runtime, 0)(model_input, t)
        return readings[key]

    return (read(edit) - read(reference)).abs().mean(dim=(0, 1), keepdim=True)


def thresholded(difference: torch.Tensor, settings) -> torch.Tensor:
    """DiffEdit's mask (1, 1, h, w) with values 0 or 1 from a `difference_map`: `threshold` at the
    settings' mask_ratio, mask_threshold and mask_dilation."""
    return threshold(difference, settings.mask_ratio, settings.mask_threshold, settings.mask_dilation)


def _mask_timestep(pipe, steps: int, strength: float, device):
    """A copy of the pipeline's scheduler set for `steps` steps, and the first timestep of the last
    `strength` share of them (img2img's `get_timesteps`)."""
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps, device=device)
    start = max(steps - min(int(steps * strength), steps), 0) * scheduler.order
    return scheduler, scheduler.timesteps[start]


def threshold(difference: torch.Tensor, ratio: float, cut: float, dilation: int) -> torch.Tensor:
    """diffusers' `generate_mask` rule: clamp at `ratio` x the spatial mean, divide by that clamp, 1 above
    `cut`; then grow the mask by `dilation` latent cells (a square max filter)."""
    clamp = ratio * difference.mean()
    scaled = difference.clamp(0, clamp) / clamp if clamp > 0 else difference
    mask = (scaled > cut).float()
    if dilation > 0:
        mask = F.max_pool2d(mask, 2 * dilation + 1, stride=1, padding=dilation)
    return mask


def read_mask(path) -> Image.Image:
    """A mask file as an image, read now (so that a bad file fails before any work): UnituneError, one
    line, when it is missing, empty or not an image."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UnituneError(f"{path}: not a readable mask image ({first_line(error)})") from None


def load_mask(source, size: tuple[int, int], grow: int = 0) -> torch.Tensor:
    """A user's mask (a path or PIL image; white = may change, black = kept) as (1, 1, H, W) in [0, 1]
    at `size` (width, height) pixels, resized when it has another size, then grown by `grow` pixels (a
    grey dilation with a disk: each pixel takes the largest value within `grow` of it). A transparent
    layer's alpha is the mask (strokes painted on a clear canvas), else its brightness."""
    image = source if isinstance(source, Image.Image) else read_mask(source)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:  # a painted layer (strokes on a transparent canvas): its alpha
            image = alpha
    gray = np.asarray(image.convert("L").resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(grow_mask(gray, grow))[None, None]


def grow_mask(gray: np.ndarray, grow: int) -> np.ndarray:
    """A mask (H, W) in [0, 1] grown by `grow` pixels: a grey dilation with a disk, each pixel taking the
    largest value within `grow` of it (0: as it is)."""
    if grow <= 0:
        return gray
    from scipy import ndimage
    from skimage.morphology import disk

    return ndimage.grey_dilation(gray, footprint=disk(grow), mode="nearest")


def to_latent_size(mask: torch.Tensor, latent_shape) -> torch.Tensor:
    """A pixel mask (1, 1, H, W) averaged down to the latent grid (1, 1, h, w)."""
    return F.adaptive_avg_pool2d(mask, latent_shape[-2:])


def to_pixel_size(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A latent mask (1, 1, h, w) enlarged to (1, 1, H, W) pixels, `size` (height, width): bilinear, so
    a pixel composite fades over about one latent cell at the mask's edge instead of a blocky seam."""
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def mask_image(mask: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """A mask (1, 1, H, W) in [0, 1] as a grayscale image at `size` (width, height)."""
    pixels = (mask[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels, mode="L").resize(size, Image.Resampling.NEAREST)


def mask_record(request, mask: Image.Image | None) -> dict:
    """What an edit's settings record of its localisation: where the mask came from ("user", "auto" or
    none), its share of the image that may change and a hash of the mask itself."""
    if mask is None:
        return {"mask_source": None}
    import hashlib

    pixels = np.asarray(mask)
    return {
        "mask_source": "user" if request.mask is not None else "auto",
        "mask_coverage": round(float(pixels.mean()) / 255.0, 4),
        "mask_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
    }
