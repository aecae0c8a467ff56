"""Two variants of the automatic dial's rule, replayed on rows saved by bench/auto_candidates.py (guidance 3;
candidates: strengths 0.6, 0.8, 1 and strength 1 with model guidance 1): the most evidence less an offset
for the model-guidance candidate (which the dial picks for most edits), and the most evidence less a
multiple of the tuned `fit_base` (how well R alone still explains the sample). Successes per variant.
A benchmark, not a test; results in docs/core.md ("A fourth candidate").

Usage: python bench/auto_offsets.py dialfull-0.json dialfull-16.json
"""

from __future__ import annotations

import collections
import json
import sys

CANDIDATES = ((0.6, 0.0), (0.8, 0.0), (1.0, 0.0), (1.0, 1.0))


def candidate_sets(rows: list[dict]) -> list[list[dict]]:
    by_edit = collections.defaultdict(list)
    for row in rows:
        if row["guidance"] == 3.0 and (row["strength"], row["model_guidance"]) in CANDIDATES:
            by_edit[(row["scene"], row["edit"])].append(row)
    return [group for group in by_edit.values() if len(group) == len(CANDIDATES)]


def successes(edits: list[list[dict]], rule) -> tuple[int, int]:
    picks = [max(group, key=rule) for group in edits]
    return int(sum(p["success"] for p in picks)), sum(p["model_guidance"] > 0 for p in picks)


def main() -> None:
    edits = candidate_sets([row for path in sys.argv[1:] for row in json.load(open(path))])
    oracle = int(sum(max(r["success"] for r in group) for group in edits))
    print(f"{len(edits)} edits; oracle of the four candidates {oracle}")
    print("| rule | successes | model-guidance candidate picked |\n|---|---|---|")
    for offset in (0, 0.002, 0.005, 0.01, 0.02, 0.05):
        hits, mg = successes(edits, lambda r, o=offset: r["evidence"] - (o if r["model_guidance"] else 0))
        print(f"| evidence - {offset:g} for the model-guidance candidate | {hits} | {mg} |")
    for weight in (0.25, 0.5, 1, 2):
        hits, mg = successes(edits, lambda r, w=weight: r["evidence"] - w * r["fit_base"])
        print(f"| evidence - {weight:g} x fit_base | {hits} | {mg} |")


if __name__ == "__main__":
    main()
