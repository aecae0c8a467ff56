"""Tune and edit costs on the tiny test pipeline (or `--model`): wall time, peak RSS, tune step vs a bare
UNet step (unitune.benchmark.costs, each tune method in its own subprocess).

Usage: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/core_costs.py [--tune-steps N] [--edit-steps 20]
       [--model FOLDER]

--tune-steps defaults to the model's step count for each method (128 on the tiny pipeline).

Prints a markdown table. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from unitune.benchmark.costs import ROUND_STEPS, ROUNDS, measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tune-steps", type=int, help="[default: the model's for each method]")
    parser.add_argument("--edit-steps", type=int, default=20)
    parser.add_argument("--model", help="a diffusers folder [default: the tiny test pipeline]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(tiny_pipeline(Path(folder) / "tiny"))
        rows = [
            measure(method, model, str(Path(folder) / f"cache-{method}"), args.tune_steps, args.edit_steps)
            for method in ("full", "lora")
        ]
    name = args.model or "tiny pipeline"
    lengths = ", ".join(f"{r['method']} {r['tune_steps']}" for r in rows)
    print(f"{name}, CPU, tune steps {lengths} (batch 4), edit {args.edit_steps} steps;")
    print("step times:", end=" ")
    print(f"medians over {ROUNDS} interleaved rounds of {ROUND_STEPS} steps, warm-up steps dropped\n")
    print(
        "| method | tune s | tune step ms | bare step ms | ratio | edit s | RSS loaded MiB | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["tune_step_ms"] / r["bare_step_ms"]
        print(
            f"| {r['method']} | {r['tune_s']:.2f} | {r['tune_step_ms']:.1f} | {r['bare_step_ms']:.1f} | "
            f"{ratio:.2f} | {r['edit_s']:.2f} | {r['rss_loaded_mib']:.0f} | {r['rss_peak_mib']:.0f} |"
        )


def tiny_pipeline(folder: Path) -> Path:
    from tiny import save_tiny_pipeline

    return save_tiny_pipeline(folder)


if __name__ == "__main__":
    main()
