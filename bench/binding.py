"""Does the tune bind? Tune settings x benchmark validation scenes: sample R alone from pure noise and
from strength 0.8, read it back with the analyzer and measure PSNR to the base. A benchmark, not a test.

Usage: HF_HUB_OFFLINE=1 python bench/binding.py [--scenes 10] [--split validation] \
           [--tunes "full:128:1e-4,lora:128:3e-3"]   (method:steps:lr[:rank[:batch[:lora targets]]])
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from unitune import Editor, EditSettings, TuneSettings
from unitune.benchmark.binding import measure_binding, summarise_binding
from unitune.benchmark.edits import base_scenes
from unitune.shapes.world import render_pil


def parse_tune(text: str) -> TuneSettings:
    """`method:steps:lr[:rank[:batch[:lora targets]]]`, e.g. `lora:128:3e-3:8:4:all`."""
    method, steps, lr, *rest = text.split(":")
    optional = dict(zip(("lora_rank", "batch_size", "lora_targets"), rest, strict=False))
    for key in ("lora_rank", "batch_size"):
        if key in optional:
            optional[key] = int(optional[key])
    return TuneSettings(method=method, steps=int(steps), learning_rate=float(lr), **optional)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--tunes", default="full:128:1e-4,full:128:1e-3,lora:128:3e-3")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    edit = EditSettings(guidance=args.guidance, steps=args.steps)
    scenes = base_scenes(args.split, args.scenes)
    print(
        "| tune | s/tune | R from noise: same scene | PSNR median | same and >= 28 dB "
        "| R at 0.8: same | PSNR median | same and >= 28 dB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for text in args.tunes.split(","):
        with tempfile.TemporaryDirectory() as cache:
            editor = Editor.load(args.model, device="cpu", cache_dir=cache)
            started = time.perf_counter()
            for scene in scenes[:1]:  # time one tune alone
                editor.tune(render_pil(scene), parse_tune(text))
            seconds = time.perf_counter() - started
            tune = parse_tune(text)
            rows = [row for scene in scenes for row in measure_binding(editor, render_pil(scene), tune, edit)]
            summary = summarise_binding(rows)
        one, low = summary[1.0], summary[0.8]
        print(
            f"| `{text}` | {seconds:.1f} | {one['same_scene']:.0%} | {one['psnr_median']:.1f} | "
            f"{one['bound']:.0%} | {low['same_scene']:.0%} | {low['psnr_median']:.1f} | {low['bound']:.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
