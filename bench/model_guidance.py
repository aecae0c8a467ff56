"""Model guidance (`EditSettings.model_guidance`, SINE's, Zhang et al. 2023) on the edit benchmark's
validation split: the embedded model, the default full tune, the same edits and seeds for every weight.
A benchmark, not a test; results in docs/binding.md ("Model guidance").

The tune binds the scene to R so that the words after R lose (docs/binding.md). The untuned model reads
the edit's words as any caption, so the tuned steps add its edit direction to UniTune's guidance:

    u + g (c - u) + e (c0 - u0),

u, c the tuned predictions for the empty prompt and "R edit" (plain UniTune), u0, c0 the untuned
model's for the empty prompt and the edit's words alone. e = 0 is plain UniTune; the untuned tail's steps
are the untuned model's already. A weight written `e>T` adds the term only at timesteps >= T (this
script patches `ModelGuidance.direction` for it; unitune has no such option).

Usage: HF_HUB_OFFLINE=1 python bench/model_guidance.py --weights "0,0.5,1,2>500" --scenes 0:10 --threads 1 \\
           --out a.json    [--guidance 3 --strengths 0.8,1 --untuned-tail 0.2 --interpolation 1 --tune lora]
       python bench/model_guidance.py --summarise a.json b.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import torch
from variant_tunes import edit_row, paired_edits_main

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.sampling import ModelGuidance
from unitune.shapes.world import render_pil
from unitune.sweep import parse_floats

ABOVE = {"timestep": 0}
DIRECTION = ModelGuidance.direction


def direction_above(self, pipe, latents, t):
    if t < ABOVE["timestep"]:
        return torch.zeros_like(latents)
    return DIRECTION(self, pipe, latents, t)


def measure(args, split: str, first: int, last: int) -> list[dict]:
    ModelGuidance.direction = direction_above
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(None, device="cpu", cache_dir=cache)
        tune = replace(editor.default_tune_settings(), method=args.tune)
        for number, scene in list(enumerate(base_scenes(split, last)))[first:]:
            edits, base = edits_for_scene(split, number, scene), render_pil(scene)
            for variant in args.weights.split(","):
                weight, _, above = variant.partition(">")
                ABOVE["timestep"] = int(above or 0)
                for strength in parse_floats(args.strengths, "--strengths"):
                    settings = EditSettings(
                        guidance=args.guidance,
                        strength=strength,
                        steps=20,
                        seed=number,
                        untuned_tail=args.untuned_tail,
                        interpolation=args.interpolation,
                        model_guidance=float(weight),
                    )
                    results = editor.edit(base, [edit.prompt for edit in edits], settings, tune)
                    for edit, result in zip(edits, results, strict=True):
                        row = edit_row(result.image, edit, tune=f"e={variant}", guidance=args.guidance)
                        rows.append({**row, "strength": strength})
            print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--weights", default="0,0.5,1", help="e, comma-separated; e>T: only at timesteps >= T"
    )
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--strengths", default="0.8,1")
    parser.add_argument("--untuned-tail", type=float, default=0.2)
    parser.add_argument("--interpolation", type=float, default=1.0)
    parser.add_argument(
        "--tune", default="full", help="full or lora: the model's default tune of that method"
    )
    paired_edits_main(parser, measure, "tune")


if __name__ == "__main__":
    main()
