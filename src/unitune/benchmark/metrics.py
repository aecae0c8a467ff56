"""Scores of one edited image against its known right answer: pure functions of arrays and scenes.

expressive: the analyzer reads the requested attribute in the output.
preserved:  every other attribute is unchanged: the background, each object matched by position
            (centre within 4 px) with its shape, colour and size, and no extra objects.
success:    both.
Pixel distances: PSNR / SSIM to the ideal target, and to the base image on the region the edit must
not touch (everything outside the base/target difference, dilated by a few pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..shapes.analyzer import ReadObject, ReadScene, analyze
from ..shapes.world import render
from .edits import Edit

CENTRE_TOLERANCE = 4.0  # pixels
PSNR_CAP = 60.0  # dB; identical images would be inf, which no mean survives
MASK_DILATION = 2  # pixels around the changed region that count as "may change" (anti-aliasing, blur)
ATTRIBUTES = ("shape", "colour", "size")
REQUESTED = {"colour": "colour", "shape": "shape", "size": "size"}


@dataclass(frozen=True)
class Judgement:
    expressive: bool
    preserved: bool

    @property
    def success(self) -> bool:
        return self.expressive and self.preserved


def match_by_position(read: ReadScene, target_objects, tolerance: float = CENTRE_TOLERANCE):
    """Greedy nearest-centre matching: for each target object the closest unused read object within
    `tolerance` px, or None. Returns (matches, leftover read objects)."""
    unused = list(read.objects)
    matches: list[ReadObject | None] = []
    for obj in target_objects:
        distances = [np.hypot(r.cx - obj.cx, r.cy - obj.cy) for r in unused]
        best = int(np.argmin(distances)) if distances else -1
        if best >= 0 and distances[best] <= tolerance:
            matches.append(unused.pop(best))
        else:
            matches.append(None)
    return matches, unused


def same(read: ReadObject | None, obj, attributes) -> bool:
    return read is not None and all(getattr(read, a) == getattr(obj, a) for a in attributes)


def judge(read: ReadScene, edit: Edit) -> Judgement:
    """Expressive and preserved for one read-back output (see the module docstring)."""
    target = edit.target
    kept = [obj for i, obj in enumerate(target.objects) if edit.kind != "add" or i != edit.index]
    matches, leftover = match_by_position(read, kept)
    background_ok = read.background == target.background
    if edit.kind == "add":
        # the new object may appear anywhere: it is whatever is left after matching the kept objects
        added = target.objects[edit.index]
        expressive = len(leftover) == 1 and same(leftover[0], added, ATTRIBUTES)
        extras = max(0, len(leftover) - 1)
    else:
        extras = len(leftover)
        if edit.kind == "background":
            expressive = background_ok
        else:
            expressive = same(matches[edit.index], target.objects[edit.index], (REQUESTED[edit.kind],))
    preserved = extras == 0 and (background_ok or edit.kind == "background")
    for i, (obj, match) in enumerate(zip(kept, matches, strict=True)):
        edited = edit.kind in REQUESTED and i == edit.index
        others = [a for a in ATTRIBUTES if not (edited and a == REQUESTED[edit.kind])]
        preserved = preserved and same(match, obj, others)
    return Judgement(bool(expressive), bool(preserved))


def change_mask(base: np.ndarray, target: np.ndarray, dilation: int = MASK_DILATION) -> np.ndarray:
    """(H, W) bool: where the edit may change pixels (base and target differ), dilated by `dilation` px."""
    changed = np.abs(base.astype(np.int16) - target.astype(np.int16)).max(axis=-1) > 0
    if dilation > 0 and changed.any():
        changed = ndimage.binary_dilation(changed, iterations=dilation)
    return changed


def true_region(edit, grow: int = 0, box: bool = False) -> np.ndarray:
    """(H, W) bool: the pixels the edit must change (its base and target rendered, where they differ),
    grown by `grow` px; with `box`, their bounding box. As a user's mask: the region a user would paint."""
    truth = change_mask(render(edit.base), render(edit.target), grow)
    if box and truth.any():
        rows, cols = np.flatnonzero(truth.any(axis=1)), np.flatnonzero(truth.any(axis=0))
        truth[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return truth


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images over `mask` (H, W) if given, capped at PSNR_CAP (identical images);
    nan for an empty mask."""
    if mask is not None and not mask.any():
        return float("nan")
    a, b = (a, b) if mask is None else (a[mask], b[mask])
    if np.array_equal(a, b):
        return PSNR_CAP
    return min(PSNR_CAP, float(peak_signal_noise_ratio(a, b, data_range=255)))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM of uint8 RGB images (7x7 windows), averaged over `mask` (H, W) if given."""
    value, full = structural_similarity(a, b, data_range=255, channel_axis=-1, full=True)
    if mask is None:
        return float(value)
    if not mask.any():
        return float("nan")
    return float(full.mean(axis=-1)[mask].mean())


def score(output: np.ndarray, edit: Edit, base: np.ndarray | None = None, target: np.ndarray | None = None):
    """Every metric of one edited image (uint8 (H, W, 3)) as a flat dict."""
    base = render(edit.base) if base is None else base
    target = render(edit.target) if target is None else target
    verdict = judge(analyze(output), edit)
    untouched = ~change_mask(base, target)
    return {
        "expressive": float(verdict.expressive),
        "preserved": float(verdict.preserved),
        "success": float(verdict.success),
        "psnr_target": psnr(output, target),
        "ssim_target": ssim(output, target),
        "psnr_base_untouched": psnr(output, base, untouched),
        "ssim_base_untouched": ssim(output, base, untouched),
    }
