"""What does UniTune gain from the full target caption? The benchmark gives UniTune the edit as a
fragment after R ("R a red circle", as the paper writes edits) and the baselines the whole target
caption ("a small white triangle and a small red circle on a black background"): the baselines are told
more. Here the same default full tune edits with "R fragment" and with "R caption". Embedded model,
edit benchmark scenes, 20 DDIM steps, no interpolation, the edit seed = the scene's number. A
benchmark, not a test; results in docs/binding.md ("The edit prompt: fragment or whole caption").

Usage: HF_HUB_OFFLINE=1 python bench/edit_prompt_style.py --scenes 0:20 --out part1.json
       HF_HUB_OFFLINE=1 python bench/edit_prompt_style.py --summarise part1.json part2.json

Two processes with --threads 1 on different scene ranges use two cores better than one with two.
The summary prints per style and (guidance, strength): edits, success [Wilson 95%], expressive, preserved.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from variant_tunes import paired_edits_main

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import score
from unitune.shapes.world import render_pil

CELLS = ((3, 1.0), (6, 1.0), (6, 0.8), (6, 0.6), (3, 0.6), (6, 0.4))
STYLES = ("fragment", "caption")


def measure(split: str, first: int, last: int) -> list[dict]:
    editor = Editor.load(None, device="cpu", cache_dir=None)
    tune = editor.default_tune_settings()
    rows, started = [], time.time()
    for number, scene in list(enumerate(base_scenes(split, last)))[first:]:
        edits, base = edits_for_scene(split, number, scene), render_pil(scene)
        for guidance, strength in CELLS:
            settings = EditSettings(guidance=guidance, strength=strength, steps=20, seed=number)
            for style in STYLES:
                prompts = [edit.prompt if style == "fragment" else edit.caption for edit in edits]
                for edit, result in zip(edits, editor.edit(base, prompts, settings, tune), strict=True):
                    metrics = score(np.array(result.image.convert("RGB")), edit)
                    keep = {key: metrics[key] for key in ("success", "expressive", "preserved")}
                    rows.append(
                        {
                            "style": style,
                            "guidance": guidance,
                            "strength": strength,
                            "edit": edit.name,
                            "kind": edit.kind,
                            **keep,
                        }
                    )
        print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    return rows


def main() -> None:
    paired_edits_main(argparse.ArgumentParser(), lambda args, *scenes: measure(*scenes), "style")


if __name__ == "__main__":
    main()
