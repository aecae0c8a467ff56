"""Training data for the embedded model: a seeded pool of rendered scenes, held in memory as tensors,
and caption batches with parts dropped at random (see `world.training_caption`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from unitune.shapes.world import Scene, render, sample_scene, training_caption

TRAIN_SEED = 1  # held-out evaluation scenes are drawn from other seeds (see unitune.training.evaluate)


@dataclass
class ScenePool:
    scenes: list[Scene]
    images: torch.Tensor  # (N, 3, 64, 64) uint8

    def __len__(self) -> int:
        return len(self.scenes)

    def image_batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], float32, (B, 3, 64, 64)."""
        return self.images[indices].float().div(127.5).sub(1.0)


def render_pool(count: int, seed: int = TRAIN_SEED) -> ScenePool:
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(count)]
    images = np.stack([render(scene) for scene in scenes])
    return ScenePool(scenes, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())


def caption_batch(scenes: list[Scene], rng: random.Random) -> list[str]:
    return [training_caption(scene, rng) for scene in scenes]
