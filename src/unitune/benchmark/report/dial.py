"""The report's section on the automatic dial (unitune.auto) and issue 13's targets for it."""

from __future__ import annotations

from ..selection import auto_records, oracle, ranking_key, summarise
from .cells import num, pct, rate, verdict

AUTO_MARGIN, AUTO_ORACLE_SHARE, AUTO_COST = 0.15, 0.80, 4.0  # issue 13's targets for the automatic dial

AUTO_TEXT = """\
For each edit the dial samples every candidate (same seed): the strengths 0.6, 0.8 and 1, and, where
the model's `unitune.json` sets `auto_model_guidance`, strength 1 with that model guidance (SINE's: the
untuned model's reading of the edit's words added at the tuned steps). It encodes each sample back to a
latent and measures the untuned model's denoising error under the edit's words and under no words at
four fixed timesteps with fixed noises; it keeps the sample with the most evidence (how much better the
edit's words explain it; `unitune.auto.pick`). No ground truth, no other weights: the untuned model is
the same checkpoint before the tune. It runs at the guidance and interpolation of the fixed setting
chosen on validation, so the comparison with that setting isolates the choice among candidates. These
candidates are unmasked; at the embedded model's defaults `--auto` samples them inside the automatic
mask, which the benchmark does not run (measured in docs/lab/seeds.md). The rule and the candidates
were chosen on validation edits (docs/lab/auto-dial.md; the validation row is shown too); the oracles
use the ground truth and are ceilings, not methods. The dial's picks are replayed on the benchmark's own
samples, which were sampled a scene's edits to a batch; `--auto` samples an edit's candidates to a
batch, so its pixels can differ from these by float rounding.
"""


def dial_signals(results) -> list[dict]:
    """The run's signals per raw sample, if it measured those the dial's rule reads (runs before the
    untuned model's `evidence` did not: their report has no dial section rather than a different rule)."""
    return [s for s in getattr(results, "signals", []) if "read_edit" in s]


def dial_candidates(results) -> list[tuple[float, float]]:
    """The dial's candidates in this run, (strength, extra model guidance) pairs: AUTO_STRENGTHS, and
    strength 1 with the model's `auto_model_guidance` where the run sampled it."""
    from ...auto import AUTO_STRENGTHS

    weight = getattr(results, "auto_model_guidance", 0.0)
    extra = [(1.0, weight)] if weight > 0 and getattr(results, "dial_records", None) else []
    return [(strength, 0.0) for strength in AUTO_STRENGTHS] + extra


def describe(candidates: list[tuple[float, float]]) -> str:
    strengths = ", ".join(f"{s:g}" for s, weight in candidates if not weight)
    extra = "".join(f" + strength {s:g} with model guidance {w:g}" for s, w in candidates if w)
    return f"strength {strengths}{extra}"


def auto_summaries(records: list[dict], extra: list[dict], signals: list[dict], family: str, label: str,
                   candidates: list[tuple[float, float]]) -> dict:  # fmt: skip
    """Over `records` (one split; `extra`: the dial's samples outside the grid, same split): the
    automatic dial at the guidance and interpolation of the fixed setting `label`, that setting itself,
    and the oracles over the dial's candidates, the grid, and the grid with the dial's extra candidates."""
    ours = [r for r in records if r["family"] == family]
    setting = next(r for r in ours if r["label"] == label)
    guidance, weight = setting["guidance"], setting["interpolation"]
    at_dials = [
        r
        for r in ours + [r for r in extra if r["family"] == family]
        if (r["guidance"], r["interpolation"]) == (guidance, weight)
    ]
    same = [r for r in at_dials if (r["strength"], r.get("model_guidance", 0.0)) in candidates]
    auto = summarise(auto_records(at_dials, signals, family, guidance, weight, candidates))
    grid = summarise(oracle(ours))
    widened = summarise(oracle(ours + [r for r in same if r.get("model_guidance", 0.0)]))
    return {
        "guidance": guidance,
        "interpolation": weight,
        "auto": auto,
        "fixed": summarise([r for r in ours if r["label"] == label]),
        "same": summarise(oracle(same)),
        "grid": grid,
        "widened": widened,
        "share": auto["success"] / grid["success"] if grid["success"] else float("nan"),
        "widened_share": auto["success"] / widened["success"] if widened["success"] else float("nan"),
    }


def auto_rows(results, chosen: dict) -> list[str]:
    """The automatic dial (unitune.auto) per tune method: at the guidance and interpolation of the fixed
    setting chosen on validation, it picks each edit's candidate from the model's own signals. Compared
    with that fixed setting, and with oracles over the same candidates and the grid."""
    signals = dial_signals(results)
    if not signals:
        return ["(not measured in this run)"]
    candidates = dial_candidates(results)
    lines = [
        "| tune | candidates | split | **auto success** | fixed setting | oracle, same candidates | "
        "oracle, full grid | auto / full-grid oracle | auto expressive | auto preserved |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for family in ("full", "lora"):
        if family not in chosen:
            continue
        for split in ("validation", "test"):
            records = [r for r in results.records if r["split"] == split]
            extra = [r for r in getattr(results, "dial_records", []) if r["split"] == split]
            s = auto_summaries(records, extra, signals, family, chosen[family]["label"], candidates)
            lines.append(
                f"| {family} | `g{s['guidance']:g} i{s['interpolation']:g}` x {describe(candidates)} | "
                f"{split} | **{rate(s['auto'], 'success')}** | {rate(s['fixed'], 'success')} | "
                f"{rate(s['same'], 'success')} | {rate(s['grid'], 'success')} | {num(s['share'], 2)} | "
                f"{pct(s['auto']['expressive'])} | {pct(s['auto']['preserved'])} |"
            )
    return lines


def ceiling_row(widened: float, fixed: float) -> str:
    """What a perfect choice among every sample of the run (the grid and the dial's extra candidates)
    would gain over the fixed setting: the most any dial choosing among them can, so where it is below
    the margin, the model, not the dial, is what misses the target."""
    reach = (
        "within reach"
        if widened - fixed >= AUTO_MARGIN
        else "the margin is above any choice among these samples"
    )
    return (
        f"| (its ceiling: the oracle over the grid and the dial's candidates) | {pct(widened)} "
        f"({100 * (widened - fixed):+.0f} points) | {reach} |"
    )


def auto_targets(results, chosen: dict) -> list[str]:
    """Issue 13's targets for the automatic dial, on the test split, for the tune method whose fixed
    setting is best on validation."""
    signals = dial_signals(results)
    unitune = [chosen[k] for k in ("full", "lora") if k in chosen]
    if not signals or not unitune:
        return []
    best = max(unitune, key=lambda row: ranking_key(row["validation"]))
    family = best["method"].family
    candidates = dial_candidates(results)
    test = [r for r in results.records if r["split"] == "test"]
    extra = [r for r in getattr(results, "dial_records", []) if r["split"] == "test"]
    s = auto_summaries(test, extra, signals, family, best["label"], candidates)
    auto, fixed, share = s["auto"]["success"], s["fixed"]["success"], s["share"]
    cost = {row["method"]: row for row in results.costs}.get(family, {})
    ratio = cost["auto_edit_s"] / cost["edit_default_s"] if "auto_edit_s" in cost else float("nan")
    lines = [
        "| target (automatic dial, " + family + " tune, test) | measured | |",
        "|---|---|---|",
        f"| >= best fixed setting + {100 * AUTO_MARGIN:.0f} points | {rate(s['auto'], 'success')} vs "
        f"{pct(fixed)} ({100 * (auto - fixed):+.0f} points) | {verdict(auto - fixed >= AUTO_MARGIN)} |",
        ceiling_row(s["widened"]["success"], fixed),
        f"| >= {100 * AUTO_ORACLE_SHARE:.0f}% of the per-edit oracle's success | {num(share, 2)} of "
        f"{pct(s['grid']['success'])} | {verdict(share >= AUTO_ORACLE_SHARE)} |",
    ]
    if any(weight for _, weight in candidates):  # a candidate outside the grid: the oracle it widens
        lines.append(
            f"| (the same, the oracle over the grid and the dial's extra candidate) | "
            f"{num(s['widened_share'], 2)} of {pct(s['widened']['success'])} | "
            f"{verdict(s['widened_share'] >= AUTO_ORACLE_SHARE)} |"
        )
    lines.append(
        f"| cost <= {AUTO_COST:g}x one edit (core_costs, the model's default dials) | {num(ratio, 2)}x | "
        f"{verdict(ratio <= AUTO_COST)} |"
    )
    return lines
