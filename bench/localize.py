"""Localised edits on the benchmark's shapes-world edits: the automatic mask's intersection over union with
the region each edit should change, per edit kind, and success / expressive / preserved with and without
localisation, at the embedded model's default dials and tune.

    python bench/localize.py --split validation --scenes 16 --out runs/localize-validation.jsonl
    python bench/localize.py --configs off "auto" "auto ratio=1.5 dilation=1" "auto strength=1"

Each config is "off", "auto", "oracle" (the edit's true changed region given as a user mask, grown
by "truth=N" pixels, or its bounding box with "box=1": masks as a user might paint them; the model's
mask_grow applies on top) or "diffedit" (no tune: DiffEdit's mask from the untuned model's target against
source caption, the target caption sampled with the base kept outside it), then any EditSettings
fields as key=value over the model's defaults (ratio, threshold, dilation, draws name the mask_* dials;
"+" in a text value stands for a space: negative_prompt=olis+httr).
Scenes are dealt to `--workers` processes; every tune is the model's default. Public API only
(`Editor.edit`, `Editor.restore_base`, `sample_batches.sample_requests`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

DEFAULT_CONFIGS = ("off", "auto", "auto ratio=1.5", "auto ratio=1.5 dilation=1")
ORACLE = "oracle"  # the edit's true changed region as a user mask: what blending can do with a perfect mask
DIFFEDIT = "diffedit"  # no tune: DiffEdit's mask from the untuned model's target vs source captions


def parse_config(text: str) -> dict:
    """ "auto mask_ratio=1.5 strength=1" -> {"localize": "auto", "mask_ratio": 1.5, "strength": 1.0}: the
    mode, then any EditSettings fields over the model's defaults; short mask keys ("ratio=1.5",
    "dilation=1") name the mask_* fields."""
    from dataclasses import fields

    from unitune import EditSettings

    kinds = {f.name: f.type for f in fields(EditSettings)}
    mode, *pairs = text.split()
    values: dict = {"localize": {ORACLE: "off", DIFFEDIT: "auto"}.get(mode, mode)}
    for pair in pairs:
        if pair.startswith(("truth=", "box=")):  # the oracle's own: the true region's growth, its box
            continue
        key, value = pair.split("=")
        key = key if key in kinds else f"mask_{key}"
        if key not in kinds:
            raise SystemExit(f"unknown setting in config {text!r}: {key}")
        if kinds[key] in ("bool", bool):
            values[key] = value.lower() in ("1", "true", "on", "yes")
        elif kinds[key] in ("str", str):
            values[key] = value.replace("+", " ")  # a config is split at spaces: "+" stands for one
        else:
            values[key] = int(value) if kinds[key] in ("int", int) else float(value)
    return values


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else math.nan


def run_scenes(
    split: str, scenes: list[int], count: int, configs: list[str], seed: int, images: Path | None = None
) -> list[dict]:
    import torch

    from unitune import Editor
    from unitune.benchmark import metrics
    from unitune.benchmark.edits import edit_set
    from unitune.benchmark.methods import to_array
    from unitune.shapes.world import render, render_pil

    torch.set_num_threads(1)
    editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{split}")
    defaults = editor.default_edit_settings()
    edits = edit_set(split, count)
    rows = []
    for scene in scenes:
        scene_edits = [e for e in edits if e.scene == scene]
        base = scene_edits[0].base
        base_pixels = render(base)
        for config in configs:
            settings = replace(defaults, seed=seed + scene, **parse_config(config))
            if config.split()[0] == ORACLE:  # one edit at a time, each with its own true region
                grow = next((int(p[6:]) for p in config.split() if p.startswith("truth=")), 0)
                box = "box=1" in config.split()
                results = [
                    editor.edit(render_pil(base), [e.prompt], settings, mask=_truth_image(e, grow, box))[0]
                    for e in scene_edits
                ]
            elif config.split()[0] == DIFFEDIT:
                results = diffedit(editor, render_pil(base), scene_edits, settings)
            else:
                results = editor.edit(render_pil(base), [e.prompt for e in scene_edits], settings)
            for edit, result in zip(scene_edits, results, strict=True):
                target = render(edit.target)
                scores = metrics.score(to_array(result.image), edit, base_pixels, target)
                row = {"split": split, "scene": scene, "kind": edit.kind, "edit": edit.name, "config": config}
                row.update(scores)
                if result.mask is not None:
                    mask = np.asarray(result.mask.resize(target.shape[1::-1])) > 127
                    truth = metrics.change_mask(base_pixels, target)
                    row.update(mask_iou=iou(mask, truth), mask_coverage=float(mask.mean()))
                rows.append(row)
                if images:
                    _save_panel(images, config, edit, base_pixels, target, result)
        print(f"{split} scene {scene} done", flush=True)
    return rows


def _save_panel(folder: Path, config: str, edit, base_pixels, target, result) -> None:
    """base | target | edit | mask side by side, saved as EDIT-CONFIG.png in `folder`."""
    from PIL import Image

    size = base_pixels.shape[1::-1]
    mask = result.mask.resize(size).convert("RGB") if result.mask is not None else Image.new("RGB", size)
    tiles = [Image.fromarray(base_pixels), Image.fromarray(target), result.image.resize(size), mask]
    panel = Image.new("RGB", (size[0] * len(tiles), size[1]))
    for k, tile in enumerate(tiles):
        panel.paste(tile.convert("RGB"), (k * size[0], 0))
    slug = config.replace(" ", "_").replace("=", "")
    folder.mkdir(parents=True, exist_ok=True)
    panel.save(folder / f"{edit.name}-{slug}.png")


def diffedit(editor, base, edits, settings) -> list:
    """DiffEdit's recipe on the untuned model (unitune.benchmark.methods.diffedit_samples: the benchmark's
    `diffedit` family at one setting)."""
    from unitune.benchmark.methods import diffedit_samples

    return diffedit_samples(editor, editor.prepare_image(base), edits, settings)


def _truth_image(edit, dilation: int, box: bool = False):
    """The edit's true changed region (grown by `dilation` px; with `box`, its bounding box) as a mask
    image."""
    from PIL import Image

    from unitune.benchmark.metrics import true_region

    return Image.fromarray(true_region(edit, dilation, box).astype(np.uint8) * 255)


def summarize(rows: list[dict]) -> str:
    groups = defaultdict(list)
    for row in rows:
        groups[row["config"]].append(row)
    lines = [
        "| config | edits | success | expressive | preserved | mask IoU by kind (coverage) |",
        "|---" * 6 + "|",
    ]
    for config, members in groups.items():
        rates = [np.mean([r[k] for r in members]) for k in ("success", "expressive", "preserved")]
        kinds = defaultdict(list)
        for r in members:
            if "mask_iou" in r:
                kinds[r["kind"]].append(r)
        by_kind = ", ".join(
            f"{kind} {np.nanmean([r['mask_iou'] for r in rs]):.2f} "
            f"({np.mean([r['mask_coverage'] for r in rs]):.2f})"
            for kind, rs in sorted(kinds.items())
        )
        shares = " | ".join(f"{rate:.0%}" for rate in rates)
        lines.append(f"| {config} | {len(members)} | {shares} | {by_kind or '-'} |")
    return "\n".join(lines)


def paired(rows: list[dict], config: str, against: str = "off") -> str:
    """Success of `config` against `against` on the same edits: wins, losses and a two-sided sign test."""
    from scipy.stats import binomtest

    def outcome(name):
        return {(r["split"], r["edit"]): r["success"] for r in rows if r["config"] == name}

    ours, theirs = outcome(config), outcome(against)
    wins = sum(1 for key in ours if ours[key] > theirs.get(key, 0))
    losses = sum(1 for key in ours if ours[key] < theirs.get(key, 0))
    p = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
    return f"{config} vs {against}: {wins} wins, {losses} losses (sign test p = {p:.3f})"


def intervals(rows: list[dict]) -> str:
    from unitune.benchmark.selection import wilson_interval

    lines = []
    for config in dict.fromkeys(r["config"] for r in rows):
        hits = [r["success"] for r in rows if r["config"] == config]
        low, high = wilson_interval(sum(hits), len(hits))
        lines.append(f"{config}: success {sum(hits):.0f}/{len(hits)} [{low:.0%}-{high:.0%}]")
    return "\n".join(lines)


def time_edits(configs: list[str], repeats: int, prompts: int) -> str:
    """Seconds per edit call (`prompts` prompts of one scene, the tune cached) for each config, the median
    of `repeats` calls after one warm-up: the cost of localising. An "oracle" config gives every prompt
    the first edit's true region as the user's mask."""
    import statistics
    import time

    from unitune import Editor
    from unitune.benchmark.edits import edit_set
    from unitune.shapes.world import render_pil

    editor = Editor.load(device="cpu", cache_dir="runs/localize-cache-validation")
    defaults = editor.default_edit_settings()
    scene = edit_set("validation", 1)
    base, words = render_pil(scene[0].base), [e.prompt for e in scene][:prompts]
    lines, reference = [], None
    for config in configs:
        settings = replace(defaults, **parse_config(config))
        mask = _truth_image(scene[0], 0) if config.split()[0] == ORACLE else None
        editor.edit(base, words, settings, mask=mask)  # the tune (cached after the first config), warm-up
        seconds = []
        for _ in range(repeats):
            editor.inversions.clear()  # each call a first edit of the image: it inverts it
            started = time.perf_counter()
            editor.edit(base, words, settings, mask=mask)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        reference = reference or median
        lines.append(f"{config}: {median:.3f} s per call of {len(words)} edits ({median / reference:.2f}x)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/localize.jsonl"))
    parser.add_argument("--images", type=Path, help="save base | target | edit | mask panels here")
    parser.add_argument("--report", type=Path, help="print the report of a saved run's JSONL, no run")
    parser.add_argument("--timing", type=int, metavar="REPEATS", help="time the configs' edits instead")
    args = parser.parse_args()
    if args.timing:
        print(time_edits(args.configs, args.timing, prompts=5))
        return
    if args.report:
        print(report([json.loads(line) for line in args.report.read_text().splitlines()]))
        return
    for config in args.configs:
        parse_config(config)  # a typo fails now, not after the first tune
    shares = [list(range(args.scenes))[k :: args.workers] for k in range(args.workers)]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_scenes, args.split, share, args.scenes, args.configs, args.seed, args.images)
            for share in shares
        ]
        rows = [row for future in futures for row in future.result()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(report(rows))


def report(rows: list[dict]) -> str:
    configs = [c for c in dict.fromkeys(r["config"] for r in rows) if c != "off"]
    return "\n".join([summarize(rows), "", intervals(rows), *[paired(rows, c) for c in configs]])


if __name__ == "__main__":
    main()
