"""How well a text-to-image model knows the shapes world: generate from captions with known answers and
read the images back with the analyzer. Pure scoring functions plus one generation helper."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ..settings import DEFAULT_RARE_PROMPT
from .analyzer import ReadScene, analyze
from .world import COLOURS, SHAPES, Scene, caption, sample_scene

EVALUATION_SEED = 2  # training scenes come from seed 1; these captions are held out


@dataclass(frozen=True)
class Fragment:
    prompt: str
    background: str | None = None
    colour: str | None = None
    shape: str | None = None


def held_out_scenes(count: int, seed: int = EVALUATION_SEED) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng) for _ in range(count)]


def fragment_prompts(count: int, seed: int = EVALUATION_SEED) -> list[Fragment]:
    """Alternating background fragments ('on a green background') and object fragments ('a blue square')."""
    rng = random.Random(seed + 1000)
    fragments = []
    for index in range(count):
        if index % 2 == 0:
            colour = rng.choice(COLOURS)
            fragments.append(Fragment(f"on a {colour} background", background=colour))
        else:
            colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
            fragments.append(Fragment(f"a {colour} {shape}", colour=colour, shape=shape))
    return fragments


def score_scene(read: ReadScene, truth: Scene) -> dict[str, float]:
    """Per-attribute hits (0/1) of one generated image against the scene its caption described."""
    scores = {
        "background": float(read.background == truth.background),
        "object_count": float(len(read.objects) == len(truth.objects)),
    }
    unmatched = list(read.objects)
    for index, obj in enumerate(truth.objects):
        match = next((r for r in unmatched if (r.colour, r.shape) == (obj.colour, obj.shape)), None)
        colour_match = next((r for r in read.objects if r.colour == obj.colour), None)
        shape_match = next((r for r in read.objects if r.shape == obj.shape), None)
        scores[f"object{index + 1}_colour_and_shape"] = float(match is not None)
        scores[f"object{index + 1}_colour"] = float(colour_match is not None)
        scores[f"object{index + 1}_shape"] = float(shape_match is not None)
        scores[f"object{index + 1}_size"] = float(match is not None and match.size == obj.size)
        if match is not None:
            unmatched.remove(match)
    return scores


def score_fragment(read: ReadScene, fragment: Fragment) -> dict[str, float]:
    if fragment.background is not None:
        return {"fragment_background": float(read.background == fragment.background)}
    hit = any((r.colour, r.shape) == (fragment.colour, fragment.shape) for r in read.objects)
    return {"fragment_object": float(hit)}


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    columns: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            columns[key].append(value)
    return {key: float(np.mean(values)) for key, values in sorted(columns.items())}


@torch.no_grad()
def generate(pipeline, prompts: list[str], seed: int, steps: int, guidance: float, batch: int = 50) -> list:
    """Images (uint8 arrays) for `prompts`, seeded per batch, via the plain diffusers pipeline."""
    images = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        generator = torch.Generator().manual_seed(seed + start)
        result = pipeline(
            chunk, num_inference_steps=steps, guidance_scale=guidance, generator=generator, output_type="np"
        ).images
        images.extend((np.clip(result, 0, 1) * 255).round().astype(np.uint8))
    return images


def evaluate_generation(
    pipeline,
    scene_count: int = 200,
    fragment_count: int = 100,
    steps: int = 20,
    guidance: float = 5.0,
    seed: int = 0,
    rare_prefix: str | None = DEFAULT_RARE_PROMPT,
) -> dict[str, float]:
    """Accuracy per attribute on held-out full captions and on fragment prompts; with `rare_prefix`, also
    on the full captions read after it (keys `prefixed_*`), as UniTune's "R edit" prompts are."""
    scenes = held_out_scenes(scene_count)
    fragments = fragment_prompts(fragment_count)
    scene_images = generate(pipeline, [caption(s) for s in scenes], seed, steps, guidance)
    fragment_images = generate(pipeline, [f.prompt for f in fragments], seed + 10_000, steps, guidance)
    rows = [score_scene(analyze(image), scene) for image, scene in zip(scene_images, scenes, strict=True)]
    rows += [score_fragment(analyze(image), f) for image, f in zip(fragment_images, fragments, strict=True)]
    if rare_prefix:
        prompts = [f"{rare_prefix} {caption(s)}" for s in scenes]
        prefixed_images = generate(pipeline, prompts, seed, steps, guidance)
        for image, scene in zip(prefixed_images, scenes, strict=True):
            rows.append({f"prefixed_{k}": v for k, v in score_scene(analyze(image), scene).items()})
    return mean_scores(rows)
