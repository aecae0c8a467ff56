"""Data for choosing the automatic dial's candidates and rule on more edits than the benchmark's validation
split holds: after the model's default tune, every (guidance, strength, untuned tail) candidate of each
validation edit, sampled with `Editor.sweep(auto=True)` (interpolation 1, 20 DDIM steps, the edit seed =
the scene's number, plus 100,000 times each `--seeds` offset: the seed as a candidate dimension; and
each `--model-guidances` weight), scored
against the ground truth and with the tuned model's own signals
(`unitune.auto`). `--rules` then replays candidate sets and rules on the saved rows: success per set and
rule, the candidate set's own oracle, and the cost of the set in edits at strength 0.8. A benchmark, not
a test.

Usage: HF_HUB_OFFLINE=1 python bench/auto_candidates.py --scenes 0:20 --threads 1 --out a.json \\
           [--guidances 3,6] [--strengths 0.4,0.6,0.8,1] [--tails 0,0.2,0.4] [--seeds 0,1,2] \\
           [--model-guidances 0,1] [--tune full:128:1e-4]
       python bench/auto_candidates.py --rules a.json b.json
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import json
import tempfile
import time

import numpy as np
import torch
from binding import parse_tune
from variant_tunes import edit_row

import unitune.api
from unitune import Editor, EditSettings
from unitune.auto import score_candidates
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.selection import wilson_interval
from unitune.shapes.world import render_pil
from unitune.sweep import parse_floats

SEED_STRIDE = 100_000


def measure(args, first: int, last: int) -> list[dict]:
    rows, started = [], time.time()
    guidances, strengths = parse_floats(args.guidances, "guidance"), parse_floats(args.strengths, "strength")
    tails = parse_floats(args.tails, "tail")
    offsets = [int(value) for value in args.seeds.split(",")]
    weights = parse_floats(args.model_guidances, "model guidance")
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(None, device="cpu", cache_dir=cache)
        tune = editor.resolve_tune(parse_tune(args.tune) if args.tune else None)
        for number, scene in list(enumerate(base_scenes(args.split, last)))[first:]:
            base = render_pil(scene)
            for edit in edits_for_scene(args.split, number, scene):
                for tail, offset, weight in itertools.product(tails, offsets, weights):
                    settings = EditSettings(
                        guidance=3,
                        strength=1,
                        interpolation=1,
                        steps=20,
                        seed=number + SEED_STRIDE * offset,
                        untuned_tail=tail,
                        model_guidance=weight,
                        auto=True,
                    )
                    sweep = editor.sweep(base, edit.prompt, guidances, strengths, settings, tune)
                    for result in sweep.results:
                        keys = ("guidance", "strength", "untuned_tail", "model_guidance")
                        cell = {k: result.settings[k] for k in keys}
                        signals = {k: v for k, v in result.settings["auto_dial"].items() if k != "picked"}
                        row = edit_row(result.image, edit, scene=number, seed_offset=offset, **cell)
                        rows.append({**row, **signals})
            print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    return rows


def cell_of(row: dict) -> tuple[float, float, float, int, float]:
    offset, weight = row.get("seed_offset", 0), row.get("model_guidance", 0.0)
    return row["guidance"], row["strength"], row["untuned_tail"], offset, weight


RULES = {
    "most evidence (shipped)": lambda rows: max(rows, key=lambda r: r["evidence"]),
    "largest gain": lambda rows: max(rows, key=lambda r: r["gain"]),
    "lowest fit_edit": lambda rows: min(rows, key=lambda r: r["fit_edit"]),
    "largest gain / fit_edit": lambda rows: max(rows, key=lambda r: r["gain"] / r["fit_edit"]),
    "largest gain / fit_base": lambda rows: max(rows, key=lambda r: r["gain"] / r["fit_base"]),
}


def recorded(rule, rows: list[dict]) -> bool:
    """Whether the rows carry the signals `rule` reads (older runs lack the later ones)."""
    try:
        rule(rows[:2])
    except KeyError:
        return False
    return True


def replay(rows: list[dict], max_cost: float, size: int) -> None:
    """Every candidate set of up to `size` cells within `max_cost` (edits at strength 0.8, sampling
    only) and every rule: successes of the pick, the set's oracle, per set sorted by the best rule."""
    edits = collections.defaultdict(dict)
    for row in rows:
        edits[(row["scene"], row["edit"])][cell_of(row)] = row
    cells = sorted({cell_of(row) for row in rows})
    fixed = {cell: sum(group[cell]["success"] for group in edits.values()) for cell in cells}
    count = len(edits)
    print(f"{count} edits; fixed cells: " + ", ".join(f"{c}: {fixed[c]}" for c in cells))
    rules = {name: rule for name, rule in RULES.items() if recorded(rule, rows)}
    lines = []
    for k in range(2, size + 1):
        for chosen in itertools.combinations(cells, k):
            cost = sum(cell[1] * (2 if cell[4] else 1) for cell in chosen) / 0.8  # model guidance: 2x
            if cost > max_cost:
                continue
            oracle = sum(any(group[c]["success"] for c in chosen) for group in edits.values())
            picks = {
                name: sum(rule([group[c] for c in chosen])["success"] for group in edits.values())
                for name, rule in rules.items()
            }
            best = max(picks.values())
            lines.append((best, oracle, chosen, cost, picks))
    lines.sort(key=lambda line: (-line[0], -line[1]))
    for best, oracle, chosen, cost, picks in lines[:25]:
        low, high = wilson_interval(best, count)
        rules = "; ".join(f"{name} {hits}" for name, hits in picks.items())
        interval = f"[{100 * low:.0f}-{100 * high:.0f}%]"
        print(f"{chosen} cost {cost:.2f}: oracle {oracle}, best {best} {interval} ({rules})")


def measuring_parser(guidances: str, strengths: str, tails: str) -> argparse.ArgumentParser:
    """The options of a measuring run (and `--rules`), with these candidate defaults."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="validation")
    parser.add_argument("--scenes", default="0:8", help="first:last scene numbers (last excluded)")
    parser.add_argument("--guidances", default=guidances)
    parser.add_argument("--strengths", default=strengths)
    parser.add_argument("--tails", default=tails)
    parser.add_argument("--seeds", default="0", help="seed offsets (each adds 100,000 times it to the seed)")
    parser.add_argument("--model-guidances", default="0", help="EditSettings.model_guidance values")
    parser.add_argument("--tune", default=None, help="as bench/binding.py reads it [default: the model's]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the rows here as JSON")
    parser.add_argument("--rules", nargs="+", metavar="JSON", help="replay candidate sets and rules on these")
    return parser


def measure_and_save(args, measure_rows=None) -> None:
    """Measure the scenes `args.scenes` names with `measure_rows` (default `measure`), write the rows to
    `args.out` and print the share of successes."""
    torch.set_num_threads(args.threads)
    first, last = (int(value) for value in args.scenes.split(":"))
    rows = (measure_rows or measure)(args, first, last)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(rows, file)
    print(np.mean([row["success"] for row in rows]))


def main() -> None:
    parser = measuring_parser(guidances="3,6", strengths="0.4,0.6,0.8,1", tails="0,0.2,0.4")
    parser.add_argument("--max-cost", type=float, default=3.8, help="candidate set cost, edits at s0.8")
    parser.add_argument("--size", type=int, default=4, help="largest candidate set")
    args = parser.parse_args()
    if args.rules:
        replay([row for path in args.rules for row in json.load(open(path))], args.max_cost, args.size)
        return
    unitune.api.score_candidates = functools.partial(score_candidates, tuned=True)  # the rules read gain
    measure_and_save(args)


if __name__ == "__main__":
    main()
