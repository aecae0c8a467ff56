"""Does a shorter (or longer) tune change the edits? UniTune full tunes of several lengths on the edit
benchmark's validation split, embedded model, same grid and seeds.

Usage: HF_HUB_OFFLINE=1 python bench/tune_length.py [--tunes 32,64,128,256,64x8] [--scenes 8]

Each tune is `steps` or `steps`x`batch` (batch 4 unless given).

Prints a markdown table per tune length: tune seconds (mean, in a worker beside the other one), and
over the grid the mean expressive / preserved rates, the best setting's success, the per-edit oracle,
and the fixed setting `g6 s1 i0.5` (the full benchmark's choice on model v3). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

from unitune.benchmark.methods import Grid
from unitune.benchmark.run import Config, run_benchmark
from unitune.benchmark.selection import best_setting, by_setting, oracle, summarise

GRID = Grid(
    steps=20,
    guidances=(3.0, 6.0),
    strengths=(0.6, 0.8, 1.0),
    interpolations=(0.0, 0.5),
    families=("full",),
)
REFERENCE = "g6 s1 i0.5"  # the full benchmark's choice on model v3


def row(tune: str, records: list[dict], tune_seconds: list[float]) -> str:
    grid, groups = summarise(records), by_setting(records)
    best = best_setting(records)
    top, ceiling, reference = (
        summarise(groups[best]),
        summarise(oracle(records)),
        summarise(groups[REFERENCE]),
    )
    cells = [
        tune,
        f"{statistics.mean(tune_seconds):.1f}",
        f"{grid['expressive']:.0%} / {grid['preserved']:.0%}",
        f"`{best}` {top['success']:.0%}",
        f"{ceiling['success']:.0%} (E {ceiling['expressive']:.0%}, P {ceiling['preserved']:.0%})",
        f"{reference['expressive']:.0%} / {reference['preserved']:.0%} / "
        f"{reference['psnr_base_untouched']:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tunes", default="32,64,128,256,64x8", help="steps[xbatch], comma-separated")
    parser.add_argument("--scenes", type=int, default=8, help="validation scenes")
    args = parser.parse_args()
    base = Config(validation_scenes=args.scenes, test_scenes=0, grid=GRID, workers=2, costs=False)
    lines = [
        "| tune steps x batch | tune s | grid mean E / P | best setting, success | oracle success | "
        f"`{REFERENCE}`: E / P / PSNR base untouched |",
        "|---|---|---|---|---|---|",
    ]
    for tune in args.tunes.split(","):
        steps, _, batch = tune.partition("x")
        config = replace(base, tune_steps=int(steps), tune_batch=int(batch or 4))
        results = run_benchmark(config, log=lambda text: None)
        label = f"{config.tune_steps} x {config.tune_batch}"
        lines.append(row(label, results.records, [c.seconds for c in results.tune_costs]))
        print(lines[-1], flush=True)
    edits = len({r["edit"] for r in results.records})
    print(f"\n{edits} validation edits ({args.scenes} scenes), grid {GRID}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
