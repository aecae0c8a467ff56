"""Shared by the tune experiments (prior_preservation, timestep_weights, rare_token_tuning,
trained_parts): a variant of the full tune, trained in place on each validation scene of the edit
benchmark, then R alone and every edit of the scene sampled and scored. Not a script.

A variant is made by `make_tune(editor)`, which returns `tune(base, rare, mode)`: it trains the UNet
in place for `mode` (an experiment's own string), usually with `train_in_place`, and may return a
callable that undoes whatever else it changed (the text encoder, say), called after the scene's samples.
The UNet's base weights come back by themselves (`UNetWeights.training`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from unitune import Editor, EditSettings, TuneSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import score
from unitune.benchmark.selection import wilson_interval
from unitune.progress import RunControl
from unitune.shapes.world import render_pil
from unitune.tuning import loss_of

CELLS = ((3, 1.0), (6, 1.0))  # (guidance, strength): 20 DDIM steps, seed 0, no interpolation

Tune = Callable[[object, str, str], Callable[[], None] | None]


def compare(make_tune: Callable[[Editor], Tune], scenes: int, modes: list[str], cells=CELLS) -> None:
    """Run every mode on the first `scenes` validation scenes and print the summary (threads: $THREADS,
    default 2; two runs with THREADS=1 side by side use the two cores best)."""
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    editor = Editor.load(None, device="cpu", cache_dir=None)
    tune, rare = make_tune(editor), editor.default_tune_settings().rare_prompt
    rows, seconds, started = [], collections.defaultdict(list), time.time()
    for number, scene in enumerate(base_scenes("validation", scenes)):
        edits, base = edits_for_scene("validation", number, scene), editor.prepare_image(render_pil(scene))
        for mode in modes:
            with editor.weights.training(TuneSettings(method="full")):
                tune_started = time.perf_counter()
                undo = tune(base, rare, mode)
                seconds[mode].append(time.perf_counter() - tune_started)
                rows += scored_samples(editor, base, rare, edits, mode, cells)
            if undo is not None:
                undo()
        print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    for mode, values in seconds.items():
        print(mode, "s/tune", f"{statistics.mean(values):.1f}")
    print_summary(rows)


def train_in_place(editor, groups: list[dict], batch, loss=loss_of, steps: int = 128) -> None:
    """unitune's tune loop with the parts an experiment varies passed in: AdamW (fused, no weight decay)
    on the parameter `groups` (each with its "lr"), `steps` steps of `loss` on `batch(step, generator)`
    -> (noisy, timesteps, target, conditioning), the draws from a CPU generator seeded 0."""
    unet = editor.pipe.unet
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0, fused=True)
    generator = torch.Generator().manual_seed(0)
    unet.train()
    for step in range(steps):
        noisy, timesteps, target, text = batch(step, generator)
        value = loss(unet, noisy, timesteps, target, text, editor.runtime)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    unet.eval()
    unet.requires_grad_(False)


def scored_samples(editor, base, rare: str, edits, mode: str, cells) -> list[tuple]:
    """R alone scored as a no-op edit (preserved, PSNR to the base), then every edit (S, E, P)."""
    rows = []
    for guidance, strength in cells:
        settings = EditSettings(guidance=guidance, strength=strength, steps=20, seed=0)
        image, _ = editor._sample(rare, settings, 0, base, "R", run=RunControl())
        bound = score(np.array(image), replace(edits[0], target=edits[0].base))
        rows.append((mode, guidance, strength, "R-bound", bound["preserved"], bound["psnr_target"]))
        for edit in edits:
            image, _ = editor._sample(f"{rare} {edit.prompt}", settings, 0, base, "e", run=RunControl())
            s = score(np.array(image), edit)
            rows.append((mode, guidance, strength, "edit", s["success"], s["expressive"], s["preserved"]))
    return rows


def print_summary(rows: list[tuple]) -> None:
    """Per (mode, guidance, strength, kind): the count, then rates in percent and the median PSNR."""
    groups = collections.defaultdict(list)
    for row in rows:
        groups[row[:4]].append(row[4:])
    for key, values in sorted(groups.items()):
        columns = list(zip(*values, strict=True))
        rates = 1 if key[3] == "R-bound" else 3
        print(*key, len(values), *[f"{summary(c, i < rates):.1f}" for i, c in enumerate(columns)])


def summary(column, is_rate: bool) -> float:
    """A rate's mean in percent, or a PSNR's median."""
    return 100 * statistics.mean(column) if is_rate else statistics.median(column)


def edit_row(image, edit, **cell) -> dict:
    """One row of a paired edit table: `cell` (the variant's name, guidance, strength), the edit, and the
    analyzer's success, expressive and preserved for `image` (PIL) against the edit's target."""
    metrics = score(np.array(image.convert("RGB")), edit)
    scores = {key: metrics[key] for key in ("success", "expressive", "preserved")}
    return {**cell, "edit": edit.name, "kind": edit.kind, **scores}


def summarise_edits(rows: list[dict], key: str) -> None:
    """A table of edit rows (dicts with `key`, guidance, strength, success, expressive, preserved): per
    (row[key], guidance, strength) the edits, success with its Wilson 95% interval, expressive, preserved."""
    groups = collections.defaultdict(list)
    for row in rows:
        groups[(row[key], row["guidance"], row["strength"])].append(row)
    print(f"| {key} | guidance | strength | edits | success [95%] | expressive | preserved |")
    print("|---|---|---|---|---|---|---|")
    for (name, guidance, strength), group in sorted(groups.items()):
        hits = sum(row["success"] for row in group)
        low, high = wilson_interval(hits, len(group))
        rates = [100 * np.mean([row[column] for row in group]) for column in ("expressive", "preserved")]
        print(
            f"| {name} | {guidance:g} | {strength:g} | {len(group)} | {100 * hits / len(group):.0f}% "
            f"[{100 * low:.0f}-{100 * high:.0f}] | {rates[0]:.0f}% | {rates[1]:.0f}% |"
        )


def paired_edits_main(parser: argparse.ArgumentParser, measure, key: str) -> None:
    """The command line of a paired edit table: `parser` (with the script's own options) gets --split,
    --scenes, --threads, --out and --summarise; `measure(args, split, first, last)` returns the rows."""
    parser.add_argument("--split", default="validation")
    parser.add_argument("--scenes", default="0:8", help="first:last scene numbers (last excluded)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the rows here as JSON")
    parser.add_argument("--summarise", nargs="+", metavar="JSON", help="print the table of these files")
    args = parser.parse_args()
    if args.summarise:
        summarise_edits([row for path in args.summarise for row in json.load(open(path))], key)
        return
    torch.set_num_threads(args.threads)
    first, last = (int(value) for value in args.scenes.split(":"))
    rows = measure(args, args.split, first, last)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(rows, file)
    summarise_edits(rows, key)
