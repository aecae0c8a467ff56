"""A gated decoder fit: decode with the fitted decoder only where the sample is still the image.

The decoder fit (unitune.decoder_fit) binds more test scenes but pulls recoloured objects back towards
the image's colours (docs/binding.md): a decoder fitted to one latent is right near that latent and
wrong away from it. The gate decodes each sample with both decoders and mixes them,

    out = m * fitted(z) + (1 - m) * model(z),

m near 1 where the sample is still the image and near 0 where the edit changed it. Two gates:

pix@tau  m = unchanged_mask(model(z), model(z_image), tau) (unitune.interpolation's mask): both sides
         decoded by the model's decoder, so its blur cancels and only a real change closes the gate;
pix@tau:r  the same mask eroded by r pixels (its minimum over a (2r+1)^2 window): closed near a change too;
lat@tau  m = exp(-rms_c(z - z_image)^2 / tau^2) per latent pixel, upsampled bilinearly.

Per validation scene, as the benchmark runs UniTune: the model's default tune (full or LoRA, batch 4),
R alone from noise at strengths 1 and 0.8 (binding), and the scene's edits on the benchmark's whole
(guidance, strength) grid, every sample scored at interpolation 0, 0.5 and 1. Each sample is drawn once
and its latent decoded by every variant (`none`, `fit`, the gates), so only the decoding differs.
A benchmark, not a test. Results in docs/binding.md.

Usage: HF_HUB_OFFLINE=1 python bench/decoder_gate.py --method full --scenes 0:20 --threads 1 --out a.json
       python bench/decoder_gate.py --summarise a.json
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import tempfile
import types
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from binding import scene_range
from variant_tunes import edit_row

import unitune.decoder_gate as decoder_gate
from unitune import Editor, EditSettings, TuneSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import psnr
from unitune.decoder_fit import fit_decoder
from unitune.interpolation import interpolate_details, unchanged_mask
from unitune.sampling import to_pil, to_tensor
from unitune.shapes.analyzer import analyze, same_reading
from unitune.shapes.world import render_pil
from unitune.tuning import encode_latent

GUIDANCES, STRENGTHS, INTERPOLATIONS = (3.0, 6.0), (0.4, 0.6, 0.8, 1.0), (0.0, 0.5, 1.0)
GATES = ("pix@0.15", "pix@0.3", "pix@0.6", "lat@0.25", "lat@0.5", "lat@1")


class Captured:
    """The sampler's decode (`unitune.decoder_gate.decode`; the tune here has no fitted decoder) replaced by
    one that records each sample's latents and decodes as before."""

    def __init__(self):
        self.latents: list[torch.Tensor] = []

    def __enter__(self):
        self.original = decoder_gate.decode

        def recording(pipe, latents, runtime):
            self.latents.append(latents.detach().clone())
            return self.original(pipe, latents, runtime)

        decoder_gate.decode = recording
        return self

    def __exit__(self, *exc):
        decoder_gate.decode = self.original


@torch.no_grad()
def decoded(vae, pipe, latents) -> torch.Tensor:
    images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(images.float(), output_type="pt").cpu()


class Decoders:
    """The model's decoder and one fitted to this image; `decode(variant, z)` in [0, 1]."""

    def __init__(self, editor, base, steps: int, lr: float):
        pipe = editor.pipe
        image = editor.prepare_image(base)
        self.pipe, self.model = pipe, pipe.vae
        self.latent = encode_latent(pipe, image, editor.runtime)
        self.fitted = copy.deepcopy(pipe.vae)
        settings = TuneSettings(decoder_steps=steps, decoder_learning_rate=lr)
        target = pipe.image_processor.preprocess(image)
        fit_decoder(types.SimpleNamespace(vae=self.fitted), self.latent, target, settings, editor.runtime)
        self.model_image = decoded(self.model, pipe, self.latent)

    def decode(self, variant: str, z: torch.Tensor) -> torch.Tensor:
        model = decoded(self.model, self.pipe, z)
        if variant == "none":
            return model
        fitted = decoded(self.fitted, self.pipe, z)
        if variant == "fit":
            return fitted
        kind, _, width = variant.partition("@")
        tau, _, erosion = width.partition(":")
        if kind == "pix":
            gate = unchanged_mask(model, self.model_image, float(tau))
            if erosion:  # the gate closed within `erosion` pixels of a change too
                radius = int(erosion)
                gate = -F.max_pool2d(-gate, 2 * radius + 1, stride=1, padding=radius)
        else:
            distance = (z - self.latent).pow(2).mean(dim=1, keepdim=True).sqrt()
            gate = F.interpolate(
                torch.exp(-distance.pow(2) / float(tau) ** 2),
                size=model.shape[-2:],
                mode="bilinear",
                align_corners=False,
            ).cpu()
        return gate * fitted + (1 - gate) * model


def variants(gates) -> list[str]:
    return ["none", "fit", *gates]


def measure_scene(editor, number, scene, split, method, fit_spec, gates) -> list[dict]:
    base = render_pil(scene)
    tune = replace(editor.default_tune_settings(), method=method, steps=None, batch_size=4, decoder_steps=0)
    editor.tune(base, tune)
    steps, lr = fit_spec.split("@")
    decoders = Decoders(editor, base, int(steps), float(lr))
    truth, base_pixels = analyze(base), np.asarray(base.convert("RGB"))
    defaults, seed, rows = editor.default_edit_settings(), number, []
    for guidance in GUIDANCES:
        for strength in (1.0, 0.8):
            settings = EditSettings(
                guidance=guidance, strength=strength, steps=20, seed=seed, untuned_tail=0.0
            )
            with Captured() as captured:
                editor.edit(base, "", settings, tune)
            for variant in variants(gates):
                pixels = np.asarray(to_pil(decoders.decode(variant, captured.latents[0]))[0])
                same = bool(same_reading(analyze(pixels), truth))
                row = {"what": "binding", "variant": variant, "guidance": guidance, "strength": strength}
                rows.append({**row, "same": same, "psnr": float(psnr(pixels, base_pixels))})
    edits = edits_for_scene(split, number, scene)
    base_tensor = to_tensor(editor.prepare_image(base))
    for guidance in GUIDANCES:
        for strength in STRENGTHS:
            settings = EditSettings(
                guidance=guidance,
                strength=strength,
                steps=20,
                seed=seed,
                untuned_tail=defaults.untuned_tail,
                model_guidance=defaults.model_guidance,
                sample_batch=defaults.sample_batch,
            )
            with Captured() as captured:
                results = editor.edit(base, [edit.prompt for edit in edits], settings, tune)
            assert len(captured.latents) == len(edits)
            for edit, result, z in zip(edits, results, captured.latents, strict=True):
                check = np.asarray(to_pil(decoders.decode("none", z))[0])
                assert np.array_equal(check, np.asarray(result.image.convert("RGB"))), "capture order"
                for variant in variants(gates):
                    raw = decoders.decode(variant, z)
                    for weight in INTERPOLATIONS:
                        image = to_pil(interpolate_details(raw, base_tensor, weight))[0]
                        cell = {"guidance": guidance, "strength": strength, "interpolation": weight}
                        rows.append({"what": "edit", "variant": variant, **edit_row(image, edit, **cell)})
    return [{"scene": number, **row} for row in rows]


def measure_targets(editor, number, scene, split, fit_spec, gates) -> list[dict]:
    """No tune, no sampling: each edit's ideal target (rendered) encoded by the model's encoder and decoded
    by every variant, scored as an edit. Does a decoder fitted to the base pull a target that differs from
    it back towards the base (what cost recolours on the test split)? The model's decoder is the reference."""
    base = render_pil(scene)
    steps, lr = fit_spec.split("@")
    decoders = Decoders(editor, base, int(steps), float(lr))
    rows = []
    for edit in edits_for_scene(split, number, scene):
        target = render_pil(edit.target)
        z = encode_latent(editor.pipe, editor.prepare_image(target), editor.runtime)
        for variant in variants(gates):
            image = to_pil(decoders.decode(variant, z))[0]
            pixels = np.asarray(image.convert("RGB"))
            row = edit_row(image, edit, guidance=0.0, strength=0.0, interpolation=0.0)
            row["psnr"] = float(psnr(pixels, np.asarray(target.convert("RGB"))))
            rows.append({"scene": number, "what": "target", "variant": variant, **row})
    return rows


def summarise_targets(rows: list[dict]) -> None:
    order = list(dict.fromkeys(row["variant"] for row in rows))
    groups = collections.defaultdict(list)
    for row in rows:
        groups[(row["kind"], row["variant"])].append(row)
    print("| kind | decoder | targets | read right (success) | median PSNR to the target |")
    print("|---|---|---|---|---|")
    for (kind, variant), group in sorted(groups.items(), key=lambda i: (i[0][0], order.index(i[0][1]))):
        hits = int(sum(row["success"] for row in group))
        median = np.median([row["psnr"] for row in group])
        print(f"| {kind} | {variant} | {len(group)} | {hits} | {median:.1f} |")


def summarise(rows: list[dict]) -> None:
    if rows and rows[0]["what"] == "target":
        summarise_targets(rows)
        return
    binding = collections.defaultdict(list)
    edits = collections.defaultdict(list)
    kinds = collections.defaultdict(list)
    for row in rows:
        if row["what"] == "binding":
            binding[(row["variant"], row["guidance"], row["strength"])].append(row)
        else:
            edits[row["variant"]].append(row)
            kinds[(row["variant"], row["kind"])].append(row)
    order = list(dict.fromkeys(row["variant"] for row in rows))
    print("| decoder | guidance | strength | scenes | same and >= 28 dB | median PSNR |")
    print("|---|---|---|---|---|---|")
    for (variant, guidance, strength), group in sorted(
        binding.items(), key=lambda i: (order.index(i[0][0]), i[0][1:])
    ):
        bound = sum(row["same"] and row["psnr"] >= 28 for row in group)
        median = np.median([row["psnr"] for row in group])
        print(f"| {variant} | {guidance:g} | {strength:g} | {len(group)} | {bound} | {median:.1f} |")
    print("\n| decoder | samples (edits x 24 cells) | success | expressive | preserved |")
    print("|---|---|---|---|---|")
    for variant in order:
        group = edits[variant]
        sums = [int(sum(row[key] for row in group)) for key in ("success", "expressive", "preserved")]
        print(f"| {variant} | {len(group)} | " + " | ".join(map(str, sums)) + " |")
    print("\n| decoder | kind | success | expressive | preserved |")
    print("|---|---|---|---|---|")
    for (variant, kind), group in sorted(kinds.items(), key=lambda i: (i[0][1], order.index(i[0][0]))):
        sums = [int(sum(row[key] for row in group)) for key in ("success", "expressive", "preserved")]
        print(f"| {variant} | {kind} | " + " | ".join(map(str, sums)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="full")
    parser.add_argument("--fit", default="50@2e-4", help="the decoder fit, steps@learning rate")
    parser.add_argument("--gates", default=",".join(GATES))
    parser.add_argument("--scenes", default="0:20")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--summarise", nargs="*")
    parser.add_argument("--targets", action="store_true", help="decode the edits' ideal targets instead")
    args = parser.parse_args()
    if args.summarise:
        summarise([row for path in args.summarise for row in json.load(open(path))])
        return
    torch.set_num_threads(args.threads)
    first, last = scene_range(args.scenes)
    gates = [gate for gate in args.gates.split(",") if gate]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(None, device="cpu", cache_dir=cache)
        for number, scene in list(enumerate(base_scenes(args.split, last)))[first:]:
            if args.targets:
                rows += measure_targets(editor, number, scene, args.split, args.fit, gates)
            else:
                rows += measure_scene(editor, number, scene, args.split, args.method, args.fit, gates)
            print(f"scene {number} done", flush=True)
            if args.out:
                with open(args.out, "w") as file:
                    json.dump(rows, file)
    summarise(rows)


if __name__ == "__main__":
    main()
