"""Which rule should the automatic dial use? Every candidate rule on a saved benchmark run's signals, per
tune method and (guidance, interpolation), as validation / test success. Choose on validation only.

Usage: python bench/auto_rules.py [runs/bench/results.pkl]   (after `unitune bench`)

The first rule (largest gain) was chosen this way; the shipped one (`unitune.auto.pick`, most evidence)
on more validation edits with bench/auto_regions.py (docs/core.md). A benchmark, not a test.
"""

from __future__ import annotations

import pickle
import sys

from unitune.benchmark.report.tables import choose
from unitune.benchmark.selection import auto_records, summarise

RULES = {
    "most evidence (shipped)": lambda s: max(range(len(s)), key=lambda i: s[i].evidence),
    "largest gain": lambda s: max(range(len(s)), key=lambda i: s[i].gain),
    "lowest fit_edit": lambda s: min(range(len(s)), key=lambda i: s[i].fit_edit),
    "lowest fit_base": lambda s: min(range(len(s)), key=lambda i: s[i].fit_base),
    "highest fit_edit": lambda s: max(range(len(s)), key=lambda i: s[i].fit_edit),
    "largest gain / fit_edit": lambda s: max(range(len(s)), key=lambda i: s[i].gain / s[i].fit_edit),
    "first with gain > 0": lambda s: next((i for i in range(len(s)) if s[i].gain > 0), len(s) - 1),
    "always the lowest strength": lambda s: 0,
    "always the middle strength": lambda s: len(s) // 2,
    "always the highest strength": lambda s: len(s) - 1,
}


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "runs/bench/results.pkl"
    with open(path, "rb") as handle:
        results, _ = pickle.load(handle)
    records, signals = results.records, results.signals
    chosen = choose(records)
    splits = {split: [r for r in records if r["split"] == split] for split in ("validation", "test")}
    for family in ("full", "lora"):
        row = chosen[family]
        print(
            f"{family}: fixed `{row['label']}` validation {row['validation']['success']:.0%}, "
            f"test {row['test']['success']:.0%}"
        )
        settings = sorted({(r["guidance"], r["interpolation"]) for r in records if r["family"] == family})
        for guidance, weight in settings:
            cells = []
            for name, rule in RULES.items():
                rates = [
                    summarise(auto_records(part, signals, family, guidance, weight, rule=rule))["success"]
                    for part in splits.values()
                ]
                cells.append(f"{name} {rates[0]:.0%}/{rates[1]:.0%}")
            print(f"  g{guidance:g} i{weight:g}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
