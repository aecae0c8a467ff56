"""The untuned UNet for part of the sampling schedule: does the tune only need the steps that keep the
scene? With the default full tune, each edit is sampled with the tuned UNet at every step ("tuned", plain
UniTune), with the untuned (base) UNet above timestep T and the tuned one below ("base>T": the edit's
layout from a model that reads "R edit" as "edit", the scene's detail from the tune), or the other way
round ("tuned>T"). Embedded model, the benchmark's validation scenes, 20 DDIM steps, no interpolation,
the edit seed = the scene's number; paired on the same edits and seeds; `--interpolations` scores each
sample again after base-detail interpolation at those weights. A benchmark, not a test.

Usage: HF_HUB_OFFLINE=1 python bench/timestep_switch.py --modes tuned,base>700,base>500,tuned>600 \\
           --scenes 0:8 --threads 1 --out part1.json
       python bench/timestep_switch.py --summarise part1.json part2.json
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from contextlib import contextmanager

from variant_tunes import edit_row, paired_edits_main

import unitune.sampling as sampling
from unitune import Editor, EditSettings, TuneSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.interpolation import interpolate_details
from unitune.sampling import to_pil, to_tensor
from unitune.shapes.world import render_pil

CELLS = ((3, 1.0), (6, 1.0), (3, 0.8), (6, 0.8))
plain_predictor = sampling.noise_predictor


@contextmanager
def switched(base_unet, mode: str):
    """While active, sampling's UNet calls go to `base_unet` on the mode's side of T."""
    if mode == "tuned":
        yield
        return
    early, threshold = mode.split(">")
    threshold = int(threshold)

    def predictor(unet, conditioning, runtime, calls):
        tuned = plain_predictor(unet, conditioning, runtime, calls)
        base = plain_predictor(base_unet, conditioning, runtime, calls)

        def predict(model_input, t):
            high = int(t) > threshold
            return (base if high == (early == "base") else tuned)(model_input, t)

        return predict

    sampling.noise_predictor = predictor
    try:
        yield
    finally:
        sampling.noise_predictor = plain_predictor


def measure(modes: list[str], weights: list[float], split: str, first: int, last: int) -> list[dict]:
    rows, started = [], time.time()
    tune = TuneSettings(method="full", steps=128, learning_rate=1e-4)
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(None, device="cpu", cache_dir=cache)
        base_unet = copy.deepcopy(editor.pipe.unet)  # before any tune
        for number, scene in list(enumerate(base_scenes(split, last)))[first:]:
            edits, base = edits_for_scene(split, number, scene), render_pil(scene)
            for mode in modes:
                for guidance, strength in CELLS:
                    settings = EditSettings(guidance=guidance, strength=strength, steps=20, seed=number)
                    with switched(base_unet, mode):
                        results = editor.edit(base, [edit.prompt for edit in edits], settings, tune)
                    for edit, result in zip(edits, results, strict=True):
                        for weight in weights:
                            image = interpolate_details(to_tensor(result.image), to_tensor(base), weight)
                            name = f"{mode} i{weight:g}" if len(weights) > 1 else mode
                            cell = {"mode": name, "guidance": guidance, "strength": strength}
                            rows.append(edit_row(to_pil(image)[0], edit, **cell))
            print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default="tuned,base>700,base>500,tuned>600")
    parser.add_argument("--interpolations", default="0", help="base-detail weights, applied to each sample")
    paired_edits_main(
        parser,
        lambda args, *scenes: measure(
            args.modes.split(","), [float(w) for w in args.interpolations.split(",")], *scenes
        ),
        "mode",
    )


if __name__ == "__main__":
    main()
