"""Does separate edit guidance help? UniTune edits with a third prediction, "R" alone, on the edit
benchmark's validation split (embedded model, full tunes, same seeds). A benchmark, not a test.

Plain UniTune guides "R edit" against the empty prompt: u + g (c - u), with u the unconditional and c
the "R edit" prediction. Edit guidance splits that into a pull towards the tuned image and a pull along
the edit, as InstructPix2Pix (Brooks et al. 2023, eq. 3) splits image and text guidance:

    u + g (r - u) + e (c - r),    r the prediction for "R" alone.

With e = g it is plain guidance again; e > g pushes the edit harder while g keeps the scene. The third
prediction costs half an edit more. The sampler is patched here, not in unitune: this is an experiment
(docs/binding.md, "Edit guidance").

Usage: HF_HUB_OFFLINE=1 python bench/edit_guidance.py [--scenes 8] [--rates 1e-4,2e-4] \
           [--cells "3:3,3:6,3:10,6:6,6:12,1:6"] [--strengths 1,0.8]

A cell is `g:e`. Prints success / expressive / preserved (%) per full-tune rate, cell, strength and
base-detail interpolation (0 and 1), over every edit of the scenes.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
from dataclasses import replace

import numpy as np
import torch

import unitune.sample_batches as sample_batches
from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import score
from unitune.interpolation import interpolate_details
from unitune.pipelines import Conditioning
from unitune.sampling import encode_prompts, noise_predictor, to_tensor
from unitune.shapes.world import render_pil
from unitune.sweep import parse_floats

STATE = {"edit_guidance": None, "rare": None}


def three_rows(pipe, prompt, negative, guided, runtime, size=None):
    """[negative, "R", "R edit"] for an edit prompt when edit guidance is on, else as unitune encodes."""
    rows = encode_prompts(pipe, prompt, negative, guided, runtime, size)
    if STATE["edit_guidance"] is None or not guided or not prompt.startswith(STATE["rare"] + " "):
        return rows
    rare = encode_prompts(pipe, STATE["rare"], negative, True, runtime, size)
    return Conditioning.cat([rows[0:1], rare[1:2], rows[1:2]])


def denoise(pipe, rows, timesteps, runtime, capture=True, model_guidance=None):
    """unitune's loop, except for one row with the three conditionings of `three_rows`."""
    if len(rows) != 1 or len(rows[0].conditioning) != 3:
        yield from PLAIN_DENOISE(pipe, rows, timesteps, runtime, capture, model_guidance)
        return
    [row] = rows
    predict = noise_predictor(pipe.unet, row.conditioning, runtime, len(timesteps) - row.start)
    edit_guidance = STATE["edit_guidance"]
    for index in range(row.start, len(timesteps)):
        t = timesteps[index]
        model_input = row.scheduler.scale_model_input(torch.cat([row.latents] * 3), t)
        uncond, rare, edited = predict(model_input, t).chunk(3)
        pred = uncond + row.guidance * (rare - uncond) + edit_guidance * (edited - rare)
        row.latents = row.scheduler.step(pred, t, row.latents, **row.step_kwargs, return_dict=False)[0]
        yield index


PLAIN_DENOISE = sample_batches.iter_denoise_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--rates", default="1e-4,2e-4")
    parser.add_argument("--cells", default="3:3,3:6,3:10,6:6,6:12,1:6")
    parser.add_argument("--strengths", default="1,0.8")
    args = parser.parse_args()
    cells = [tuple(float(v) for v in cell.split(":")) for cell in args.cells.split(",")]
    strengths = parse_floats(args.strengths, "--strengths")
    sample_batches.encode_prompts, sample_batches.iter_denoise_rows = three_rows, denoise
    editor = Editor.load(None, device="cpu")
    STATE["rare"] = editor.default_tune_settings().rare_prompt
    rows = []
    for number, scene in enumerate(base_scenes("validation", args.scenes)):
        edits, base = edits_for_scene("validation", number, scene), render_pil(scene)
        base_pixels = to_tensor(editor.prepare_image(base))
        for rate in args.rates.split(","):
            tune = replace(editor.default_tune_settings(), method="full", learning_rate=float(rate))
            editor.tune(base, tune)
            for (guidance, edit_guidance), strength in itertools.product(cells, strengths):
                STATE["edit_guidance"] = edit_guidance
                settings = EditSettings(guidance=guidance, strength=strength, steps=20, seed=0)
                results = editor.edit(base, [e.prompt for e in edits], settings, tune)
                for edit, result in zip(edits, results, strict=True):
                    for weight in (0.0, 1.0):
                        mixed = interpolate_details(to_tensor(result.image), base_pixels, weight)
                        pixels = (mixed[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                        cell = (rate, guidance, edit_guidance, strength, weight)
                        rows.append((cell, score(pixels, edit)))
        print(f"scene {number + 1}/{args.scenes} done", flush=True)
    report(rows)


def report(rows) -> None:
    groups = collections.defaultdict(list)
    for cell, scores in rows:
        groups[cell].append(scores)
    print("\n| full-tune rate | g | e | strength | interpolation | n | success | expressive | preserved |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (rate, g, e, strength, weight), group in sorted(groups.items()):
        rates = [
            100 * statistics.mean(s[key] for s in group) for key in ("success", "expressive", "preserved")
        ]
        print(
            f"| {rate} | {g:g} | {e:g} | {strength:g} | {weight:g} | {len(group)} | "
            + " | ".join(f"{r:.0f}%" for r in rates)
            + " |"
        )


if __name__ == "__main__":
    main()
