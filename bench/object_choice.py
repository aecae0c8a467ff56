"""Which object an automatic mask keeps, and from which reading (issue 36; docs/lab/object-choice.md):
rules over dumped maps, given to the editor as a user's mask; the one-off harness behind the change to
`--mask-regions` (one object, the most lit) and the embedded model's untuned reading.

Needs bench/mask_sources.py of commit be8ad81 (`git show be8ad81:bench/mask_sources.py >
bench/mask_sources.py`) and its dump of the tuned maps and attention (run at that commit: `python
bench/mask_sources.py dump --split validation --scenes 30`, the same for test with 36 scenes).

    python bench/object_choice.py dump --split validation --scenes 30     # the untuned maps, ~1 min
    python bench/object_choice.py choice                                  # which object each signal picks
    python bench/object_choice.py edit --rules q2 obj0 obj2 obj4 branch_oracle select_oracle \
        select_tuned select_untuned select_att8 untuned_all blob6 blob9 \
        --out runs/object-choice-validation.jsonl                         # ~1 min per rule
    python bench/object_choice.py edit --split test --scenes 36 --rules q2 select_tuned select_untuned \
        select_att8 untuned_all --out runs/object-choice-test.jsonl
    python bench/object_choice.py report runs/object-choice-validation.jsonl

q2 is `--mask-regions` as it was before (every lit region); "objects" are the connected parts of the
image outside the background region (opened by one pixel).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from mask_sources import FILLERS, _to_pixels, iou, load_edits  # noqa: E402

TUNED = Path("runs/mask-sources")
UNTUNED = Path("runs/mask-sources-untuned")
LIFT = 1.5  # regions' OBJECT_LIFT


# --- the old rule and its parts --------------------------------------------------------------------


def segment(base):
    from unitune.regions import background_label, segments

    regions = segments(base)
    return regions, regions == background_label(regions)


def parts(base):
    regions, background = segment(base)
    objects, count = ndimage.label(ndimage.binary_opening(~background, iterations=1))
    return regions, background, objects, count


def truth(e):
    return np.abs(e["base"].astype(int) - e["target"].astype(int)).max(-1) > 0


def grow(mask, pixels):
    return ndimage.binary_dilation(mask, iterations=pixels) if pixels else mask


def old_rule(base, difference, ratio=0.5):
    """--mask-regions before this change: background grown 2 px, else every region lit above LIFT x."""
    regions, background = segment(base)
    spread = F.interpolate(
        torch.from_numpy(difference)[None, None].float(), size=regions.shape, mode="bilinear"
    )
    spread = spread[0, 0].numpy()
    if spread[background].mean() > ratio * spread[~background].mean():
        return grow(background, 2)
    labels = np.unique(regions)
    means = ndimage.mean(spread, regions, labels)
    label = np.bincount(regions[background]).argmax()
    mask = np.isin(regions, labels[(means > LIFT * spread.mean()) & (labels != label)])
    return mask if mask.any() else ~background


_UNTUNED: dict = {}


def untuned_map(name):
    if not _UNTUNED:
        for path in UNTUNED.glob("*.npz"):
            z = np.load(path)
            _UNTUNED.update({str(n): d for n, d in zip(z["names"], z["differences"], strict=True)})
    return _UNTUNED[name]


# --- object scores and rules ----------------------------------------------------------------------


def tuned_score(e, region):
    return _to_pixels(e["difference"])[region].mean()


def untuned_score(e, region):
    return _to_pixels(untuned_map(e["name"]))[region].mean()


def attention_score(e, region, side="8"):
    """The strongest share of any content word's cross-attention (tuned reading) on `region`."""
    words = [j for j, w in enumerate(e["words"]) if w not in FILLERS | {"small</w>", "large</w>"}]
    maps = [_to_pixels(e["attention" + side][j]) for j in words]
    return max(m[region].mean() / m.mean() for m in maps)


def truth_score(e, region):
    return (truth(e) & region).sum()


def keep_one(e, mask, score):
    """In the object branch, only `mask`'s part in the object with the best `score` (grown 2 px)."""
    _, background, objects, count = parts(e["base"])
    if count < 2 or (mask & background).sum() > 0.5 * background.sum():
        return mask
    best = int(np.argmax([score(e, objects == k) for k in range(1, count + 1)])) + 1
    chosen = grow(objects == best, 2)
    kept = mask & chosen
    return kept if kept.any() else chosen


def q2(e):
    return old_rule(e["base"], e["difference"])


def whole_true_object(e, pixels):
    if e["kind"] in ("background", "add"):
        return q2(e)
    _, _, objects, count = parts(e["base"])
    hits = [truth_score(e, objects == k) for k in range(1, count + 1)]
    return grow(objects == int(np.argmax(hits)) + 1, pixels) if count and max(hits) else q2(e)


def branch_oracle(e):
    """q2's masks with the branch taken from the edit's kind (background or object) instead of the map."""
    if e["kind"] == "add":
        return q2(e)
    regions, background = segment(e["base"])
    if e["kind"] == "background":
        return grow(background, 2)
    return old_rule(e["base"], e["difference"], ratio=float("inf"))


def untuned_all(e):
    return keep_one(e, old_rule(e["base"], untuned_map(e["name"])), untuned_score)


def blob(e, radius):
    """untuned_all, and in the object branch a disc of free ground where the untuned map peaks."""
    mask = untuned_all(e)
    _, background, _, _ = parts(e["base"])
    if (mask & background).sum() > 0.5 * background.sum():
        return mask
    spread = _to_pixels(untuned_map(e["name"]))
    free = background & ~grow(~background, 3 + radius // 2)
    if not free.any():
        return mask
    smooth = ndimage.uniform_filter(spread, 2 * radius - 1)
    y, x = np.unravel_index(np.where(free, smooth, -1).argmax(), spread.shape)
    yy, xx = np.mgrid[: spread.shape[0], : spread.shape[1]]
    return mask | (((yy - y) ** 2 + (xx - x) ** 2 <= radius**2) & background)


RULES = {
    "q2": q2,
    "obj0": lambda e: whole_true_object(e, 0),
    "obj2": lambda e: whole_true_object(e, 2),
    "obj4": lambda e: whole_true_object(e, 4),
    "branch_oracle": branch_oracle,
    "select_oracle": lambda e: (
        keep_one(e, q2(e), truth_score) if e["kind"] not in ("background", "add") else q2(e)
    ),
    "select_tuned": lambda e: keep_one(e, q2(e), tuned_score),
    "select_untuned": lambda e: keep_one(e, q2(e), untuned_score),
    "select_att8": lambda e: keep_one(e, q2(e), attention_score),
    "untuned_all": untuned_all,
    "blob6": lambda e: blob(e, 6),
    "blob9": lambda e: blob(e, 9),
}


# --- steps ----------------------------------------------------------------------------------------


def dump_scenes(split, scenes, count):
    """The untuned reading's raw map of every edit (the product's own path, spied on)."""
    torch.set_num_threads(1)
    import unitune.sample_batches as batches
    from unitune import Editor
    from unitune.benchmark.edits import edit_set
    from unitune.shapes.world import render_pil

    maps, region_mask = [], batches.region_mask

    def spy(difference, regions, ratio):
        maps.append(difference[0, 0].detach().cpu().numpy())
        return region_mask(difference, regions, ratio)

    batches.region_mask = spy
    editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{split}")
    settings = replace(
        editor.default_edit_settings(), localize="auto", mask_regions=True, mask_reading="untuned"
    )
    edits = edit_set(split, count)
    for scene in scenes:
        scene_edits = [e for e in edits if e.scene == scene]
        maps.clear()
        editor.edit(
            render_pil(scene_edits[0].base), [e.prompt for e in scene_edits], replace(settings, seed=scene)
        )
        names = np.array([e.name for e in scene_edits])
        np.savez(UNTUNED / f"{split}-{scene}.npz", differences=np.stack(maps), names=names)


def choice_table():
    """How often each signal picks the edited object, on two-object scenes (object edits)."""
    signals = {
        "tuned map": tuned_score,
        "untuned map": untuned_score,
        "attention (tuned, 8 x 8)": attention_score,
    }
    right, total = Counter(), Counter()
    for split in ("validation", "test"):
        for e in load_edits(TUNED, split):
            _, _, objects, count = parts(e["base"])
            if e["kind"] not in ("colour", "shape", "size") or count != 2:
                continue
            answer = int(np.argmax([truth_score(e, objects == k) for k in (1, 2)]))
            for name, score in signals.items():
                right[(name, e["kind"])] += int(np.argmax([score(e, objects == k) for k in (1, 2)]) == answer)
            total[e["kind"]] += 1
    kinds = sorted(total)
    lines = [
        "| signal | " + " | ".join(f"{k} ({total[k]})" for k in kinds) + " |",
        "|---" * (len(kinds) + 1) + "|",
    ]
    lines += [f"| {n} | " + " | ".join(str(right[(n, k)]) for k in kinds) + " |" for n in signals]
    return "\n".join(lines)


def edit_scenes(split, scenes, count, rules):
    torch.set_num_threads(1)
    from PIL import Image

    from unitune import Editor
    from unitune.benchmark import metrics
    from unitune.benchmark.edits import edit_set
    from unitune.benchmark.methods import to_array
    from unitune.shapes.world import render, render_pil

    editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{split}")
    defaults = replace(editor.default_edit_settings(), localize="off", mask_regions=False, mask_guidance=10.0)
    edits, rows = edit_set(split, count), []
    for scene in scenes:
        scene_edits = [e for e in edits if e.scene == scene]
        dumped = list(load_edits(TUNED, split, scene))
        base, pixels = render_pil(scene_edits[0].base), render(scene_edits[0].base)
        for name in rules:
            masks = [RULES[name](d) for d in dumped]
            images = [Image.fromarray(m.astype(np.uint8) * 255) for m in masks]
            prompts = [e.prompt for e in scene_edits]
            results = editor.edit(base, prompts, replace(defaults, seed=scene), mask=images)
            for edit, result, mask, d in zip(scene_edits, results, masks, dumped, strict=True):
                scores = metrics.score(to_array(result.image), edit, pixels, render(edit.target))
                rows.append(
                    {
                        "scene": scene,
                        "edit": edit.name,
                        "kind": edit.kind,
                        "config": name,
                        "iou": iou(mask, truth(d)),
                        "cover": float(mask.mean()),
                        **scores,
                    }
                )
    return rows


def report(path):
    from scipy.stats import binomtest

    by = defaultdict(dict)
    for row in map(json.loads, Path(path).read_text().splitlines()):
        by[row["config"]][row["edit"]] = row
    old, lines = by.get("q2"), []
    for name, rows in by.items():
        kinds = Counter()
        for r in rows.values():
            kinds[r["kind"]] += r["success"]
        line = f"{name}: {sum(kinds.values()):.0f} / {len(rows)}, " + ", ".join(
            f"{k} {kinds[k]:.0f}" for k in sorted(kinds)
        )
        if old and name != "q2":
            wins = sum(r["success"] > old[k]["success"] for k, r in rows.items())
            losses = sum(r["success"] < old[k]["success"] for k, r in rows.items())
            p = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
            line += f"; vs q2 {wins} / {losses} (p = {p:.2g})"
        lines.append(line)
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("dump", "choice", "edit", "report"))
    parser.add_argument("records", nargs="?")
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--rules", nargs="+", default=["q2"], choices=list(RULES))
    parser.add_argument("--out", default="runs/object-choice.jsonl")
    args = parser.parse_args()
    if args.step == "choice":
        return print(choice_table())
    if args.step == "report":
        return print(report(args.records))
    shares = [list(range(args.scenes))[k::2] for k in range(2)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        if args.step == "dump":
            UNTUNED.mkdir(parents=True, exist_ok=True)
            for future in [pool.submit(dump_scenes, args.split, s, args.scenes) for s in shares]:
                future.result()
            return None
        futures = [pool.submit(edit_scenes, args.split, s, args.scenes, args.rules) for s in shares]
        rows = [row for future in futures for row in future.result()]
    with open(args.out, "a") as out:
        out.write("".join(json.dumps(row) + "\n" for row in rows))
    print(report(args.out))
    return None


if __name__ == "__main__":
    main()
