"""The report's section on the automatic dial (unitune.auto) and issue 13's targets for it."""

from __future__ import annotations

from ..selection import auto_records, oracle, ranking_key, summarise
from .cells import num, pct, rate, verdict

AUTO_MARGIN, AUTO_ORACLE_SHARE, AUTO_COST = 0.15, 0.80, 4.0  # issue 13's targets for the automatic dial

AUTO_TEXT = """\
For each edit the dial samples every candidate strength (same seed), encodes each sample back to a
latent and measures the untuned model's denoising error under the edit's words and under no words at
four fixed timesteps with fixed noises; it keeps the sample with the most evidence (how much better the
edit's words explain it; `unitune.auto.pick`). No ground truth, no other weights: the untuned model is
the same checkpoint before the tune. It runs at the guidance and interpolation of the fixed setting
chosen on validation, so the comparison with that setting isolates the strength choice. The rule was
chosen on validation edits (docs/core.md; the validation row is shown too); the oracles use the ground
truth and are ceilings, not methods.
"""


def dial_signals(results) -> list[dict]:
    """The run's signals per raw sample, if it measured those the dial's rule reads (runs before the
    untuned model's `evidence` did not: their report has no dial section rather than a different rule)."""
    return [s for s in getattr(results, "signals", []) if "read_edit" in s]


def auto_summaries(records: list[dict], signals: list[dict], family: str, label: str) -> dict:
    """Over `records` (one split): the automatic dial at the guidance and interpolation of the fixed
    setting `label`, that setting itself, the oracle over the dial's candidates and over the grid."""
    from ...auto import AUTO_STRENGTHS

    ours = [r for r in records if r["family"] == family]
    setting = next(r for r in ours if r["label"] == label)
    guidance, weight = setting["guidance"], setting["interpolation"]
    same = [
        r
        for r in ours
        if (r["guidance"], r["interpolation"]) == (guidance, weight) and r["strength"] in AUTO_STRENGTHS
    ]
    auto = summarise(auto_records(records, signals, family, guidance, weight))
    grid = summarise(oracle(ours))
    return {
        "guidance": guidance,
        "interpolation": weight,
        "auto": auto,
        "fixed": summarise([r for r in ours if r["label"] == label]),
        "same": summarise(oracle(same)),
        "grid": grid,
        "share": auto["success"] / grid["success"] if grid["success"] else float("nan"),
    }


def auto_rows(results, chosen: dict) -> list[str]:
    """The automatic dial (unitune.auto) per tune method: at the guidance and interpolation of the fixed
    setting chosen on validation, it picks each edit's strength among AUTO_STRENGTHS from the model's own
    signals. Compared with that fixed setting, and with oracles over the same candidates and the grid."""
    from ...auto import AUTO_STRENGTHS

    signals = dial_signals(results)
    if not signals:
        return ["(not measured in this run)"]
    lines = [
        "| tune | candidates | split | **auto success** | fixed setting | oracle, same candidates | "
        "oracle, full grid | auto / full-grid oracle | auto expressive | auto preserved |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    strengths = ", ".join(f"{s:g}" for s in AUTO_STRENGTHS)
    for family in ("full", "lora"):
        if family not in chosen:
            continue
        for split in ("validation", "test"):
            records = [r for r in results.records if r["split"] == split]
            s = auto_summaries(records, signals, family, chosen[family]["label"])
            lines.append(
                f"| {family} | `g{s['guidance']:g} i{s['interpolation']:g}` x strength {strengths} | "
                f"{split} | **{rate(s['auto'], 'success')}** | {rate(s['fixed'], 'success')} | "
                f"{rate(s['same'], 'success')} | {rate(s['grid'], 'success')} | {num(s['share'], 2)} | "
                f"{pct(s['auto']['expressive'])} | {pct(s['auto']['preserved'])} |"
            )
    return lines


def auto_targets(results, chosen: dict) -> list[str]:
    """Issue 13's targets for the automatic dial, on the test split, for the tune method whose fixed
    setting is best on validation."""
    signals = dial_signals(results)
    unitune = [chosen[k] for k in ("full", "lora") if k in chosen]
    if not signals or not unitune:
        return []
    best = max(unitune, key=lambda row: ranking_key(row["validation"]))
    family = best["method"].family
    test = [r for r in results.records if r["split"] == "test"]
    s = auto_summaries(test, signals, family, best["label"])
    auto, fixed, share = s["auto"]["success"], s["fixed"]["success"], s["share"]
    cost = {row["method"]: row for row in results.costs}.get(family, {})
    ratio = cost["auto_edit_s"] / cost["edit_default_s"] if "auto_edit_s" in cost else float("nan")
    return [
        "| target (automatic dial, " + family + " tune, test) | measured | |",
        "|---|---|---|",
        f"| >= best fixed setting + {100 * AUTO_MARGIN:.0f} points | {rate(s['auto'], 'success')} vs "
        f"{pct(fixed)} ({100 * (auto - fixed):+.0f} points) | {verdict(auto - fixed >= AUTO_MARGIN)} |",
        f"| >= {100 * AUTO_ORACLE_SHARE:.0f}% of the per-edit oracle's success | {num(share, 2)} of "
        f"{pct(s['grid']['success'])} | {verdict(share >= AUTO_ORACLE_SHARE)} |",
        f"| cost <= {AUTO_COST:g}x one edit (core_costs, the model's default dials) | {num(ratio, 2)}x | "
        f"{verdict(ratio <= AUTO_COST)} |",
    ]
