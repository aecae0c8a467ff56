"""Does a model read a caption the same with UniTune's rare prompt R in front? Held-out captions scored by
the analyzer with and without "R " before them (`prefixed_*` keys), for each model folder given.

Usage: HF_HUB_OFFLINE=1 python bench/caption_prefix.py MODEL [MODEL ...] [--count 200] [--guidance 5]
           [--out results.json]

docs/model.md ("Reading a caption after R") compares model v2 and v3 this way. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from unitune.shapes.quality import evaluate_generation
from unitune.training.report import load_pipeline, machine_name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="diffusers folders")
    parser.add_argument(
        "--count", type=int, default=200, help="held-out captions (and half as many fragments)"
    )
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--out", default=None, help="write the scores here as JSON")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {"machine": machine_name(device)}
    for folder in args.models:
        started = time.monotonic()
        scores = evaluate_generation(
            load_pipeline(folder, device), args.count, args.count // 2, 20, args.guidance
        )
        results[folder] = scores
        print(
            folder,
            f"{time.monotonic() - started:.0f} s",
            json.dumps({k: round(v, 3) for k, v in scores.items()}),
        )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
