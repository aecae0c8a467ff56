"""Render the bundled shapes example images (src/unitune/assets/examples/*.png) from fixed scenes."""

from __future__ import annotations

import random
from pathlib import Path

from unitune.shapes.world import Scene, SceneObject, caption, render_pil, sample_scene

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


if __name__ == "__main__":
    main()
