"""Edits after each of several tunes, on the edit benchmark's validation scenes: success, expressive and
preserved per tune and (guidance, strength), paired on the same edits and seeds. For a tune the binding
measurement (bench/binding.py) likes, this says what it costs the edits before the whole benchmark runs.
Embedded model, 20 DDIM steps, no interpolation, the edit seed = the scene's number. A benchmark, not a
test; results in docs/core.md.

Usage: HF_HUB_OFFLINE=1 python bench/tune_edits.py --tunes "lora:128:3e-3:8:4:all,lora:96:4e-3:8:4:all" \\
           --scenes 0:20 --threads 1 --out part1.json
       python bench/tune_edits.py --summarise part1.json part2.json

A tune is written as bench/binding.py reads it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from binding import parse_tune
from variant_tunes import summarise_edits

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import score
from unitune.shapes.world import render_pil

CELLS = ((3, 1.0), (6, 1.0), (3, 0.8), (6, 0.8))


def measure(tunes: list[str], split: str, first: int, last: int) -> list[dict]:
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(None, device="cpu", cache_dir=cache)
        for number, scene in list(enumerate(base_scenes(split, last)))[first:]:
            edits, base = edits_for_scene(split, number, scene), render_pil(scene)
            for text in tunes:
                tune = parse_tune(text)
                for guidance, strength in CELLS:
                    settings = EditSettings(guidance=guidance, strength=strength, steps=20, seed=number)
                    results = editor.edit(base, [edit.prompt for edit in edits], settings, tune)
                    for edit, result in zip(edits, results, strict=True):
                        metrics = score(np.array(result.image.convert("RGB")), edit)
                        keep = {key: metrics[key] for key in ("success", "expressive", "preserved")}
                        cell = {"tune": text, "guidance": guidance, "strength": strength}
                        rows.append({**cell, "edit": edit.name, "kind": edit.kind, **keep})
            print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tunes", default="lora:128:3e-3:8:4:all,lora:96:4e-3:8:4:all")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--scenes", default="0:8", help="first:last scene numbers (last excluded)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the rows here as JSON")
    parser.add_argument("--summarise", nargs="+", metavar="JSON", help="print the table of these files")
    args = parser.parse_args()
    if args.summarise:
        summarise_edits([row for path in args.summarise for row in json.load(open(path))], "tune")
        return
    torch.set_num_threads(args.threads)
    first, last = (int(value) for value in args.scenes.split(":"))
    rows = measure(args.tunes.split(","), args.split, first, last)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(rows, file)
    summarise_edits(rows, "tune")


if __name__ == "__main__":
    main()
