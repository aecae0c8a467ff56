"""Which object do the edit's words describe? A diffusion-classifier reading (lab probe, issue 36).

For the two-object object edits, the untuned model's noise predictions at the mask's noise level with
the edit's words and with none: per object, the mean |difference| (the map the product reads now) and
the mean drop in the prediction's squared error that the words bring (Li et al. 2023, "Your diffusion
model is secretly a zero-shot classifier": where the words explain the image, they help denoise it).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from unitune import Editor
from unitune.benchmark.edits import edit_set
from unitune.localize import _mask_timestep
from unitune.pipelines import Conditioning
from unitune.regions import background_label, segments
from unitune.sampling import noise_predictor
from unitune.shapes.world import render, render_pil
from unitune.tuning import encode_latent, encode_text

SCENES = {"validation": 34, "test": 36}


def objects_of(pixels):
    regions = segments(pixels)
    background = regions == background_label(regions)
    parts, count = ndimage.label(ndimage.binary_opening(~background))
    return parts, count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="validation")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--strengths", default="0.5")
    parser.add_argument("--out", default="/tmp/lab/grounding.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(2)
    editor = Editor.load(device="cpu")
    pipe, runtime = editor.pipe, editor.runtime
    prediction_type = pipe.scheduler.config.prediction_type
    empty = encode_text(pipe, "", runtime)
    tally = defaultdict(lambda: defaultdict(int))
    rows = []
    for edit in edit_set(args.split, SCENES[args.split]):
        if edit.kind not in ("colour", "shape", "size") or len(edit.base.objects) < 2:
            continue
        base_pixels = render(edit.base)
        parts, count = objects_of(base_pixels)
        if count < 2:
            continue
        changed = np.abs(base_pixels.astype(int) - render(edit.target).astype(int)).max(-1) > 0
        hits = [(changed & (parts == k)).sum() for k in range(1, count + 1)]
        right = int(np.argmax(hits))
        latent = encode_latent(pipe, render_pil(edit.base), runtime)
        words = encode_text(pipe, edit.prompt, runtime)
        row = {"edit": edit.name, "kind": edit.kind, "prompt": edit.prompt, "right": right, "count": count}
        for strength in map(float, args.strengths.split(",")):
            scheduler, t = _mask_timestep(pipe, 25, strength, latent.device)
            generator = torch.Generator("cpu").manual_seed(edit.scene)
            noise = torch.randn((args.draws, *latent.shape[1:]), generator=generator)
            noised = scheduler.add_noise(latent.expand(args.draws, -1, -1, -1), noise, t.reshape(1))
            model_input = scheduler.scale_model_input(noised, t)
            target = noise if prediction_type == "epsilon" else scheduler.get_velocity(latent, noise, t)
            with torch.no_grad():
                with_words = noise_predictor(pipe.unet, Conditioning.cat([words] * args.draws), runtime, 0)(
                    model_input, t
                )
                without = noise_predictor(pipe.unet, Conditioning.cat([empty] * args.draws), runtime, 0)(
                    model_input, t
                )
            maps = {
                "diff": (with_words - without).abs().mean(dim=(0, 1)),
                "gain": ((target - without) ** 2 - (target - with_words) ** 2).mean(dim=(0, 1)),
            }
            for name, grid in maps.items():
                spread = F.interpolate(
                    grid[None, None], size=parts.shape, mode="bilinear", align_corners=False
                )[0, 0].numpy()
                scores = [float(spread[parts == k].mean()) for k in range(1, count + 1)]
                key = f"{name}@{strength}"
                row[key] = scores
                tally[edit.kind][key] += int(np.argmax(scores) == right)
        tally[edit.kind]["n"] += 1
        rows.append(row)
    with open(args.out, "a") as out:
        out.writelines(json.dumps(r) + "\n" for r in rows)
    for kind, counts in tally.items():
        print(kind, dict(counts))


if __name__ == "__main__":
    main()
