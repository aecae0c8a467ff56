"""Does the tune bind the image? After tuning on a base scene, sample the rare prompt R alone (no edit)
and compare with the base: the analyzer's reading (same background, and every object's shape, colour,
size) and PSNR in dB. UniTune's premise is that R *is* the image after the tune (arXiv 2210.09477, 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from unitune.shapes.analyzer import analyze
from unitune.shapes.world import Scene, render_pil

BINDING_STRENGTHS = (1.0, 0.8)


@dataclass(frozen=True)
class BindingRecord:
    scene: int
    strength: float
    same_scene: bool
    psnr: float


def same_reading(a, b) -> bool:
    signature = lambda r: (r.background, sorted((o.shape, o.colour, o.size) for o in r.objects))  # noqa: E731
    return signature(a) == signature(b)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / max(mse, 1e-10))


def measure_binding(
    editor, scenes: list[Scene], tune, edit, strengths=BINDING_STRENGTHS
) -> list[BindingRecord]:
    """Tune on each scene with `tune`, then sample R alone at each strength (other dials from `edit`)."""
    records = []
    for number, scene in enumerate(scenes):
        base = render_pil(scene)
        truth = analyze(base)
        for strength in strengths:
            settings = replace(edit, strength=strength, interpolation=0.0, num_images=1)
            image = editor.edit(base, "", settings, tune)[0].image
            pixels = np.asarray(image.convert("RGB"))
            same = same_reading(analyze(pixels), truth)
            records.append(BindingRecord(number, strength, same, psnr(pixels, np.asarray(base))))
    return records


def summarise_binding(records: list[BindingRecord]) -> dict[float, dict[str, float]]:
    """Per strength: the share of scenes read back identical, and the median and mean PSNR to the base."""
    summary = {}
    for strength in sorted({r.strength for r in records}, reverse=True):
        rows = [r for r in records if r.strength == strength]
        values = [r.psnr for r in rows]
        summary[strength] = {
            "same_scene": float(np.mean([r.same_scene for r in rows])),
            "psnr_median": float(np.median(values)),
            "psnr_mean": float(np.mean(values)),
            "psnr_28_share": float(np.mean([v >= 28 for v in values])),
            "scenes": len(rows),
        }
    return summary
