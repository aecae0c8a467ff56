"""One kind of benchmark edit under variants of the automatic mask's constants and dials (lab harness,
docs/lab/words.md).

    python bench/kind_dials.py --split validation --kinds add ADDITION_CLEARANCE=2 ADDITION_CLEARANCE=6
    python bench/kind_dials.py --kinds size object_grow=4 --kinds background ring=3,switch=0.7

Each config is comma-separated key=value pairs: an upper-case name sets that constant of
unitune.regions; `object_grow=N` grows every object-branch mask by N px more; `ring=N,switch=F` keeps a
ring of N px around the objects as well, for the steps above timestep F x 1000, in background-branch
masks; any other key is an EditSettings field over the model's defaults. Seed = the scene's number, the
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

SCENES = {"validation": 30, "test": 36}
VARIANT = {"object_grow": 0, "ring": 0, "switch": 0.7}
ORIGINAL = {name: getattr(regions, name) for name in dir(regions) if name.isupper()}
REGION_MASK, BLEND, APPLY = regions.region_mask, batches._blend, sampling.Blend.apply


def parse(config: str) -> tuple[dict, dict, dict]:
    """ "SIZE_REACH=2,guidance=6" -> (constants, variant, settings)."""
    kinds = {f.name: f.type for f in fields(EditSettings)}
    constants, variant, settings = {}, dict(VARIANT), {}
    for pair in filter(None, config.split(",")):
        key, value = pair.split("=")
        if key.isupper():
            constants[key] = type(ORIGINAL[key])(value)
        elif key in variant:
            variant[key] = float(value)
        elif kinds.get(key) in ("bool", bool):
            settings[key] = value.lower() in ("1", "true")
        else:
            settings[key] = int(value) if kinds[key] in ("int", int) else float(value)
    return constants, variant, settings


def patch(variant: dict) -> None:
    """The variant's changes to the object branch and to the background's blend (module docstring)."""

    def grown_region_mask(difference, labels, ratio, reach=0):
        mask = REGION_MASK(difference, labels, ratio, reach)
        if mask.mean() >= 0.5 or not variant["object_grow"]:  # the background's branch, or no change
            return mask
        return ndimage.binary_dilation(mask, iterations=int(variant["object_grow"]))

    def ringed_blend(model, request, base, shared):
        made = BLEND(model, request, base, shared)
        if made.pixel_mask is not None and float(made.pixel_mask.mean()) > 0.5 and variant["ring"]:
            kept = made.pixel_mask[0, 0].numpy() < 0.5
            early = ~ndimage.binary_dilation(kept, iterations=int(variant["ring"]))
            early = torch.from_numpy(early.astype(np.float32))[None, None].to(made.mask.device)
            made.early = localize.to_latent_size(early, made.mask.shape)
        return made

    def ringed_apply(self, scheduler, latents, next_timestep):
        early = getattr(self, "early", None)
        if early is None or next_timestep is None or float(next_timestep) <= variant["switch"] * 1000:
            return APPLY(self, scheduler, latents, next_timestep)
        return APPLY(replace(self, mask=early), scheduler, latents, next_timestep)

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
    editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{args.split}")
    defaults = editor.default_edit_settings()
    edits = [e for e in edit_set(args.split, SCENES[args.split]) if e.kind in args.kinds.split(",")]
    for config in args.configs:
        constants, variant, settings = parse(config)
        for name, value in {**ORIGINAL, **constants}.items():
            setattr(regions, name, value)
        patch(variant)
        rows = []
        for edit in edits:
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
