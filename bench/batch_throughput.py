"""Edits per minute of `unitune batch`, in-process against `--ray auto`, on the embedded model.

Usage: HF_HUB_OFFLINE=1 python bench/batch_throughput.py [--rounds 2] [--work runs/batch-throughput]
           [--modes in-process,ray]
           [-- extra unitune batch flags, e.g. --method lora]

The jobs: the four bundled example images x three prompts (12 edits, 4 tunes) at the model's recommended
settings. Each run is `unitune batch` in its own process with a fresh tune cache and output folder, so
every run pays start-up (and, with --ray auto, starting a local Ray), 4 tunes and 12 edits; the modes
alternate (in-process, ray, in-process, ray, ...) so a change in the machine's load hits both. Prints a
markdown table. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "src/unitune/assets/examples"
IMAGES = ["shapes.png", "two-shapes.png", "white-square.png", "yellow-triangle.png"]
PROMPTS = ["on a green background", "on a red background", "on a yellow background"]
MODES = {"in-process": [], "ray": ["--ray", "auto"]}


def run_once(mode: str, jobs: Path, work: Path, index: int, extra: list[str]) -> dict:
    out, cache = work / f"{index:02d}-{mode}", work / f"{index:02d}-{mode}-cache"
    for folder in (out, cache):
        shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "unitune.cli", "batch", str(jobs), "--out", str(out)]
    command += ["--cache-dir", str(cache), *MODES[mode], *extra]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    return {
        "mode": mode,
        "wall": wall,
        "edits": len(ok),
        "load": load,
        "summary": result.stdout.strip().splitlines()[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs/batch-throughput")
    parser.add_argument("--modes", default=",".join(MODES), help="in-process, ray or both")
    parser.add_argument("extra", nargs="*", help="more unitune batch flags (after --)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    jobs = args.work / "jobs.jsonl"
    lines = [json.dumps({"image": str(EXAMPLES / image), "prompts": PROMPTS}) for image in IMAGES]
    jobs.write_text("\n".join(lines) + "\n")
    modes = [mode for mode in args.modes.split(",") if mode]
    if unknown := [mode for mode in modes if mode not in MODES]:
        raise SystemExit(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    runs = []
    for round_index in range(args.rounds):
        for mode in modes:
            run = run_once(mode, jobs, args.work, len(runs), args.extra)
            runs.append(run)
            print(f"round {round_index + 1} {mode}: {run['wall']:.1f} s, {run['summary']}", file=sys.stderr)
    print(
        f"{len(IMAGES)} images x {len(PROMPTS)} prompts, {os.cpu_count()} CPUs, flags: {args.extra or 'none'}"
    )
    print()
    print("| run | mode | load at start | wall s | edits | edits/min |")
    print("|---|---|---|---|---|---|")
    for index, run in enumerate(runs, 1):
        row = [
            index,
            run["mode"],
            f"{run['load']:.1f}",
            f"{run['wall']:.1f}",
            run["edits"],
            rate(run["edits"], run["wall"]),
        ]
        print("| " + " | ".join(map(str, row)) + " |")
    for mode in modes:
        wall = sum(r["wall"] for r in runs if r["mode"] == mode)
        edits = sum(r["edits"] for r in runs if r["mode"] == mode)
        print(f"| all | {mode} | | {wall:.1f} | {edits} | {rate(edits, wall)} |")


def rate(edits: int, seconds: float) -> str:
    return f"{edits / seconds * 60:.2f}"


if __name__ == "__main__":
    main()
