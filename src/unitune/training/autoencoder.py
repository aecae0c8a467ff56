"""Stage 1 of the recipe: train the AutoencoderTiny on rendered scenes, for a wall-clock budget.

It trains on random 32x32 crops aligned to the latent grid: the network is fully convolutional, so a
crop teaches it the same thing per pixel at a quarter of the cost of a whole image. The loss is MSE
plus L1; L1 keeps the shapes' edges sharp where MSE alone settles for a blur."""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderTiny

from unitune.training.architecture import LATENT_STRIDE
from unitune.training.checkpoints import Checkpointer, TrainingClock, TrainingLog
from unitune.training.data import ScenePool


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], measured on the 0-255 scale after rounding."""
    to_uint8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round()  # noqa: E731
    mse = (to_uint8(reconstruction) - to_uint8(target)).pow(2).mean().item()
    return 10 * math.log10(255**2 / max(mse, 1e-10))


@torch.no_grad()
def round_trip(autoencoder: AutoencoderTiny, images: torch.Tensor) -> torch.Tensor:
    images = images.contiguous(memory_format=torch.channels_last)
    return autoencoder.decode(autoencoder.encode(images).latents).sample


def train_autoencoder(
    autoencoder: AutoencoderTiny,
    pool: ScenePool,
    held_out: torch.Tensor,
    checkpointer: Checkpointer,
    log: TrainingLog,
    minutes: float,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    crop: int = 32,
) -> None:
    """Train until `minutes` of training time are spent (counting time from earlier runs). Runs on the
    device of `pool.images`; a `crop` of the full size trains on whole images (cheap on a GPU)."""
    autoencoder.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=lr, weight_decay=0.0)
    state = checkpointer.restore(autoencoder, optimizer)
    generator = torch.Generator().manual_seed(seed + state["step"])
    clock = TrainingClock(state, minutes)
    for spent in clock.steps():
        set_lr(optimizer, lr * cosine(spent))
        indices = torch.randint(len(pool), (batch_size,), generator=generator)
        images = random_crops(pool.image_batch(indices), crop, generator)
        reconstruction = autoencoder.decode(autoencoder.encode(images).latents).sample
        error = reconstruction - images
        loss = error.pow(2).mean() + error.abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clock.count_step()
        if state["step"] % 100 == 0:
            autoencoder.eval()
            quality = psnr(round_trip(autoencoder, held_out), held_out)
            autoencoder.train()
            log.write(
                stage="autoencoder",
                step=state["step"],
                minutes=state["seconds"] / 60,
                samples=state["step"] * batch_size,
                loss=loss.item(),
                psnr=quality,
            )
        checkpointer.maybe_save(autoencoder, optimizer, state)
    if clock.trained:
        checkpointer.save(autoencoder, optimizer, state)
    autoencoder.eval()


def random_crops(
    images: torch.Tensor, size: int, generator: torch.Generator, grid: int = LATENT_STRIDE
) -> torch.Tensor:
    """One random `size` x `size` crop per image, its corner on the autoencoder's `grid`-pixel lattice."""
    if size >= images.shape[-1]:
        return images.contiguous(memory_format=torch.channels_last)
    corners = (
        torch.randint((images.shape[-1] - size) // grid + 1, (len(images), 2), generator=generator) * grid
    )
    crops = [
        image[:, y : y + size, x : x + size] for image, (y, x) in zip(images, corners.tolist(), strict=True)
    ]
    return torch.stack(crops).contiguous(memory_format=torch.channels_last)


def cosine(progress: float, warmup: float = 0.02, floor: float = 0.05) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to `floor` at the end of the budget."""
    if progress < warmup:
        return progress / warmup
    progress = (progress - warmup) / (1 - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
