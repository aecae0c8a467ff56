"""The report's localisation section: the model's default edit without a mask, with the automatic mask and
with a user's mask (the edit's true region), on the same test edits, paired, against the localisation
targets."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..selection import METHODS, by_kind, paired, summarise
from .cells import pct, rate, verdict

WAYS = (
    ("defaults", "no mask (`--localize off`)"),
    ("localize-auto", "automatic mask (`unitune edit`: `--localize auto`)"),
    ("user-mask", "a user's mask: the edit's true region"),
)
TARGET_SUCCESS, TARGET_OVER_SDEDIT, TARGET_OVER_DIFFEDIT = 0.50, 0.10, 0.05
TARGET_PRESERVED, TARGET_EXPRESSIVE, TARGET_BACKGROUND, TARGET_ADD, TARGET_COST = 0.80, 0.55, 0.60, 0.40, 1.5

TEXT = """\
One setting, no choice on validation: the model's default edit (its `unitune.json`: guidance, strength,
untuned tail, inversion, mask guidance (a user's mask's and the automatic one's), mask margin and pixel
composite; the full tune; the benchmark's sampler steps), run three ways on the same edits with the same
seeds. The user's mask is the set of pixels where the edit's base and target differ, given as a user
would paint it (white = may change; the model grows it by its `mask_grow`): it uses the ground truth's
region, not its pixels, so it measures what the sampler does with a good mask, not how a mask is found.
Wins / losses count the edits one way gets right and the unmasked edit gets wrong, and the reverse
(two-sided sign test). The automatic mask is the model's default (its `unitune.json`): on the embedded
model, read by the model before the tune and snapped to the image's regions, the background or one
object (`--mask-reading untuned --mask-regions`). A seed moves a localised edit: the automatic mask is
also run at two more seeds on the same test edits (its noise draws and samples drawn again), and its
mean over the three seeds is checked too.
Research record: docs/lab/masks.md, docs/lab/regions.md, docs/lab/object-choice.md."""


def _methods() -> dict:
    return {method.key: method for method in METHODS}


def localized_rows(records: list[dict], kinds) -> list[str]:
    methods = _methods()
    test = {key: methods[key].records(records, "test") for key, _ in WAYS}
    if not test["defaults"]:
        return ["(not measured in this run)"]
    lines = [
        "| the default edit with | **test success** | expressive | preserved | "
        + " | ".join(kinds)
        + " | vs no mask: wins / losses (p) | edit s/img | val success |",
        "|---|---|---|---|" + "---|" * len(kinds) + "---|---|---|",
    ]
    for key, title in WAYS:
        rows = test[key]
        if not rows:
            continue
        summary, per = summarise(rows), by_kind(rows)
        cells = [
            title,
            f"**{rate(summary, 'success')}**",
            pct(summary["expressive"]),
            pct(summary["preserved"]),
        ]
        cells += [_count(per[k]) if k in per else "-" for k in kinds]
        if key == "defaults":
            cells.append("-")
        else:
            wins, losses, p = paired(rows, test["defaults"])
            cells.append(f"{wins} / {losses} (p = {p:.2g})")
        cells.append(f"{summary['seconds']:.2f}")
        cells.append(pct(summarise(methods[key].records(records, "validation"))["success"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per kind: successes / edits."]
    spread = seed_successes(records)
    if len(spread) > 1:
        each = ", ".join(
            f"{pct(np.mean(hits))} ({int(sum(hits))} of {len(hits)}) at the seed" + (f" + {k}" if k else "")
            for k, hits in sorted(spread.items())
        )
        lines += ["", f"The automatic mask at {len(spread)} seeds: {each}; mean {pct(_seed_mean(spread))}."]
    return lines


def seed_successes(records: list[dict]) -> dict[int, list[float]]:
    """The automatic mask's test successes by seed offset (0: the benchmark's seed)."""
    hits: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r["family"] == "localized" and r["split"] == "test" and r.get("mask") == "auto":
            hits[r.get("seed_offset") or 0].append(r["success"])
    return dict(hits)


def _seed_mean(spread: dict[int, list[float]]) -> float:
    return float(np.mean([np.mean(hits) for hits in spread.values()]))


def _count(summary: dict) -> str:
    return f"{round(summary['success'] * summary['count'])}/{summary['count']}"


def localized_targets(records: list[dict], chosen: dict) -> list[str]:
    """The localisation targets on test, for the automatic mask and for a user's mask."""
    methods = _methods()
    test = {key: methods[key].records(records, "test") for key, _ in WAYS}
    if not test["defaults"] or not test["user-mask"]:
        return []
    sdedit = chosen.get("sdedit", {}).get("test", {}).get("success", float("nan"))
    diffedit = chosen.get("diffedit", {}).get("test", {}).get("success", float("nan"))
    plain_seconds = summarise(test["defaults"])["seconds"]
    checks = (
        (
            f"success >= {pct(TARGET_SUCCESS)}",
            lambda s, per: (rate(s, "success"), s["success"] >= TARGET_SUCCESS),
        ),
        (
            f"success >= SDEdit (full caption, {pct(sdedit)}) + {100 * TARGET_OVER_SDEDIT:.0f} points",
            lambda s, per: _margin(s["success"], sdedit, TARGET_OVER_SDEDIT),
        ),
        (
            f"success >= DiffEdit ({pct(diffedit)}) + {100 * TARGET_OVER_DIFFEDIT:.0f} points",
            lambda s, per: _margin(s["success"], diffedit, TARGET_OVER_DIFFEDIT),
        ),
        (
            f"preserved >= {pct(TARGET_PRESERVED)} with expressive >= {pct(TARGET_EXPRESSIVE)}",
            lambda s, per: (
                f"{pct(s['preserved'])} / {pct(s['expressive'])}",
                s["preserved"] >= TARGET_PRESERVED and s["expressive"] >= TARGET_EXPRESSIVE,
            ),
        ),
        (
            f"backgrounds >= {pct(TARGET_BACKGROUND)}",
            lambda s, per: _kind(per, "background", TARGET_BACKGROUND),
        ),
        (f"additions >= {pct(TARGET_ADD)}", lambda s, per: _kind(per, "add", TARGET_ADD)),
        (
            f"cost <= {TARGET_COST:g}x the unmasked edit (benchmark seconds per image)",
            lambda s, per: (
                f"{s['seconds'] / plain_seconds:.2f}x",
                s["seconds"] <= TARGET_COST * plain_seconds,
            ),
        ),
    )
    lines = ["| target (test) | automatic mask | | a user's mask | |", "|---|---|---|---|---|"]
    for name, check in checks:
        cells = [name]
        for key in ("localize-auto", "user-mask"):
            if not test[key]:
                cells += ["n/a", ""]
                continue
            text, ok = check(summarise(test[key]), by_kind(test[key]))
            cells += [text, verdict(bool(ok))]
        lines.append("| " + " | ".join(cells) + " |")
    spread = seed_successes(records)
    if len(spread) > 1:
        mean = _seed_mean(spread)
        name = f"success >= {pct(TARGET_SUCCESS)}, mean over {len(spread)} seeds"
        lines.append(f"| {name} | {pct(mean)} | {verdict(mean >= TARGET_SUCCESS)} | - | |")
        name = f"the same mean >= SDEdit + {100 * TARGET_OVER_SDEDIT:.0f} points"
        text, ok = _margin(mean, sdedit, TARGET_OVER_SDEDIT)
        lines.append(f"| {name} | {text} | {verdict(bool(ok))} | - | |")
    return lines


def _margin(success: float, baseline: float, margin: float) -> tuple[str, bool]:
    if not np.isfinite(baseline):
        return f"{pct(success)} (no baseline in this run)", False
    return f"{pct(success)} ({100 * (success - baseline):+.1f} points)", success >= baseline + margin - 1e-9


def _kind(per: dict, kind: str, target: float) -> tuple[str, bool]:
    if kind not in per:
        return "n/a", False
    return f"{_count(per[kind])} ({pct(per[kind]['success'])})", per[kind]["success"] >= target
