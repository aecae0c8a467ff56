"""Where else an automatic mask could come from (issue 36; docs/lab/auto-masks.md): the tuned model's
DiffEdit map snapped to the base image's segments, the edit words' cross-attention maps, and the
unlocalised edit's own change, each scored by its IoU with the true changed region per edit kind and,
given to the editor as a user mask, by success.

    python bench/mask_sources.py dump --split validation --scenes 30      # readings per edit, ~2 min
    python bench/mask_sources.py iou --split validation                   # IoU tables, seconds
    python bench/mask_sources.py edit --split validation --scenes 30 --rules change de3 ...  # ~1 min/rule

`dump` keeps, per edit, the raw DiffEdit difference map (16 x 16, before the threshold), the inserted words'
cross-attention maps (8 x 8 and 4 x 4 layers, averaged over heads, layers and draws) from the same
reading, and the unlocalised default edit's pixels. The rows of `edit` are bench/localize.py's
(`python bench/localize.py --report FILE` prints them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

FILLERS = {"a</w>", "on</w>", "and</w>", "in</w>", "as</w>", "with</w>", "the</w>"}


# --- dump ---------------------------------------------------------------------------------------


def dump_scenes(split: str, scenes: list[int], count: int, folder: Path) -> None:
    torch.set_num_threads(1)
    import unitune.sample_batches as batches
    from unitune import Editor
    from unitune.benchmark.edits import edit_set
    from unitune.benchmark.methods import to_array
    from unitune.shapes.world import render, render_pil

    editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{split}")
    readings = _spy_on_mask_readings(editor, batches)
    defaults = editor.default_edit_settings()
    rare = editor.resolve_tune(None).rare_prompt
    edits = edit_set(split, count)
    for scene in scenes:
        scene_edits = [e for e in edits if e.scene == scene]
        base, prompts = render_pil(scene_edits[0].base), [e.prompt for e in scene_edits]
        settings = replace(defaults, seed=scene)
        outputs = [to_array(r.image) for r in editor.edit(base, prompts, settings)]
        readings.clear()
        editor.edit(base, prompts, replace(settings, localize="auto"))
        assert len(readings) == len(prompts), "one automatic mask per edit, in order"
        record = {
            "base": render(scene_edits[0].base),
            "targets": np.stack([render(e.target) for e in scene_edits]),
            "outputs": np.stack(outputs),
            "differences": np.stack([r["difference"] for r in readings]),
            "names": np.array([e.name for e in scene_edits]),
            "kinds": np.array([e.kind for e in scene_edits]),
        }
        for i, (edit, reading) in enumerate(zip(scene_edits, readings, strict=True)):
            words = _inserted_tokens(editor.pipe.tokenizer, rare, edit.prompt)
            record[f"words_{i}"] = np.array([w for _, w in words])
            for side, maps in reading["attention"].items():
                record[f"attention{side}_{i}"] = maps[..., [j for j, _ in words]].transpose(2, 0, 1)
        np.savez(folder / f"{split}-{scene}.npz", **record)
        print(split, scene, flush=True)


def _inserted_tokens(tokenizer, rare: str, words: str) -> list[tuple[int, str]]:
    """(position, token) of the edit words in "R words" (after R's tokens, before the end token)."""
    ids = tokenizer(f"{rare} {words}").input_ids
    first = len(tokenizer(rare).input_ids) - 1
    return [(j, tokenizer.convert_ids_to_tokens(ids[j])) for j in range(first, len(ids) - 1)]


def _spy_on_mask_readings(editor, batches) -> list[dict]:
    """Each automatic mask estimated from now on appends {difference: (16, 16) before the threshold,
    attention: {side: (side, side, 77)}} from the edit's reading (the first UNet call of the estimate)."""
    from diffusers.models.attention_processor import AttnProcessor

    import unitune.localize as localize

    readings: list[dict] = []
    state = {"on": False, "call": 0, "probs": []}

    class Recording(AttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
            if state["on"] and encoder_hidden_states is not None:
                flat = hidden_states if hidden_states.ndim == 3 else hidden_states.flatten(2).transpose(1, 2)
                query = attn.head_to_batch_dim(attn.to_q(flat))
                key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
                probs = attn.get_attention_scores(query, key, None)
                rows = encoder_hidden_states.shape[0]
                state["probs"].append((state["call"], probs.reshape(rows, -1, *probs.shape[1:]).mean(1)))
            return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)

    unet = editor.pipe.unet
    unet.set_attn_processor(Recording())
    unet.register_forward_pre_hook(lambda *_: state.__setitem__("call", state["call"] + 1))
    threshold, estimate = localize.threshold, batches.estimate_mask

    def recording_threshold(difference, *args):
        readings[-1]["difference"] = difference[0, 0].cpu().numpy()
        return threshold(difference, *args)

    def recording_estimate(*args, **kwargs):
        state.update(on=True, probs=[])
        first_call = state["call"] + 1  # the edit's reading; R's follows, or is cached
        readings.append({})
        try:
            return estimate(*args, **kwargs)
        finally:
            state["on"] = False
            by_side = defaultdict(list)
            for call, probs in state["probs"]:
                if call == first_call:
                    side = int(probs.shape[1] ** 0.5)
                    by_side[side].append(probs.mean(0).reshape(side, side, -1))
            readings[-1]["attention"] = {s: torch.stack(v).mean(0).numpy() for s, v in by_side.items()}

    localize.threshold, batches.estimate_mask = recording_threshold, recording_estimate
    return readings


# --- mask rules ---------------------------------------------------------------------------------


def load_edits(folder: Path, split: str, scene: int | None = None):
    pattern = f"{split}-{scene}.npz" if scene is not None else f"{split}-*.npz"
    for path in sorted(folder.glob(pattern)):
        z = np.load(path)
        for i, name in enumerate(z["names"]):
            yield {
                "base": z["base"],
                "target": z["targets"][i],
                "output": z["outputs"][i],
                "difference": z["differences"][i],
                "attention8": z[f"attention8_{i}"],
                "attention4": z[f"attention4_{i}"],
                "words": list(z[f"words_{i}"]),
                "kind": str(z["kinds"][i]),
                "name": str(name),
            }


def _to_pixels(cells: np.ndarray, mode: str = "bilinear") -> np.ndarray:
    grid = torch.from_numpy(np.ascontiguousarray(cells, dtype=np.float32))[None, None]
    extra = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(grid, size=(64, 64), mode=mode, **extra)[0, 0].numpy()


def diffedit_rule(edit: dict, ratio: float = 3.0, cut: float = 0.5, dilation: int = 0) -> np.ndarray:
    """unitune.localize.threshold on the dumped map, at pixel size (as the editor's automatic mask)."""
    from unitune.localize import threshold

    mask = threshold(torch.from_numpy(edit["difference"])[None, None], ratio, cut, dilation)
    return _to_pixels(mask[0, 0].numpy(), "nearest") > 0.5


def segments(base: np.ndarray) -> np.ndarray:
    """The base image's regions (Felzenszwalb's graph segmentation, scikit-image): about 4.5 per
    shapes-world scene (background, objects, a few texture patches)."""
    from skimage.segmentation import felzenszwalb

    return felzenszwalb(base, scale=500, sigma=1.5, min_size=30)


def snapped_rule(edit: dict, above_mean: float = 1.0, grow: int = 1) -> np.ndarray:
    """The regions whose mean DiffEdit difference is above `above_mean` x the image's mean, grown."""
    regions, difference = segments(edit["base"]), _to_pixels(edit["difference"])
    labels = np.unique(regions)
    means = ndimage.mean(difference, regions, labels)
    mask = np.isin(regions, labels[means > above_mean * difference.mean()])
    return ndimage.binary_dilation(mask, iterations=grow) if grow else mask


def attention_rule(edit: dict, layers: str = "8", relative: float = 0.5, fillers: bool = False) -> np.ndarray:
    """Prompt-to-Prompt's local blend: the edit words' cross-attention (fillers such as "a" left out
    unless `fillers`), rescaled to [0, 1], above `relative`."""
    keep = [j for j, w in enumerate(edit["words"]) if fillers or w not in FILLERS]
    maps = [_to_pixels(edit[f"attention{side}"][keep].mean(0)) for side in layers.split("+")]
    attention = sum((m - m.min()) / (m.max() - m.min() + 1e-9) for m in maps) / len(maps)
    return attention > relative


def change_rule(edit: dict, level: int = 40, grow: int = 0) -> np.ndarray:
    """Where the unlocalised edit changed the base by more than `level` (of 255) in some channel."""
    change = np.abs(edit["output"].astype(int) - edit["base"].astype(int)).max(-1) > level
    return ndimage.binary_dilation(change, iterations=grow) if grow else change


def snapped_change_rule(edit: dict, share: float = 0.5) -> np.ndarray:
    """The regions more than `share` changed by the unlocalised edit, with its other changed pixels
    (opened once), grown by one pixel."""
    change, regions = change_rule(edit), segments(edit["base"])
    labels = np.unique(regions)
    changed = ndimage.mean(change.astype(float), regions, labels)
    mask = np.isin(regions, labels[changed > share]) | ndimage.binary_opening(change)
    return ndimage.binary_dilation(mask)


RULES = {
    "de3": diffedit_rule,
    "de1.5-d1": lambda e: diffedit_rule(e, 1.5, 0.5, 1),
    "snapped": snapped_rule,
    "snapped-1.5": lambda e: snapped_rule(e, 1.5),
    "snapped-0.7": lambda e: snapped_rule(e, 0.7),
    "attention8-0.3": lambda e: attention_rule(e, "8", 0.3),
    "attention8": attention_rule,
    "attention8+4": lambda e: attention_rule(e, "8+4"),
    "attention8-fillers": lambda e: attention_rule(e, "8", 0.5, True),
    "change": change_rule,
    "change-g2": lambda e: change_rule(e, 40, 2),
    "change-25-g2": lambda e: change_rule(e, 25, 2),
    "snapped-change": snapped_change_rule,
    "change|de3": lambda e: change_rule(e) | diffedit_rule(e),
}


def truth_of(edit: dict) -> np.ndarray:
    from unitune.benchmark.metrics import change_mask

    return change_mask(edit["base"], edit["target"], 0)


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else float("nan")


def iou_table(folder: Path, split: str, rules: list[str]) -> str:
    scores = defaultdict(lambda: defaultdict(list))
    for edit in load_edits(folder, split):
        truth = truth_of(edit)
        for rule in rules:
            mask = RULES[rule](edit)
            scores[rule][edit["kind"]].append((iou(mask, truth), mask.mean()))
    kinds = sorted({k for by in scores.values() for k in by})
    lines = ["| rule | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for rule, by in scores.items():
        cells = [
            f"{np.nanmean([a for a, _ in by[k]]):.2f} ({np.mean([c for _, c in by[k]]):.2f})" for k in kinds
        ]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- edit with the rules' masks ------------------------------------------------------------------


def edit_scenes(split: str, scenes: list[int], count: int, folder: Path, rules: list[str]) -> list[dict]:
    torch.set_num_threads(1)
    from PIL import Image

    from unitune import Editor
    from unitune.benchmark import metrics
    from unitune.benchmark.edits import edit_set
    from unitune.benchmark.methods import to_array
    from unitune.shapes.world import render, render_pil

    editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{split}")
    defaults = editor.default_edit_settings()
    edits = edit_set(split, count)
    rows = []
    for scene in scenes:
        scene_edits = [e for e in edits if e.scene == scene]
        base, base_pixels = render_pil(scene_edits[0].base), render(scene_edits[0].base)
        for edit, readings in zip(scene_edits, load_edits(folder, split, scene), strict=True):
            for rule in rules:
                mask = RULES[rule](readings)
                mask = mask if mask.any() else np.ones_like(mask)  # an empty mask would keep everything
                image = Image.fromarray(mask.astype(np.uint8) * 255)
                result = editor.edit(base, [edit.prompt], replace(defaults, seed=scene), mask=image)[0]
                row = {"split": split, "scene": scene, "kind": edit.kind, "edit": edit.name, "config": rule}
                row.update(metrics.score(to_array(result.image), edit, base_pixels, render(edit.target)))
                row.update(mask_iou=iou(mask, truth_of(readings)), mask_coverage=float(mask.mean()))
                rows.append(row)
        print(split, scene, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("dump", "iou", "edit"))
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=Path("runs/mask-sources"))
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--out", type=Path, default=Path("runs/mask-sources.jsonl"))
    args = parser.parse_args()
    if args.step == "iou":
        print(iou_table(args.dir, args.split, args.rules))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    shares = [list(range(args.scenes))[k::2] for k in range(2)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        if args.step == "dump":
            for future in [pool.submit(dump_scenes, args.split, s, args.scenes, args.dir) for s in shares]:
                future.result()
            return
        futures = [pool.submit(edit_scenes, args.split, s, args.scenes, args.dir, args.rules) for s in shares]
        rows = [row for future in futures for row in future.result()]
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {args.out}; python bench/localize.py --report {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
