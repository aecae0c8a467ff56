"""Does the tune bind? Tune settings x benchmark validation scenes: sample R alone from pure noise and
from strength 0.8, read it back with the analyzer and measure PSNR to the base. A benchmark, not a test.

Usage: HF_HUB_OFFLINE=1 python bench/tune_binding.py [--scenes 10 | --scenes 20:40] [--split validation] \
           [--guidances 5] [--strengths 1,0.8] [--steps 20,50] [--out rows.json] \
           [--tunes "full:128:1e-4:schedule=constant,lora:128:3e-3"]

`--scenes A:B` measures scenes A to B-1 of the split (so two processes can share the cores); `--out`
writes every scene's row (tune, guidance, steps, scene, strength, same_scene, psnr) as JSON, to pool runs.

A tune is `method:steps:lr[:rank[:batch[:lora targets]]]` plus optional `key=value` items (rank, batch,
targets, schedule, weights), e.g. `lora:128:3e-3:8:4:all`, `full:128:3e-4:schedule=cosine` or
`full:128:1e-4:weights=1;1;1;0.25` (the noise weights; `weights=1` is the plain loss). What a tune does
not name comes from the model's unitune.json (the schedule and noise weights too), except LoRA's rank,
batch and targets: those are TuneSettings' own defaults (attention only), so write
`lora:96:4e-3:8:4:all` for the embedded model's LoRA.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from unitune import Editor, EditSettings, TuneSettings
from unitune.benchmark.binding import measure_binding, summarise_binding
from unitune.benchmark.edits import base_scenes
from unitune.shapes.world import render_pil
from unitune.sweep import parse_floats

KEYWORDS = {
    "rank": "lora_rank",
    "batch": "batch_size",
    "targets": "lora_targets",
    "schedule": "lr_schedule",
    "weights": "noise_weights",  # weights=1;1;1;0.25 (`;`, as the tunes are comma-separated)
    "decoder": "decoder_steps",  # decoder=50: the decoder fit's steps (the embedded model's default)
}


def parse_tune(text: str) -> TuneSettings:
    method, steps, lr, *rest = text.split(":")
    positional = [item for item in rest if "=" not in item]
    optional = dict(zip(("lora_rank", "batch_size", "lora_targets"), positional, strict=False))
    for item in (item for item in rest if "=" in item):
        key, value = item.split("=", 1)
        optional[KEYWORDS[key]] = value
    for key in ("lora_rank", "batch_size", "decoder_steps"):
        if key in optional:
            optional[key] = int(optional[key])
    return TuneSettings(method=method, steps=int(steps), learning_rate=float(lr), **optional)


def scene_range(text: str) -> tuple[int, int]:
    """`N` -> the first N scenes; `A:B` -> scenes A to B-1."""
    first, _, last = text.rpartition(":")
    return int(first or 0), int(last)


def cell(row: dict) -> str:
    return f"{row['same_scene']:.0%} | {row['psnr_median']:.1f} | {row['bound']:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", default="10", help="N (the first N) or A:B")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--tunes", default="full:128:1e-4:schedule=constant,full:128:3e-4:schedule=cosine")
    parser.add_argument("--guidances", default="5")
    parser.add_argument("--strengths", default="1,0.8")
    parser.add_argument("--steps", default="20", help="sampler steps, comma-separated: one row each")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None, help="write every scene's row here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    first, last = scene_range(args.scenes)
    scenes = list(enumerate(base_scenes(args.split, last)))[first:]
    every_row = []
    strengths = tuple(parse_floats(args.strengths, "--strengths"))
    print(
        "| tune | s/tune | guidance | steps | "
        + " | ".join(f"s{s:g}: same | PSNR median | same and >= 28 dB" for s in strengths)
        + " |"
    )
    print("|---|---|---|---|" + "---|---|---|" * len(strengths))
    for text in args.tunes.split(","):
        tune = parse_tune(text)
        with tempfile.TemporaryDirectory() as cache:
            editor = Editor.load(args.model, device="cpu", cache_dir=cache)
            started = time.perf_counter()
            editor.tune(render_pil(scenes[0][1]), tune)  # one tune timed alone
            seconds = time.perf_counter() - started
            for guidance in parse_floats(args.guidances, "--guidances"):
                for steps in (int(value) for value in parse_floats(args.steps, "--steps")):
                    edit = EditSettings(guidance=guidance, steps=steps)
                    rows = []
                    for number, scene in scenes:
                        for row in measure_binding(editor, render_pil(scene), tune, edit, strengths):
                            rows.append(row)
                            every_row.append(
                                {"tune": text, "guidance": guidance, "steps": steps, "scene": number}
                                | {"strength": row["strength"], "same_scene": bool(row["same_scene"])}
                                | {"psnr": float(row["psnr"])}
                            )
                    summary = summarise_binding(rows)
                    cells = " | ".join(cell(summary[strength]) for strength in strengths)
                    print(f"| `{text}` | {seconds:.1f} | {guidance:g} | {steps} | {cells} |", flush=True)
                    if args.out:
                        with open(args.out, "w") as file:
                            json.dump(every_row, file)


if __name__ == "__main__":
    main()
