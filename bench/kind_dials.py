"""One kind of benchmark edit under variants of the automatic mask's constants and dials (lab harness,
docs/lab/words.md).

    python bench/kind_dials.py --split validation --kinds add ADDITION_CLEARANCE=2 ADDITION_CLEARANCE=6
    python bench/kind_dials.py --kinds size object_grow=4 --kinds background ring=3,switch=0.7

Each config is comma-separated key=value pairs: an upper-case name sets that constant of
unitune.regions; `object_grow=N` grows every object-branch mask by N px more; `ring=N,switch=F` keeps a
ring of N px around the objects as well, for the steps above timestep F x 1000, in background-branch
masks; `object_box=1|2` makes an object mask its bounding box (2: a square round its centre),
`core=N` keeps the object's inside N px in, `ring_rule=R` does both only where the map's mean in a 5-px
ring round the object is above R x its mean 4 px in (docs/lab/outline.md), `size_core=N` keeps the inside
of a size edit's object, `core_switch=F` keeps an object mask's kept inside only for the steps above
F x 1000; `fresh=W` mixes a share W of fresh DDPM noise into the inversion's noise maps inside the mask
(`fresh_bg` for background masks only), `fresh_start=1` starts inside the mask from fresh noise,
`ddim_inside=1` samples inside the mask with DDIM at eta 0; `pick=RULE` forces the object branch's
object to /tmp/lab/picks.json's RULE (edit name -> index of the connected part; docs/lab/naming.md),
`outline_union=1` gives a new outline the union of the object's box and a square round its centroid;
any other key is an EditSettings field over
the model's defaults. Seed = the scene's number, the
tunes cached in runs/localize-cache-SPLIT (shared with bench/localize.py). One JSON row per edit is
appended to --out.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace

import numpy as np
import torch
from scipy import ndimage

from unitune import Editor, EditSettings, localize, regions, sampling
from unitune import sample_batches as batches
from unitune.benchmark import metrics
from unitune.benchmark.edits import edit_set
from unitune.benchmark.methods import to_array
from unitune.shapes.world import render_pil

SCENES = {"validation": 34, "test": 36}
VARIANT = {
    "pick": None,
    "plate": 0,
    "plate_fresh": 0,
    "plate_box": 0,
    "plate_invert": 0,
    "outline_union": 0,
    "ddim_inside": 0,
    "fresh_start": 0,
    "fresh": 0,
    "fresh_bg": 0,
    "core_switch": 0,
    "size_core": 0,
    "core": 0,
    "ring_rule": 0,
    "object_box": 0,
    "object_grow": 0,
    "ring": 0,
    "switch": 0.7,
}
ORIGINAL = {name: getattr(regions, name) for name in dir(regions) if name.isupper()}
REGION_MASK, BLEND, APPLY, ROW = regions.region_mask, batches._blend, sampling.Blend.apply, batches._row
MOST_LIT = regions._most_lit_object
OUTLINE_MASK = regions.outline_mask


def union_outline(chosen):
    """The object's bounding box and a square of the box's longer side round the object's centroid,
    less its inside: room for a new outline centred where the old object's mass is."""
    rows, columns = np.nonzero(chosen)
    room = np.zeros_like(chosen)
    room[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1] = True
    side = max(rows.max() - rows.min() + 1, columns.max() - columns.min() + 1)
    top, left = int(round(rows.mean() - side / 2)), int(round(columns.mean() - side / 2))
    room[max(0, top) : top + side, max(0, left) : left + side] = True
    return room & ~regions._shrunk(chosen, regions._scaled(regions.KEPT_CORE, chosen.shape))


PICKS: dict = {}  # pick=RULE: edit name -> object index, from /tmp/lab/picks.json
CURRENT = {"edit": None}


class MaskedMaps:
    """A row's noise maps with a share `weight` of fresh DDPM noise inside its mask."""

    def __init__(self, maps, mask, weight, seed):
        self.inner, self.mask, self.weight = maps, mask, weight
        self.generator = torch.Generator("cpu").manual_seed(seed + 777)
        self.noised, self.maps = maps.noised, maps.maps

    @property
    def start(self):
        return self.inner.start

    def step(self, scheduler, prediction, t, latents, step):
        from unitune.inversion import ETA, _mean

        prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        std = ETA * float(scheduler._get_variance(t, prev)) ** 0.5
        fresh = std * torch.randn(latents.shape, generator=self.generator)
        w = self.weight
        if w < 0:  # deterministic DDIM (eta 0) inside the mask
            ddim = scheduler.step(prediction, t, latents, eta=0.0, return_dict=False)[0]
            outside = _mean(scheduler, prediction, t, latents) + self.inner.maps[step]
            return self.mask * ddim + (1 - self.mask) * outside
        inside = (1 - w) * self.inner.maps[step] + w * fresh if w < 1 else fresh
        noise = self.mask * inside + (1 - self.mask) * self.inner.maps[step]
        return _mean(scheduler, prediction, t, latents) + noise


def plated(model, request, base, shared, row) -> None:
    """plate=1 (every object-branch edit) / 2 (words naming a size) / 3 (a size or a new outline): start
    inside the mask from a clean plate, the base with the mask's pixels filled from the nearest kept
    background pixel, noised with fresh noise; plate_fresh=1 also draws fresh noise maps inside;
    plate_box=1 gives a new outline its whole box (no kept inside)."""
    from PIL import Image

    from unitune.localize import BaseEncoding

    mask = row.blend.pixel_mask[0, 0].numpy() > 0.5
    words = request.edit_words
    if mask.mean() >= 0.5 or regions.adds_object(words):
        return
    full = ndimage.binary_fill_holes(mask)
    outline = full.sum() > mask.sum()
    rule = int(VARIANT_NOW["plate"])
    if rule == 2 and not regions.names_size(words):
        return
    if rule == 3 and not (regions.names_size(words) or outline):
        return
    if outline and VARIANT_NOW["plate_box"]:
        mask = full
        pixel = torch.from_numpy(full.astype(np.float32))[None, None]
        row.blend.pixel_mask = pixel
        row.blend.mask = localize.to_latent_size(pixel.to(row.blend.mask.device), row.blend.mask.shape)
    pixels = np.asarray(base.convert("RGB"))
    labels = regions.image_regions(base)
    keep = (labels == regions.background_label(labels)) & ~mask
    if not keep.any():
        return
    _, (iy, ix) = ndimage.distance_transform_edt(~keep, return_indices=True)
    plate = Image.fromarray(pixels[iy, ix])
    pipe = model.pipe
    latent = BaseEncoding.of(pipe, plate, model.runtime).latent
    g = torch.Generator("cpu").manual_seed(request.seed + 999)
    noise = torch.randn(latent.shape, generator=g)
    t0 = shared.timesteps[row.start].reshape(1)
    noised = pipe.scheduler.add_noise(latent, noise, t0)
    m = row.blend.mask
    if VARIANT_NOW["plate_invert"] and row.noise_maps is not None:
        row.noise_maps = plate_maps(model, request, shared, row, latent, m)
        row.latents = row.noise_maps.start.clone()
        return
    row.latents = m * noised + (1 - m) * row.latents
    if VARIANT_NOW["plate_fresh"] and row.noise_maps is not None:
        row.noise_maps = MaskedMaps(row.noise_maps, m, 1.0, request.seed)


VARIANT_NOW: dict = {}


def plate_maps(model, request, shared, row, latent, m):
    """The row's noise maps with the plate's own inversion (same draws, same weights) inside the mask."""
    import contextlib

    from unitune.inversion import NoiseMaps, invert

    settings = request.settings
    guidance, negative = settings.inversion_guidance, settings.negative_prompt

    def weights_at(step: int):
        tail = shared.switch is not None and row.start + step >= shared.switch
        return model.weights.untuned() if tail else contextlib.nullcontext()

    plate = invert(
        model.pipe,
        row.scheduler,
        latent,
        shared.timesteps[row.start :],
        shared.encoded(request.rare_prompt, negative, guidance > 1.0),
        guidance,
        torch.Generator("cpu").manual_seed(request.seed),
        model.runtime,
        weights_at,
    )
    own = row.noise_maps
    maps = [m * p + (1 - m) * o for p, o in zip(plate.maps, own.maps, strict=True)]
    noised = {t: m * plate.noised[t] + (1 - m) * x for t, x in own.noised.items()}
    return NoiseMaps(maps, noised)


def parse(config: str) -> tuple[dict, dict, dict]:
    """ "SIZE_REACH=2,guidance=6" -> (constants, variant, settings)."""
    kinds = {f.name: f.type for f in fields(EditSettings)}
    constants, variant, settings = {}, dict(VARIANT), {}
    for pair in filter(None, config.split(",")):
        key, value = pair.split("=")
        if key.isupper():
            constants[key] = type(ORIGINAL[key])(value)
        elif key == "pick":
            variant[key] = value
        elif key in variant:
            variant[key] = float(value)
        elif kinds.get(key) in ("bool", bool):
            settings[key] = value.lower() in ("1", "true")
        else:
            settings[key] = int(value) if kinds[key] in ("int", int) else float(value)
    return constants, variant, settings


def patch(variant: dict) -> None:
    """The variant's changes to the object branch and to the background's blend (module docstring)."""
    rule = variant.get("pick")
    VARIANT_NOW.clear()
    VARIANT_NOW.update(variant)

    def picked_object(foreground, spread):
        choice = PICKS.get(rule, {}).get(CURRENT["edit"]) if rule else None
        if choice is None:
            return MOST_LIT(foreground, spread)
        parts, count = ndimage.label(ndimage.binary_opening(foreground))
        if count < 2:
            return foreground
        grown = max(1, regions._scaled(regions.OBJECT_REACH, foreground.shape))
        return regions._grown(parts == choice + 1, grown)

    regions._most_lit_object = picked_object
    regions.outline_mask = union_outline if variant["outline_union"] else OUTLINE_MASK

    def grown_region_mask(difference, labels, ratio, reach=0):
        mask = REGION_MASK(difference, labels, ratio, reach)
        if mask.mean() < 0.5 and reach and variant["size_core"]:
            return mask & ~ndimage.binary_erosion(mask, iterations=reach + int(variant["size_core"]))
        if mask.mean() >= 0.5 or not (variant["object_grow"] or variant["object_box"]) or reach:
            return mask
        spread = torch.nn.functional.interpolate(
            difference.detach().float().cpu(), size=labels.shape, mode="bilinear", align_corners=False
        )[0, 0].numpy()
        if variant["ring_rule"]:
            core = ndimage.binary_erosion(mask, iterations=4)
            ring = ndimage.binary_dilation(mask, iterations=5) & ~mask
            if not core.any() or spread[ring].mean() <= variant["ring_rule"] * spread[core].mean():
                return mask
        kept = ndimage.binary_erosion(mask, iterations=int(variant["core"])) if variant["core"] else None
        if variant["object_box"] and mask.any():
            ys, xs = np.nonzero(mask)
            top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            if variant["object_box"] == 2:  # a square round the box's centre
                side = max(bottom - top, right - left)
                cy, cx = (top + bottom) / 2, (left + right) / 2
                top, bottom = int(round(cy - side / 2)), int(round(cy + side / 2))
                left, right = int(round(cx - side / 2)), int(round(cx + side / 2))
            box = np.zeros_like(mask)
            box[max(0, top) : bottom, max(0, left) : right] = True
            mask = box
        if variant["object_grow"]:
            mask = ndimage.binary_dilation(mask, iterations=int(variant["object_grow"]))
        return mask & ~kept if kept is not None else mask

    def ringed_blend(model, request, base, shared):
        made = BLEND(model, request, base, shared)
        if made.pixel_mask is not None and float(made.pixel_mask.mean()) < 0.5 and variant["core_switch"]:
            pixels = made.pixel_mask[0, 0].numpy() > 0.5
            full = ndimage.binary_fill_holes(pixels)
            if full.sum() > pixels.sum():  # a kept inside: kept early only
                full = torch.from_numpy(full.astype(np.float32))[None, None]
                made.early = made.mask
                made.mask = localize.to_latent_size(full.to(made.mask.device), made.mask.shape)
                made.pixel_mask = full
            return made
        if made.pixel_mask is not None and float(made.pixel_mask.mean()) > 0.5 and variant["ring"]:
            kept = made.pixel_mask[0, 0].numpy() < 0.5
            early = ~ndimage.binary_dilation(kept, iterations=int(variant["ring"]))
            early = torch.from_numpy(early.astype(np.float32))[None, None].to(made.mask.device)
            made.early = localize.to_latent_size(early, made.mask.shape)
        return made

    def ringed_apply(self, scheduler, latents, next_timestep):
        early = getattr(self, "early", None)
        switch = variant["core_switch"] or variant["switch"]
        if early is None or next_timestep is None or float(next_timestep) <= switch * 1000:
            return APPLY(self, scheduler, latents, next_timestep)
        return APPLY(replace(self, mask=early), scheduler, latents, next_timestep)

    def fresh_row(model, request, base, size, shared):
        row = ROW(model, request, base, size, shared)
        if variant["plate"] and row.blend is not None and row.blend.pixel_mask is not None:
            plated(model, request, base, shared, row)
        weight = -1.0 if variant["ddim_inside"] else variant["fresh"]
        if row.blend is not None and row.noise_maps is not None and variant["fresh_start"]:
            g = torch.Generator("cpu").manual_seed(request.seed + 999)
            fresh = torch.randn(row.latents.shape, generator=g) * model.pipe.scheduler.init_noise_sigma
            row.latents = row.blend.mask * fresh + (1 - row.blend.mask) * row.latents
        if row.blend is not None and row.noise_maps is not None and (weight or variant["fresh_bg"]):
            if variant["fresh_bg"]:
                background = row.blend.pixel_mask is not None and float(row.blend.pixel_mask.mean()) > 0.5
                weight = variant["fresh_bg"] if background else weight
            if weight:
                row.noise_maps = MaskedMaps(row.noise_maps, row.blend.mask, weight, request.seed)
        return row

    batches._row = fresh_row
    regions.region_mask = grown_region_mask
    batches._blend = ringed_blend
    sampling.Blend.apply = ringed_apply


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", default="validation", choices=tuple(SCENES))
    parser.add_argument("--kinds", default="background", help="comma-separated edit kinds")
    parser.add_argument("--out", default="runs/kind-dials.jsonl")
    parser.add_argument("configs", nargs="*", default=[""])
    args = parser.parse_args()
    torch.set_num_threads(2)
    if any("pick" in config for config in args.configs):  # {rule: {edit name: object index}}
        PICKS.update(json.load(open("/tmp/lab/picks.json")))
    editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{args.split}")
    defaults = editor.default_edit_settings()
    edits = [e for e in edit_set(args.split, SCENES[args.split]) if e.kind in args.kinds.split(",")]
    if any("pick" in config for config in args.configs):  # only the edits a pick rule chooses for
        edits = [e for e in edits if e.name in PICKS["right"]]
    for config in args.configs:
        constants, variant, settings = parse(config)
        for name, value in {**ORIGINAL, **constants}.items():
            setattr(regions, name, value)
        patch(variant)
        rows = []
        for edit in edits:
            CURRENT["edit"] = edit.name
            [result] = editor.edit(
                render_pil(edit.base), [edit.prompt], replace(defaults, seed=edit.scene, **settings)
            )
            scores = metrics.score(to_array(result.image), edit)
            rows.append({"config": config or "default", "edit": edit.name, "kind": edit.kind, **scores})
        with open(args.out, "a") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
        successes = sum(row["success"] for row in rows)
        print(f"{config or 'default':40s} {int(successes)} of {len(rows)}", flush=True)


if __name__ == "__main__":
    main()
