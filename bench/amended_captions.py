"""Does a model follow an amended caption, without any tune? For each edit of the benchmark's scenes the
untuned model draws "<base caption> <edit fragment>" (the form of `world.amended_caption`) and, for
reference, the full target caption; the analyzer scores each against the edit's target (expressive: the
requested attribute is there; the rest of the scene is not expected to match, there is no tune).

Usage: HF_HUB_OFFLINE=1 python bench/amended_captions.py MODEL [MODEL ...] [--scenes 0:40] [--guidance 5]

docs/model.md ("Amended captions") compares v4 with the two amended-caption candidates. A benchmark, not
a test.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict

import numpy as np

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import score
from unitune.shapes.world import caption


def measure(model: str, split: str, first: int, last: int, guidance: float) -> dict:
    counts = defaultdict(lambda: [0, 0])  # (prompt form, kind) -> [expressive, edits]
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(model, device="cpu", cache_dir=cache)
        for number, scene in list(enumerate(base_scenes(split, last)))[first:]:
            edits = edits_for_scene(split, number, scene)
            forms = {
                "amended": [f"{caption(scene)} {edit.prompt}" for edit in edits],
                "target caption": [edit.caption for edit in edits],
            }
            settings = EditSettings(guidance=guidance, steps=20, seed=number)
            for form, prompts in forms.items():
                for edit, result in zip(edits, editor.generate(prompts, settings), strict=True):
                    hit = score(np.array(result.image.convert("RGB")), edit)["expressive"]
                    for key in ((form, edit.kind), (form, "all")):
                        counts[key][0] += hit
                        counts[key][1] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="diffusers folders")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--scenes", default="0:40", help="first:last scene numbers (last excluded)")
    parser.add_argument("--guidance", type=float, default=5.0)
    args = parser.parse_args()
    first, last = (int(value) for value in args.scenes.split(":"))
    kinds = ("all", "background", "colour", "shape", "size", "add")
    print("| model | prompt | " + " | ".join(kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for model in args.models:
        counts = measure(model, args.split, first, last, args.guidance)
        for form in ("amended", "target caption"):
            cells = [
                f"{counts[(form, k)][0] / counts[(form, k)][1]:.0%}" for k in kinds if counts[(form, k)][1]
            ]
            print(f"| {model} | {form} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
