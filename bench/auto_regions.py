"""Region signals for the automatic dial: does "keeps the rest" read better outside where the edit acts?

The dial's signals (`unitune.auto`) are means over the whole latent, so an expressive candidate's own
edit raises its `fit_base` as much as damage elsewhere would. Here each edit also gets a map of where
its words act, from the tuned model alone: the mean |eps("R edit") - eps("R")| on the *base* latent over
the dial's timesteps and noises (normalised to max 1: `region`), and every candidate gets the dial's
denoising errors split by that map:

- `gain_in`: the gain (`fit_base - fit_edit`) weighted by `region` (does the edit show where it should?);
- `fit_base_out`: `fit_base` weighted by 1 - `region` (is the base kept where the edit should not act?);
- `gain_untuned` (and `_in`, weighted by `region`): the same gain read by the untuned weights (the
  base model, `UNetWeights.untuned`), between the edit's words alone and no prompt;
- `change_out` / `change_in`: the candidate's mean absolute pixel change from the base, weighted the same
  way (the map upsampled to pixels).

The candidates are those of `bench/auto_candidates.py` (same sweep, seeds and scoring; `unitune.api`'s
scorer is wrapped, the product is untouched). Each edit also records how well `region` finds the
ground-truth changed pixels (`region_contrast`: the map's mean on changed latent cells over its mean on
the others), as a diagnostic only. `--rules` replays rules on the saved rows. A benchmark, not a test.

Usage: HF_HUB_OFFLINE=1 python bench/auto_regions.py --tune lora:96:4e-3:8:4:all --scenes 0:16 \\
           --threads 1 --out a.json          # defaults: guidance 3, strengths 0.6,0.8,1, tail 0.2
       python bench/auto_regions.py --rules a.json b.json
"""

from __future__ import annotations

import collections
import json

import auto_candidates
import numpy as np
import torch
import torch.nn.functional as F

import unitune.api
from unitune.auto import SCORE_SEED, SCORE_TIMESTEPS, Signals, score_candidates
from unitune.pipelines import Conditioning
from unitune.shapes.world import render_pil
from unitune.tuning import encode_latent, encode_text, noised, training_scheduler

CURRENT = {}  # the base image and edit being swept (set by the measuring loop)


class RegionSignals(Signals):
    """The dial's signals plus the region-split ones (extra attributes, kept in `to_dict`)."""

    def __init__(self, signals: Signals, extra: dict[str, float]):
        super().__init__(signals.fit_edit, signals.fit_base, signals.read_edit, signals.read_none)
        object.__setattr__(self, "extra", extra)

    def to_dict(self) -> dict[str, float]:
        return {**super().to_dict(), **self.extra}


@torch.no_grad()
def predictions(
    pipe, latents: torch.Tensor, embeds: Conditioning, runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """(preds (P, N, T, C, h, w), target (N, T, C, h, w)) with the dial's fixed timesteps and noises."""
    scheduler = training_scheduler(pipe)
    generator = torch.Generator("cpu").manual_seed(SCORE_SEED)
    steps = torch.tensor(SCORE_TIMESTEPS)
    noise = torch.randn((len(steps), *latents.shape[1:]), generator=generator)
    count, times = len(latents), len(steps)
    clean = latents.repeat_interleave(times, dim=0)
    noisy, target = noised(scheduler, clean, noise.repeat(count, 1, 1, 1), steps.repeat(count))
    preds = []
    for p in range(len(embeds)):
        text = embeds[p : p + 1].expand(len(noisy))
        with runtime.autocast():
            preds.append(pipe.unet(noisy, steps.repeat(count), **text.unet_kwargs()).sample.float())
    shape = (count, times, *latents.shape[1:])
    return torch.stack([pred.view(shape) for pred in preds]), target.view(shape)


def weighted(values: torch.Tensor, weights: torch.Tensor) -> float:
    return float((values * weights).sum() / weights.sum().clamp_min(1e-8))


def region_scores(pipe, images, rare_prompt: str, edit_prompt: str, runtime, weights) -> list[Signals]:
    signals = score_candidates(pipe, images, rare_prompt, edit_prompt, runtime, weights, tuned=True)
    base, edit = CURRENT["base"], CURRENT["edit"]
    latents = encode_latent(pipe, [*images, base], runtime)
    prompts = (f"{rare_prompt} {edit_prompt}".strip(), rare_prompt)
    embeds = Conditioning.cat([encode_text(pipe, prompt, runtime, base.size) for prompt in prompts])
    preds, target = predictions(pipe, latents, embeds, runtime)
    region = (preds[0, -1] - preds[1, -1]).abs().mean((0, 1))  # (h, w), on the base latent
    region = region / region.max().clamp_min(1e-8)
    errors = (preds[:, :-1] - target[:-1]).pow(2).mean((2, 3))  # (P, N, h, w)
    pixels = np.asarray(base.convert("RGB"), dtype=np.float32) / 255
    size = pixels.shape[:2]
    region_px = F.interpolate(region[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    truth = np.abs(np.asarray(render_pil(edit.target), dtype=np.float32) / 255 - pixels).sum(-1) > 0.1
    truth_cells = F.adaptive_max_pool2d(torch.tensor(truth, dtype=torch.float32)[None], region.shape)[0]
    inside = region[truth_cells > 0].mean() if truth_cells.any() else torch.tensor(float("nan"))
    outside = region[truth_cells == 0].mean() if (truth_cells == 0).any() else torch.tensor(float("nan"))
    contrast = float(inside / outside.clamp_min(1e-8))
    untuned = untuned_gains(pipe, latents[:-1], edit_prompt, runtime, base.size)
    rows = []
    for index, signal in enumerate(signals):
        change = torch.tensor(
            np.abs(np.asarray(images[index].convert("RGB"), np.float32) / 255 - pixels).sum(-1)
        )
        extra = {
            "gain_in": weighted(errors[1, index] - errors[0, index], region),
            "fit_base_out": weighted(errors[1, index], 1 - region),
            "fit_edit_out": weighted(errors[0, index], 1 - region),
            "change_in": weighted(change, region_px),
            "change_out": weighted(change, 1 - region_px),
            "change": float(change.mean()),
            "gain_untuned": float(untuned[index].mean()),
            "gain_untuned_in": weighted(untuned[index], region),
            "region_contrast": contrast,
            "region_mean": float(region.mean()),
        }
        rows.append(RegionSignals(signal, extra))
    return rows


def untuned_gains(pipe, latents: torch.Tensor, edit_prompt: str, runtime, size) -> torch.Tensor:
    """(N, h, w): how much better the *untuned* model explains each candidate under the edit's words
    alone than unconditionally (it reads "R edit" as "edit"; the tune does not pull it to the base)."""
    embeds = Conditioning.cat([encode_text(pipe, prompt, runtime, size) for prompt in (edit_prompt, "")])
    with CURRENT["editor"].weights.untuned():
        preds, target = predictions(pipe, latents, embeds, runtime)
    errors = (preds - target).pow(2).mean((2, 3))  # (P, N, h, w)
    return errors[1] - errors[0]


def measure(args, first: int, last: int) -> list[dict]:
    """`auto_candidates.measure` with the region scorer and the current base/edit recorded for it."""
    original_sweep = unitune.api.Editor.sweep

    def sweep(self, image, prompt, *rest, **kwargs):
        CURRENT.update(base=image, edit=CURRENT["edits"][prompt], editor=self)
        return original_sweep(self, image, prompt, *rest, **kwargs)

    original_edits = auto_candidates.edits_for_scene

    def edits_for_scene(*a, **k):
        edits = original_edits(*a, **k)
        CURRENT["edits"] = {edit.prompt: edit for edit in edits}
        return edits

    unitune.api.score_candidates = region_scores
    unitune.api.Editor.sweep = sweep
    auto_candidates.edits_for_scene = edits_for_scene
    return auto_candidates.measure(args, first, last)


def zscores(rows: list[dict], key: str) -> list[float]:
    values = np.array([row[key] for row in rows])
    return list((values - values.mean()) / (values.std() + 1e-12))


def ranked(rows: list[dict], score: list[float]) -> dict:
    return rows[int(np.argmax(score))]


def combo(a: str, b: str, weight: float):
    """Largest z(a) - weight * z(b) within the edit."""
    return lambda rows: ranked(
        rows, [x - weight * y for x, y in zip(zscores(rows, a), zscores(rows, b), strict=True)]
    )


def gated(signal: str, gate: str, tolerance: float):
    """Largest `signal` among candidates whose `gate` is within `tolerance` (relative) of its lowest."""

    def rule(rows):
        lowest = min(row[gate] for row in rows)
        kept = [row for row in rows if row[gate] <= lowest * (1 + tolerance)]
        return max(kept, key=lambda row: row[signal])

    return rule


RULES = {
    "largest gain": lambda rows: max(rows, key=lambda r: r["gain"]),
    "largest gain_in": lambda rows: max(rows, key=lambda r: r["gain_in"]),
    "largest gain_untuned": lambda rows: max(rows, key=lambda r: r.get("gain_untuned", 0)),
    "largest gain_untuned_in": lambda rows: max(rows, key=lambda r: r.get("gain_untuned_in", 0)),
    **{f"z gain_untuned - {w} z fit_base": combo("gain_untuned", "fit_base", w) for w in (0.5, 1)},
    **{f"z gain_untuned - {w} z change_out": combo("gain_untuned", "change_out", w) for w in (0.5, 1)},
    "lowest fit_base_out": lambda rows: min(rows, key=lambda r: r["fit_base_out"]),
    "lowest change_out": lambda rows: min(rows, key=lambda r: r["change_out"]),
    "largest change_in - change_out": lambda rows: max(rows, key=lambda r: r["change_in"] - r["change_out"]),
    **{f"z gain - {w} z fit_base": combo("gain", "fit_base", w) for w in (0.5, 1)},
    **{f"z gain_in - {w} z fit_base_out": combo("gain_in", "fit_base_out", w) for w in (0.25, 0.5, 1)},
    **{f"z gain - {w} z change_out": combo("gain", "change_out", w) for w in (0.5, 1)},
    **{f"gain, fit_base_out within {t:.0%}": gated("gain", "fit_base_out", t) for t in (0.05, 0.1, 0.2)},
    **{
        f"gain_in, fit_base_out within {t:.0%}": gated("gain_in", "fit_base_out", t) for t in (0.05, 0.1, 0.2)
    },
}


def replay(rows: list[dict]) -> None:
    edits = collections.defaultdict(list)
    for row in rows:
        edits[(row["scene"], row["edit"])].append(row)
    groups = list(edits.values())
    cells = sorted({auto_candidates.cell_of(row) for row in rows})
    fixed = {
        c: sum(r["success"] for g in groups for r in g if auto_candidates.cell_of(r) == c) for c in cells
    }
    oracle = sum(any(r["success"] for r in g) for g in groups)
    print(f"{len(groups)} edits, cells {fixed}, oracle {oracle}")
    contrast = [g[0]["region_contrast"] for g in groups if np.isfinite(g[0]["region_contrast"])]
    print(
        f"region contrast (changed cells over the rest): median {np.median(contrast):.2f}, "
        f"share > 1.5: {np.mean(np.array(contrast) > 1.5):.0%}"
    )
    for name, rule in RULES.items():
        if any(key not in groups[0][0] for key in ("gain_untuned", "gain_untuned_in")) and "untuned" in name:
            continue  # rows from before the untuned reading was recorded
        halves = [sum(rule(g)["success"] for g in groups if g[0]["scene"] % 2 == parity) for parity in (0, 1)]
        print(f"{name}: {sum(halves)} (even scenes {halves[0]}, odd {halves[1]})")
    odd, even = learned_cross_validated(groups)
    print(f"learned rule, cross-validated by scene halves: {odd + even} (even scenes {odd}, odd {even})")
    for key in (
        "gain",
        "gain_in",
        "gain_untuned",
        "gain_untuned_in",
        "fit_base",
        "fit_base_out",
        "change_out",
    ):
        if key not in groups[0][0]:
            continue
        print(
            f"pairwise {key}: "
            + ", ".join(f"{t} {pairwise(groups, key, t):.0%}" for t in ("expressive", "preserved", "success"))
        )


LEARNED_FEATURES = ("gain", "gain_in", "fit_base", "fit_base_out", "fit_edit", "fit_edit_out", "change")
LEARNED_FEATURES += ("change_in", "change_out")


def features(group: list[dict]) -> np.ndarray:
    """The signals of one edit's candidates, z-scored within the edit, and each candidate's strength."""
    values = np.array([[row[key] for key in LEARNED_FEATURES] for row in group], dtype=float)
    values = (values - values.mean(0)) / (values.std(0) + 1e-9)
    return np.hstack([values, np.array([[row["strength"]] for row in group])])


def fit_learned(groups: list[list[dict]]) -> np.ndarray:
    """A logistic regression of success on `features` (L2 1e-2, LBFGS): the rule's weights."""
    x = torch.tensor(np.vstack([features(group) for group in groups]), dtype=torch.float32)
    y = torch.tensor([float(row["success"]) for group in groups for row in group])
    weights, bias = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        logits = x @ weights + bias
        loss = F.binary_cross_entropy_with_logits(logits, y) + 1e-2 * weights.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach().numpy()


def learned_cross_validated(groups: list[list[dict]]) -> tuple[int, int]:
    """Successes of the learned rule trained on the even scenes and scored on the odd ones, and back."""
    halves = [[g for g in groups if g[0]["scene"] % 2 == parity] for parity in (0, 1)]
    hits = []
    for train, held_out in ((halves[0], halves[1]), (halves[1], halves[0])):
        weights = fit_learned(train)
        hits.append(sum(group[int(np.argmax(features(group) @ weights))]["success"] for group in held_out))
    return hits[0], hits[1]


def pairwise(groups, key: str, truth: str) -> float:
    """Over candidate pairs of one edit that differ in `truth`: how often the larger `key` has it
    (for fit_ and change_ keys, the smaller)."""
    sign = -1 if key.startswith(("fit", "change")) else 1
    right = total = 0
    for group in groups:
        for a in group:
            for b in group:
                if a[truth] and not b[truth]:
                    total += 1
                    right += sign * (a[key] - b[key]) > 0
    return right / max(total, 1)


def main() -> None:
    parser = auto_candidates.measuring_parser(guidances="3", strengths="0.6,0.8,1", tails="0.2")
    parser.add_argument(
        "--keep",
        default=None,
        help="replay only cells (guidance, strength, tail, seed, model guidance) "
        "matching this Python expression of g, s, t, seed, e, e.g. 's == 1'",
    )
    args = parser.parse_args()
    if args.rules:
        rows = [row for path in args.rules for row in json.load(open(path))]
        if args.keep:
            names = ("g", "s", "t", "seed", "e")
            rows = [
                r for r in rows if eval(args.keep, dict(zip(names, auto_candidates.cell_of(r), strict=True)))
            ]
        replay(rows)
        return
    auto_candidates.measure_and_save(args, measure)


if __name__ == "__main__":
    main()
