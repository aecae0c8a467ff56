"""Tuning the autoencoder's decoder on the base image too (Blended Latent Diffusion's per-image decoder
fit, Avrahami et al. 2023, section 4.2): does R alone from noise come closer to the base, and what does
it do to the edits? Per validation scene: the model's default tune (full or LoRA), then R alone from
pure noise (binding, as bench/binding.py measures it) and the scene's edits at a few cells, decoded by
the model's decoder and by a copy fitted to (the base's latent -> the base) for each of `--fits`
(`steps@lr`, or `steps@lr:perm` for the fit on the image's six channel permutations). Same latents
for every decoder: only the decoding differs. A benchmark, not a test. Results in docs/binding.md.

Usage: HF_HUB_OFFLINE=1 python bench/decoder_tune.py --method full --fits "50@2e-4,50@2e-4:perm" \\
           --scenes 0:20 --threads 1 --out a.json
       python bench/decoder_tune.py --summarise a.json b.json
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch
from binding import scene_range
from variant_tunes import edit_row

from unitune import Editor, EditSettings, TuneSettings
from unitune.benchmark.binding import measure_binding
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.decoder_fit import fit_decoder
from unitune.shapes.world import render_pil
from unitune.tuning import encode_latent

# (guidance, strength, interpolation), the model's other edit dials (untuned tail 0.2)
EDIT_CELLS = ((3.0, 0.8, 1.0), (3.0, 1.0, 0.0), (3.0, 1.0, 1.0), (6.0, 1.0, 0.0))


def fit(editor, base, steps: int, lr: float) -> float:
    """Fit the pipeline's decoder in place as a tune with `--decoder-steps steps --decoder-lr lr` does
    (unitune.decoder_fit, warm-up included); returns seconds."""
    pipe, started = editor.pipe, time.perf_counter()
    image = editor.prepare_image(base)
    latent = encode_latent(pipe, image, editor.runtime)
    settings = TuneSettings(decoder_steps=steps, decoder_learning_rate=lr)
    fit_decoder(pipe, latent, pipe.image_processor.preprocess(image), settings, editor.runtime)
    return time.perf_counter() - started


def fit_permuted(editor, base, steps: int, lr: float) -> float:
    """The same fit on the six RGB channel permutations of the image and their own latents, one a step in
    turn (the identity among them): the decoder learns the scene's edges and texture in every colour, so
    that it cannot learn which colour belongs where (what pulled recolours back on the test split)."""
    from diffusers.optimization import get_scheduler
    from PIL import Image

    pipe, started = editor.pipe, time.perf_counter()
    image = editor.prepare_image(base)
    orders = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
    pixels = np.asarray(image.convert("RGB"))
    pairs = []
    for order in orders:
        permuted = Image.fromarray(np.ascontiguousarray(pixels[..., list(order)]))
        latent = encode_latent(pipe, permuted, editor.runtime) / pipe.vae.config.scaling_factor
        pairs.append((latent, pipe.image_processor.preprocess(permuted)))
    decoder = pipe.vae.decoder.requires_grad_(True)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    schedule = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=max(1, steps // 5))
    for step in range(steps):
        latent, target = pairs[step % len(pairs)]
        loss = torch.nn.functional.mse_loss(pipe.vae.decode(latent, return_dict=False)[0], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    decoder.requires_grad_(False)
    return time.perf_counter() - started


def measure_scene(editor, number, scene, split, tune, fit_text, guidances) -> list[dict]:
    base, rows = render_pil(scene), []
    for guidance in guidances:
        edit = EditSettings(guidance=guidance, steps=20)
        for row in measure_binding(editor, base, tune, edit, strengths=(1.0,)):
            bound = bool(row["same_scene"]) and row["psnr"] >= 28
            rows.append({"what": "binding", "guidance": guidance, "psnr": float(row["psnr"]), "bound": bound})
    edits = edits_for_scene(split, number, scene)
    for guidance, strength, interpolation in EDIT_CELLS:
        settings = EditSettings(
            guidance=guidance,
            strength=strength,
            interpolation=interpolation,
            steps=20,
            seed=number,
            untuned_tail=0.2,
            sample_batch=8,
        )
        results = editor.edit(base, [edit.prompt for edit in edits], settings, tune)
        for edit, result in zip(edits, results, strict=True):
            cell = {"guidance": guidance, "strength": strength, "interpolation": interpolation}
            rows.append({"what": "edit", **edit_row(result.image, edit, **cell)})
    return [{"scene": number, "fit": fit_text, **row} for row in rows]


def measure(method: str, fits: list[str], split: str, first: int, last: int, guidances) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(None, device="cpu", cache_dir=cache)
        tune = editor.resolve_tune(replace(editor.default_tune_settings(), method=method, decoder_steps=0))
        original = copy.deepcopy(editor.pipe.vae.decoder.state_dict())
        for number, scene in list(enumerate(base_scenes(split, last)))[first:]:
            for fit_text in ["none", *fits]:
                editor.pipe.vae.decoder.load_state_dict(original)
                seconds = 0.0
                if fit_text != "none":
                    spec, _, variant = fit_text.partition(":")
                    steps, lr = spec.split("@")
                    fitter = fit_permuted if variant == "perm" else fit
                    seconds = fitter(editor, render_pil(scene), int(steps), float(lr))
                part = measure_scene(editor, number, scene, split, tune, fit_text, guidances)
                rows += [{**row, "fit_seconds": seconds} for row in part]
            editor.pipe.vae.decoder.load_state_dict(original)
            print(f"scene {number} done", flush=True)
    return rows


def summarise(rows: list[dict]) -> None:
    binding = collections.defaultdict(list)
    edits = collections.defaultdict(list)
    for row in rows:
        if row["what"] == "binding":
            binding[(row["fit"], row["guidance"])].append(row)
        else:
            edits[(row["fit"], row["guidance"], row["strength"], row["interpolation"])].append(row)
    print("| decoder fit | guidance | scenes | same and >= 28 dB | median PSNR | fit s |")
    print("|---|---|---|---|---|---|")
    for (fit, guidance), group in sorted(binding.items()):
        bound = sum(row["bound"] for row in group)
        median = np.median([row["psnr"] for row in group])
        seconds = np.mean([row["fit_seconds"] for row in group])
        print(f"| {fit} | {guidance:g} | {len(group)} | {bound} | {median:.1f} | {seconds:.2f} |")
    print("\n| decoder fit | cell | edits | success | expressive | preserved |")
    print("|---|---|---|---|---|---|")
    for (fit, guidance, strength, interpolation), group in sorted(
        edits.items(), key=lambda item: item[0][1:]
    ):
        sums = [int(sum(row[key] for row in group)) for key in ("success", "expressive", "preserved")]
        label = f"g{guidance:g} s{strength:g} i{interpolation:g}"
        print(f"| {fit} | {label} | {len(group)} | " + " | ".join(map(str, sums)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="full")
    parser.add_argument("--fits", default="50@2e-4,100@1e-4")
    parser.add_argument("--scenes", default="0:20")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--guidances", default="3,6")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--summarise", nargs="*")
    args = parser.parse_args()
    if args.summarise:
        summarise([row for path in args.summarise for row in json.load(open(path))])
        return
    torch.set_num_threads(args.threads)
    first, last = scene_range(args.scenes)
    guidances = [float(value) for value in args.guidances.split(",")]
    rows = measure(args.method, args.fits.split(","), args.split, first, last, guidances)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(rows, file)
    summarise(rows)


if __name__ == "__main__":
    main()
