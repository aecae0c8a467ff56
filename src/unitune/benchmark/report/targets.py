"""The report's targets (success, margin over SDEdit, tune and edit time) and its costs table."""

from __future__ import annotations

import numpy as np

from ..methods import FAMILIES, LOCALIZED_TUNE
from ..selection import ranking_key
from .cells import pct, rate, verdict

TARGET_SUCCESS, TARGET_MARGIN, TARGET_TUNE_S, TARGET_EDIT_S = 0.75, 0.20, 20.0, 2.0
UNITUNE_KEYS = ("full-noise", "full", "lora-noise", "lora", "defaults", "localize-auto")  # no ground truth


def cost_rows(results) -> list[str]:
    tune = {
        family: [c.seconds for c in results.tune_costs if c.family == family] for family in ("full", "lora")
    }
    grid = {
        family: [r["seconds"] for r in results.records if r["family"] == family and r["interpolation"] == 0]
        for family in FAMILIES
    }
    lines = [
        "| method | tune s per image (benchmark mean, max) | edit s per image (benchmark, grid mean) | "
        "tune s (core_costs, steps) | tune step ms | bare UNet step ms | "
        "ratio | edit s (core_costs) | default edit s / --auto s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    measured = {row["method"]: row for row in results.costs}
    for family in ("full", "lora"):
        if not tune[family]:
            continue
        c = measured.get(family)
        auto = f"{c['edit_default_s']:.2f} / {c['auto_edit_s']:.2f}" if c and "auto_edit_s" in c else "n/a"
        core = (
            f"{c['tune_s']:.2f} ({c.get('tune_steps', '?')}) | {c['tune_step_ms']:.1f} | "
            f"{c['bare_step_ms']:.1f} | "
            f"{c['tune_step_ms'] / c['bare_step_ms']:.2f} | {c['edit_s']:.2f} | {auto} | "
            f"{c['rss_peak_mib']:.0f}"
            if c
            else "n/a | n/a | n/a | n/a | n/a | n/a | n/a"
        )
        lines.append(
            f"| UniTune {family} | {np.mean(tune[family]):.2f}, {np.max(tune[family]):.2f} | "
            f"{np.mean(grid[family]):.2f} | {core} |"
        )
    baselines = (("prompt", "prompt only"), ("sdedit", "SDEdit"), ("sdedit-words", "SDEdit, edit's words"))
    baselines += (("diffedit", "DiffEdit"),)
    for family, title in baselines:
        if grid[family]:
            lines.append(f"| {title} | - | {np.mean(grid[family]):.2f} | - | - | - | - | - | - | - |")
    for mask, title in (("none", "no mask"), ("auto", "automatic mask"), ("user", "a user's mask")):
        seconds = [
            r["seconds"]
            for r in results.records
            if r["family"] == "localized" and r["mask"] == mask and not r.get("seed_offset")
        ]
        if seconds:
            empty = " - |" * 7
            lines.append(f"| UniTune, the model's dials, {title} | - | {np.mean(seconds):.2f} |{empty}")
    return lines


def targets(chosen: dict, results) -> list[str]:
    unitune = [chosen[k] for k in UNITUNE_KEYS if k in chosen]
    if not unitune:
        return ["No UniTune method ran."]
    best = max(unitune, key=lambda row: ranking_key(row["validation"]))  # chosen on validation only
    success = best["test"]["success"]
    sdedit = chosen.get("sdedit", {}).get("test", {}).get("success", float("nan"))
    family = best["method"].family
    family = LOCALIZED_TUNE if family == "localized" else family  # whose tune it edits with
    tune_s, tune_text = tune_seconds(results, family)
    edit_s = best["test"]["seconds"]

    margin = success - sdedit
    return [
        f"UniTune's best method on validation is **{best['method'].title}** at `{best['label']}`.",
        "",
        "| target | measured (test) | |",
        "|---|---|---|",
        f"| success >= {pct(TARGET_SUCCESS)} | {rate(best['test'], 'success')} | "
        f"{verdict(success >= TARGET_SUCCESS)} |",
        f"| beats best SDEdit by >= {100 * TARGET_MARGIN:.0f} points | {100 * margin:+.0f} points "
        f"(SDEdit {pct(sdedit)}) | {verdict(margin >= TARGET_MARGIN)} |",
        f"| tune <= {TARGET_TUNE_S:.0f} s on two cores ({family}) | {tune_text} | "
        f"{verdict(tune_s <= TARGET_TUNE_S)} |",
        f"| edit <= {TARGET_EDIT_S:.0f} s per image | {edit_s:.2f} s | {verdict(edit_s <= TARGET_EDIT_S)} |",
    ]


def tune_seconds(results, family: str) -> tuple[float, str]:
    """(seconds, how they were measured) of one tune of `family` for the time target: core_costs' tune,
    which has the two cores to itself, when it ran a tune of the benchmark's length; else the benchmark's
    own tunes, one core each while the other worker runs (slower than what the target asks about, so
    the verdict errs against us)."""
    shared = [c.seconds for c in results.tune_costs if c.family == family]
    shared_s = float(np.mean(shared)) if shared else float("nan")
    alone = {row["method"]: row for row in results.costs}.get(family)
    lengths = {c.settings["steps"] for c in results.tune_costs if c.family == family and c.settings}
    if alone is None or {alone.get("tune_steps")} != lengths:
        return shared_s, f"{shared_s:.1f} s (benchmark tunes, one core each)"
    text = f"{alone['tune_s']:.1f} s (core_costs, alone; benchmark tunes, one core each: {shared_s:.1f} s)"
    return alone["tune_s"], text


# ---------------------------------------------------------------- plots
