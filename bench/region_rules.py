"""The automatic mask snapped to the image's regions, explored before `--mask-regions` (issue 36;
docs/lab/regions.md): rules over bench/mask_sources.py's dumped readings (DiffEdit's raw map per edit),
their IoU with the true changed region, and each rule's masks given to the editor as a user's mask.

    python bench/mask_sources.py dump --split validation --scenes 30          # the readings, ~1.5 min
    python bench/region_rules.py features --split validation                  # the map's background ratio
    python bench/region_rules.py iou --split validation                       # IoU per kind, seconds
    python bench/region_rules.py edit --split validation --scenes 30 --rules p5 p6 q1 q2   # ~1 min per rule
    python bench/region_rules.py report runs/region-rules.jsonl --split validation --scenes 30

A rule: segment the base (Felzenszwalb: `scale`, `sigma`, min size 30), take the region most of the border
carries as the background; if the map's mean there is above `t` x its mean over the rest, the mask is the
background (grown `bg_grow` px), else the other regions whose mean is above `above` x the image's mean
(grown `obj_grow` px). The editor then grows it by the model's mask_grow, as a user's mask.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from mask_sources import _to_pixels, diffedit_rule, iou, load_edits, truth_of  # noqa: E402

RULES = {
    "p5": dict(t=0.5),
    "p6": dict(t=0.6),
    "p6o": dict(t=0.6, obj="objects"),
    "p6a": dict(t=0.6, above=1.5),
    "q1": dict(t=0.5, scale=1000, sigma=0.8, bg_grow=1, above=1.5),
    "q2": dict(t=0.5, scale=1000, sigma=0.8, bg_grow=2, above=1.5),  # became --mask-regions
    "q3": dict(t=0.5, scale=1000, sigma=0.8, bg_grow=2, obj_grow=2, above=1.5),
    "q4": dict(t=0.5, scale=1000, sigma=0.8, bg_grow=2, obj_grow=1, above=1.0),
}


def background_label(regions):
    border = np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]])
    return Counter(border.tolist()).most_common(1)[0][0]


def rule_mask(e, t=0.6, obj="snapped", above=1.0, scale=500, sigma=1.5, bg_grow=0, obj_grow=0):
    from skimage.segmentation import felzenszwalb

    regions = felzenszwalb(e["base"], scale=scale, sigma=sigma, min_size=30)
    bg = background_label(regions)
    d = _to_pixels(e["difference"])
    objects = regions != bg
    ratio = d[~objects].mean() / d[objects].mean() if objects.any() else 9
    if ratio > t:
        mask, grow = ~objects, bg_grow
    else:
        grow = obj_grow
        if obj == "snapped":
            labels = np.unique(regions)
            means = ndimage.mean(d, regions, labels)
            mask = np.isin(regions, labels[(means > above * d.mean()) & (labels != bg)])
            mask = mask if mask.any() else objects
        elif obj == "objects":
            mask = objects
        else:
            mask = diffedit_rule(e)
    return ndimage.binary_dilation(mask, iterations=grow) if grow else mask


def features(folder: Path, split: str) -> str:
    from skimage.segmentation import felzenszwalb

    stats = defaultdict(list)
    for e in load_edits(folder, split):
        regions = felzenszwalb(e["base"], scale=500, sigma=1.5, min_size=30)
        objects = regions != background_label(regions)
        d = _to_pixels(e["difference"])
        stats[e["kind"]].append((d[~objects].mean() / d[objects].mean(), d.max() / d.mean(), d.mean()))
    lines = [
        "| kind | edits | background / objects mean: median [20-80th pct] | peak / mean | mean |",
        "|---|---|---|---|---|",
    ]
    for kind, values in sorted(stats.items()):
        v = np.array(values)
        lines.append(
            f"| {kind} | {len(v)} | {np.median(v[:, 0]):.2f} [{np.percentile(v[:, 0], 20):.2f}-"
            f"{np.percentile(v[:, 0], 80):.2f}] | {np.median(v[:, 1]):.2f} | {np.median(v[:, 2]):.4f} |"
        )
    return "\n".join(lines)


def iou_table(folder: Path, split: str, rules: list[str]) -> str:
    edits = list(load_edits(folder, split))
    kinds = sorted({e["kind"] for e in edits})
    lines = ["| rule | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for name in rules:
        by = defaultdict(list)
        for e in edits:
            mask = rule_mask(e, **RULES[name])
            by[e["kind"]].append((iou(mask, truth_of(e)), mask.mean()))
        cells = [
            f"{np.nanmean([a for a, _ in by[k]]):.2f} ({np.mean([b for _, b in by[k]]):.2f})" for k in kinds
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def edit_scenes(split: str, scenes: list[int], count: int, folder: Path, rules: list[str]) -> list[dict]:
    import torch
    from PIL import Image

    from unitune import Editor
    from unitune.benchmark import metrics
    from unitune.benchmark.edits import edit_set
    from unitune.benchmark.methods import to_array
    from unitune.shapes.world import render, render_pil

    torch.set_num_threads(1)
    editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{split}")
    defaults = replace(editor.default_edit_settings(), localize="off", mask_regions=False)
    edits, rows = edit_set(split, count), []
    for scene in scenes:
        scene_edits = [e for e in edits if e.scene == scene]
        dumped = list(load_edits(folder, split, scene))
        assert [d["name"] for d in dumped] == [e.name for e in scene_edits]
        base, pixels = render_pil(scene_edits[0].base), render(scene_edits[0].base)
        for name in rules:
            masks = [Image.fromarray(rule_mask(d, **RULES[name]).astype(np.uint8) * 255) for d in dumped]
            results = editor.edit(
                base, [e.prompt for e in scene_edits], replace(defaults, seed=scene), mask=masks
            )
            for edit, result in zip(scene_edits, results, strict=True):
                scores = metrics.score(to_array(result.image), edit, pixels, render(edit.target))
                rows.append({"scene": scene, "edit": edit.name, "kind": edit.kind, "config": name, **scores})
        print(split, scene, flush=True)
    return rows


def report(path: Path, folder: Path, split: str, count: int) -> str:
    """Each rule's successes against the unlocalised default edit (the dump's own outputs), paired."""
    from scipy.stats import binomtest

    from unitune.benchmark import metrics
    from unitune.benchmark.edits import edit_set

    edits = {e.name: e for e in edit_set(split, count)}
    off = {
        d["name"]: metrics.score(d["output"], edits[d["name"]], d["base"], d["target"])["success"]
        for d in load_edits(folder, split)
    }
    by = defaultdict(dict)
    for row in map(json.loads, path.read_text().splitlines()):
        by[row["config"]][row["edit"]] = row
    lines = [f"off: {sum(off.values()):.0f} / {len(off)}"]
    for name, rows in by.items():
        kinds = Counter()
        for row in rows.values():
            kinds[row["kind"]] += row["success"]
        wins = sum(r["success"] > off[k] for k, r in rows.items())
        losses = sum(r["success"] < off[k] for k, r in rows.items())
        p = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
        success = sum(r["success"] for r in rows.values())
        lines.append(
            f"{name}: {success:.0f} / {len(rows)}, {dict(kinds)}, vs off {wins} / {losses} (p = {p:.2g})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("features", "iou", "edit", "report"))
    parser.add_argument("records", nargs="?", type=Path)
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=Path("runs/mask-sources"))
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--out", type=Path, default=Path("runs/region-rules.jsonl"))
    args = parser.parse_args()
    if args.step == "features":
        print(features(args.dir, args.split))
    elif args.step == "iou":
        print(iou_table(args.dir, args.split, args.rules))
    elif args.step == "report":
        print(report(args.records, args.dir, args.split, args.scenes))
    else:
        shares = [list(range(args.scenes))[k::2] for k in range(2)]
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(edit_scenes, args.split, s, args.scenes, args.dir, args.rules) for s in shares
            ]
            rows = [row for future in futures for row in future.result()]
        args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(report(args.out, args.dir, args.split, args.scenes))


if __name__ == "__main__":
    main()
