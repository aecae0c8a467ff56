"""A picture of where R redrawn from pure noise differs from the base: for each named test scene of the
edit benchmark, the base, R sampled alone after the model's default tune (guidance 3, 20 DDIM steps, the
benchmark's seed for the scene) and the absolute error (summed over RGB, clipped at 255). A benchmark
figure, not a test; used in docs/binding.md.

Usage: HF_HUB_OFFLINE=1 python bench/binding_errors.py [--scenes 15,25,8] \
           [--out docs/images/binding-errors.png]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from PIL import Image

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes
from unitune.benchmark.metrics import psnr
from unitune.shapes.world import render_pil

TEST_SEED_OFFSET = 1000  # the benchmark's seed for test scene i is 1000 + i (benchmark.run)


def error_row(editor, scene_number: int, scenes) -> np.ndarray:
    base = render_pil(scenes[scene_number])
    settings = EditSettings(guidance=3, strength=1.0, steps=20, seed=TEST_SEED_OFFSET + scene_number)
    redrawn = np.asarray(editor.edit(base, "", settings, None)[0].image.convert("RGB"))
    pixels = np.asarray(base)
    error = np.abs(pixels.astype(int) - redrawn.astype(int)).sum(-1).clip(0, 255).astype(np.uint8)
    print(f"test scene {scene_number}: {psnr(redrawn, pixels):.1f} dB")
    return np.concatenate([pixels, redrawn, np.stack([error] * 3, -1)], 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", default="15,25,8")
    parser.add_argument("--out", default="docs/images/binding-errors.png")
    args = parser.parse_args()
    numbers = [int(n) for n in args.scenes.split(",")]
    scenes = base_scenes("test", max(numbers) + 1)
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(None, device="cpu", cache_dir=cache)
        rows = [error_row(editor, n, scenes) for n in numbers]
    picture = Image.fromarray(np.concatenate(rows, 0))
    picture.resize((picture.width * 3, picture.height * 3), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
