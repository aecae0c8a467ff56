"""From scored records to method summaries: rates per setting, the best fixed setting (chosen on the
validation split, reported on test) and the per-edit oracle. Pure functions of record dicts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..auto import AUTO_STRENGTHS, Signals, pick

RATES = ("expressive", "preserved", "success")
DISTANCES = ("psnr_target", "ssim_target", "psnr_base_untouched", "ssim_base_untouched")
COLUMNS = (*RATES, *DISTANCES, "seconds")


@dataclass(frozen=True)
class Method:
    """A row of the comparison: a family of settings, optionally narrowed by `keep(record)`."""

    key: str
    title: str
    family: str
    keep: Callable[[dict], bool] = lambda record: True

    def records(self, records: list[dict], split: str) -> list[dict]:
        return [r for r in records if r["family"] == self.family and r["split"] == split and self.keep(r)]


METHODS = (
    Method("prompt", "(a) prompt only: untuned model, full target caption", "prompt"),
    Method("sdedit", "(b) SDEdit: img2img, full target caption", "sdedit"),
    Method("sdedit-words", "(b) SDEdit on the edit's words alone (UniTune's input)", "sdedit-words"),
    Method("diffedit", "(b) DiffEdit: its mask from target vs source caption, untuned model", "diffedit"),
    Method(
        "full-noise",
        "(c) UniTune at strength 1 (full tune, no interpolation)",
        "full",
        lambda r: r["strength"] == 1.0 and r["interpolation"] == 0.0,
    ),
    Method("full", "(d) UniTune, full tune: guidance x strength x interpolation", "full"),
    Method(
        "lora-noise",
        "(e) UniTune at strength 1, LoRA tune",
        "lora",
        lambda r: r["strength"] == 1.0 and r["interpolation"] == 0.0,
    ),
    Method("lora", "(e) UniTune, LoRA tune: guidance x strength x interpolation", "lora"),
    Method(
        "defaults",
        "(f) UniTune, the model's dials without a mask (`--localize off`)",
        "localized",
        lambda r: r.get("mask") == "none",
    ),
    Method(
        "localize-auto",
        "(f) UniTune at the model's default dials: its automatic mask (`unitune edit`)",
        "localized",
        lambda r: r.get("mask") == "auto" and not r.get("seed_offset"),
    ),
    Method(
        "user-mask",
        "(f) UniTune, the model's dials, a user's mask: the edit's true region (uses the ground truth)",
        "localized",
        lambda r: r.get("mask") == "user",
    ),
)


def finite_mean(values) -> float:
    """Mean over finite values (region scores are nan where the region is empty)."""
    values = np.asarray(list(values), dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def summarise(records: list[dict]) -> dict:
    """Mean of every column over `records`, plus their count."""
    summary = {column: finite_mean(r[column] for r in records) for column in COLUMNS}
    summary["count"] = len(records)
    return summary


def by_setting(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["label"]].append(record)
    return dict(groups)


def ranking_key(summary: dict) -> tuple[float, float, float]:
    """Success rate first, then the mean of the expressive and preserved rates, then mean PSNR to the
    ideal target. (PSNR alone as the tie-break rewarded doing nothing: the base image itself scores a
    higher PSNR to the target than most edits; a no-op's rate mean is only 0.5.)"""
    psnr = summary["psnr_target"]
    balance = (summary["expressive"] + summary["preserved"]) / 2
    return summary["success"], balance, psnr if np.isfinite(psnr) else -np.inf


def best_setting(records: list[dict]) -> str | None:
    """The label of the setting with the best ranking_key over `records` (e.g. the validation split)."""
    groups = by_setting(records)
    if not groups:
        return None
    return max(sorted(groups), key=lambda label: ranking_key(summarise(groups[label])))


def wilson_interval(hits: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a rate of `hits` out of `count`."""
    if count == 0:
        return float("nan"), float("nan")
    rate = hits / count
    centre = (rate + z * z / (2 * count)) / (1 + z * z / count)
    half = z / (1 + z * z / count) * np.sqrt(rate * (1 - rate) / count + z * z / (4 * count * count))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def oracle(records: list[dict]) -> list[dict]:
    """Per edit, the record of the grid setting that is best against the ground truth: success, then
    expressive + preserved, then PSNR to the ideal target. A ceiling for any automatic dial."""
    per_edit: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        per_edit[record["edit"]].append(record)

    def key(record: dict):
        psnr = record["psnr_target"] if np.isfinite(record["psnr_target"]) else 1e9
        return record["success"], record["expressive"] + record["preserved"], psnr

    return [max(group, key=key) for _, group in sorted(per_edit.items())]


def by_kind(records: list[dict]) -> dict[str, dict]:
    kinds: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        kinds[record["kind"]].append(record)
    return {kind: summarise(rows) for kind, rows in kinds.items()}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in (x, y), both larger-is-better, sorted by x."""
    front = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


def auto_records(
    records: list[dict],
    signals: list[dict],
    family: str,
    guidance: float,
    interpolation: float,
    candidates: list[tuple[float, float]] | None = None,
    rule: Callable[[list[Signals]], int] = pick,
) -> list[dict]:
    """Per edit, the record the automatic dial (`rule` on unitune.auto's signals) picks among the
    `candidates`, (strength, extra model guidance) pairs (default: AUTO_STRENGTHS without it), at this
    guidance and interpolation: what `unitune edit --auto` returns, from the benchmark's own samples."""
    candidates = candidates or [(strength, 0.0) for strength in AUTO_STRENGTHS]
    by_candidate = {
        _candidate(s): Signals(s["fit_edit"], s["fit_base"], s["read_edit"], s["read_none"])
        for s in signals
        if s["family"] == family and s["guidance"] == guidance and "read_edit" in s
    }
    table = {
        _candidate(r): r
        for r in records
        if r["family"] == family and r["guidance"] == guidance and r["interpolation"] == interpolation
    }
    picked = []
    for edit in sorted({edit for edit, *_ in table}):
        options = [c for c in candidates if (edit, *c) in by_candidate and (edit, *c) in table]
        if options:
            choice = rule([by_candidate[(edit, *c)] for c in options])
            picked.append(table[(edit, *options[choice])])
    return picked


def _candidate(row: dict) -> tuple[str, float, float]:
    """(edit, strength, extra model guidance) of a record or signals row (runs before the dial's extra
    candidate had none)."""
    return row["edit"], row["strength"], row.get("model_guidance", 0.0)


def paired(records: list[dict], against: list[dict]) -> tuple[int, int, float]:
    """Edit by edit over the edits both hold: (wins, losses, two-sided sign-test p) of `records`' success
    against `against`'s (ties left out; p is 1 with no untied edit)."""
    from scipy.stats import binomtest

    theirs = {r["edit"]: r["success"] for r in against}
    pairs = [(r["success"], theirs[r["edit"]]) for r in records if r["edit"] in theirs]
    wins = sum(1 for ours, other in pairs if ours > other)
    losses = sum(1 for ours, other in pairs if ours < other)
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return wins, losses, float(p)
