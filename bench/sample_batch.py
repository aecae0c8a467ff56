"""What sampling images together buys: seconds per call of the embedded model's edit, several prompts,
`--auto` and a sweep, one image at a time (`sample_batch` 1) and batched, and how far the batched pixels
are from the one-at-a-time ones. A benchmark, not a test (tests/test_sample_batches.py checks behaviour).

Usage: HF_HUB_OFFLINE=1 python bench/sample_batch.py [--method lora] [--batches 1,8] [--repeats 3]
           [--model FOLDER] [--tune-steps N] [--cache-dir DIR]

Each cell is the median of `--repeats` calls after a warm-up, on the example image after the model's
default tune (cached before timing). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from unitune import Editor

EXAMPLE = Path(__file__).resolve().parents[1] / "src/unitune/assets/examples/shapes.png"
PROMPTS = ["a blue circle", "a red square", "on a green background", "a small red circle"]


def timed(call, repeats: int) -> tuple[float, list]:
    call()  # warm-up
    seconds, results = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        results = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="lora", choices=["full", "lora"])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="a diffusers folder [default: the embedded model]")
    parser.add_argument("--tune-steps", type=int, default=None, help="[default: the model's]")
    parser.add_argument("--cache-dir", default=None, help="[default: the user's tune cache]")
    args = parser.parse_args()
    editor = Editor.load(args.model, cache_dir=args.cache_dir)
    tune = replace(editor.default_tune_settings(), method=args.method, steps=args.tune_steps)
    editor.tune(EXAMPLE, tune)
    default = editor.default_edit_settings()
    cases = {
        "one edit": lambda s: editor.edit(EXAMPLE, PROMPTS[:1], s, tune),
        f"{len(PROMPTS)} prompts": lambda s: editor.edit(EXAMPLE, PROMPTS, s, tune),
        "--auto, one prompt": lambda s: editor.edit(EXAMPLE, PROMPTS[:1], replace(s, auto=True), tune),
        "sweep 2 guidances x 3 strengths": lambda s: (
            editor.sweep(EXAMPLE, PROMPTS[0], [3.0, 6.0], [0.6, 0.8, 1.0], s, tune).results
        ),
    }
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"| call ({args.method} tune, {default.steps} steps) | " + " | ".join(f"batch {b}" for b in batches)
    )
    print("|---" * (len(batches) + 1) + "|")
    for name, call in cases.items():
        cells, first = [], None
        for batch in batches:
            seconds, results = timed(
                lambda c=call, b=batch: c(replace(default, sample_batch=b)), args.repeats
            )
            images = [np.asarray(r.image, dtype=np.int16) for r in results]
            if first is None:
                first, cell = images, f"{seconds:.2f} s"
            else:
                worst = max(int(np.abs(a - b).max()) for a, b in zip(first, images, strict=True))
                cell = f"{seconds:.2f} s ({cells_ratio(cells, seconds)}; max pixel change {worst})"
            cells.append((seconds, cell))
        print(f"| {name} | " + " | ".join(cell for _, cell in cells) + " |")


def cells_ratio(cells: list, seconds: float) -> str:
    return f"{cells[0][0] / seconds:.2f}x faster"


if __name__ == "__main__":
    main()
