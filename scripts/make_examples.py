"""Render the bundled shapes example images (src/unitune/assets/examples/*.png) from fixed scenes, and the
README demo's mask: the pixels a new background may change (white), the circle kept (black)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from PIL import Image

from unitune.benchmark.metrics import change_mask
from unitune.shapes.world import Scene, SceneObject, caption, render, render_pil, sample_scene

OUT = Path(__file__).resolve().parents[1] / "src/unitune/assets/examples"
SAMPLED_SEEDS = {"yellow-triangle.png": 14, "white-square.png": 18, "two-shapes.png": 4}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # the README demo's input: one large red circle on a blue background
    circle = SceneObject("circle", "red", "large", 32.0, 32.0, 28.0)
    scenes = {"shapes.png": Scene("blue", (circle,), texture_seed=7)}
    for name, seed in SAMPLED_SEEDS.items():
        scenes[name] = sample_scene(random.Random(seed))
    for name, scene in scenes.items():
        path = OUT / name
        if name == "shapes.png" and path.exists():
            continue  # shared with the README demo: never overwrite
        render_pil(scene).save(path)
        print(f"{path.name}: {caption(scene)}")
    demo = scenes["shapes.png"]
    background = change_mask(render(demo), render(dataclasses.replace(demo, background="green")), dilation=0)
    Image.fromarray(background.astype("uint8") * 255).save(OUT / "shapes-background-mask.png")
    print(f"shapes-background-mask.png: {background.mean():.0%} of the image may change")


if __name__ == "__main__":
    main()
