"""The automatic mask's difference map read round and inside the chosen object, per edit kind (lab probe,
docs/lab/outline.md), with the outline rule off (the object's mask as before it):

    python bench/outline_probe.py > runs/core.jsonl
    python bench/outline_probe.py '{"mask_reading": "tuned"}' > runs/core-tuned.jsonl

Saves the maps, masks and true regions under /tmp/lab/maps."""

import json
import os
import sys
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from unitune import Editor, regions
from unitune.benchmark import metrics
from unitune.benchmark.edits import edit_set
from unitune.shapes.world import render, render_pil

torch.set_num_threads(2)
editor = Editor.load(device="cpu", cache_dir="runs/localize-cache-validation")
defaults = editor.default_edit_settings()
EXTRA = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
captured = {}
orig = regions.region_mask
regions.OUTLINE_RATIO = float("inf")  # the object's own mask, as the rule reads it
os.makedirs("/tmp/lab/maps", exist_ok=True)


def spy(difference, labels, ratio, reach=0):
    captured["d"] = difference.detach().float().cpu()
    captured["labels"] = labels
    m = orig(difference, labels, ratio, reach)
    captured["mask"] = m
    return m


regions.region_mask = spy
out = []
for e in edit_set("validation", 30):
    if e.kind not in ("shape", "colour", "size"):
        continue
    [res] = editor.edit(render_pil(e.base), [e.prompt], replace(defaults, seed=e.scene, **EXTRA))
    d = F.interpolate(captured["d"], size=(64, 64), mode="bilinear")[0, 0].numpy()
    mask = captured["mask"]
    base = render(e.base)
    target = render(e.target)
    truth = metrics.change_mask(base, target)
    if mask.mean() > 0.5:
        continue
    core = ndimage.binary_erosion(mask, iterations=4)
    edge = mask & ~core
    ring = ndimage.binary_dilation(mask, iterations=5) & ~mask
    row = dict(
        edit=e.name,
        kind=e.kind,
        core=float(d[core].mean()) if core.any() else None,
        edge=float(d[edge].mean()),
        ring=float(d[ring].mean()),
        img=float(d.mean()),
        truth_core=float(truth[core].mean()) if core.any() else None,
        truth_ring=float(truth[ring].mean()),
    )
    np.save(f"/tmp/lab/maps/{EXTRA.get('mask_reading', 'u')}-{e.name}.npy", d)
    np.save(f"/tmp/lab/maps/{EXTRA.get('mask_reading', 'u')}-{e.name}-mask.npy", mask)
    np.save(f"/tmp/lab/maps/{EXTRA.get('mask_reading', 'u')}-{e.name}-truth.npy", truth)
    out.append(row)
    print(json.dumps(row), flush=True)
