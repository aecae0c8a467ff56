"""Edits after each of several tunes, on the edit benchmark's validation scenes: success, expressive and
preserved per tune and (guidance, strength), paired on the same edits and seeds. For a tune the binding
measurement (bench/binding.py) likes, this says what it costs the edits before the whole benchmark runs.
Embedded model, 20 DDIM steps, no interpolation, the edit seed = the scene's number, untuned tail 0
unless `--untuned-tail` says otherwise. A benchmark, not a test; results in docs/binding.md.

Usage: HF_HUB_OFFLINE=1 python bench/tune_edits.py --tunes "lora:128:3e-3:8:4:all,lora:96:4e-3:8:4:all" \\
           --scenes 0:20 --threads 1 --out part1.json [--model other/model/folder --label b] [--device cuda]
       python bench/tune_edits.py --summarise part1.json part2.json

A tune is written as bench/binding.py reads it.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from binding import parse_tune
from variant_tunes import edit_row, paired_edits_main

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.shapes.world import render_pil

CELLS = ((3, 1.0), (6, 1.0), (3, 0.8), (6, 0.8))


def measure(
    tunes: list[str],
    split: str,
    first: int,
    last: int,
    model: str | None = None,
    device: str = "cpu",
    label="",
    untuned_tail: float = 0.0,
) -> list[dict]:
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(model, device=device, cache_dir=cache)
        for number, scene in list(enumerate(base_scenes(split, last)))[first:]:
            edits, base = edits_for_scene(split, number, scene), render_pil(scene)
            for text in tunes:
                tune = parse_tune(text)
                for guidance, strength in CELLS:
                    settings = EditSettings(
                        guidance=guidance, strength=strength, steps=20, seed=number, untuned_tail=untuned_tail
                    )
                    results = editor.edit(base, [edit.prompt for edit in edits], settings, tune)
                    name = f"{label} {text}".strip()
                    for edit, result in zip(edits, results, strict=True):
                        rows.append(
                            edit_row(result.image, edit, tune=name, guidance=guidance, strength=strength)
                        )
            print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tunes", default="lora:128:3e-3:8:4:all,lora:96:4e-3:8:4:all")
    parser.add_argument("--model", default=None, help="diffusers folder [default: the embedded model]")
    parser.add_argument("--label", default="", help="put in front of each tune's name (to pair two models)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: pair only rows of the same device")
    parser.add_argument("--untuned-tail", type=float, default=0.0, help="EditSettings.untuned_tail [0]")
    paired_edits_main(
        parser,
        lambda args, *scenes: measure(
            args.tunes.split(","), *scenes, args.model, args.device, args.label, args.untuned_tail
        ),
        "tune",
    )


if __name__ == "__main__":
    main()
