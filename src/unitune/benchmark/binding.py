"""Does the tune bind the image? After tuning on a base scene, sample the rare prompt R alone (no edit)
and compare with the base: the analyzer's reading (same background, and every object's shape, colour,
size) and PSNR in dB. UniTune's premise is that R *is* the image after the tune (arXiv 2210.09477, 3)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from ..shapes.analyzer import analyze, same_reading
from .metrics import psnr

BINDING_STRENGTHS = (1.0, 0.8)
CEILING = "autoencoder"  # the binding rows' family for the round trip through the model's autoencoder


def measure_binding(editor, base: Image.Image, tune, edit, strengths=BINDING_STRENGTHS) -> list[dict]:
    """Tune on `base` with `tune` (or reuse the cached tune), then sample R alone at each strength (the
    other dials from `edit`, no interpolation): one row per strength with `same_scene` and `psnr`."""
    truth, base_pixels = analyze(base), np.asarray(base.convert("RGB"))
    rows = []
    for strength in strengths:
        settings = replace(edit, strength=strength, interpolation=0.0, num_images=1)
        image = editor.edit(base, "", settings, tune)[0].image.convert("RGB")
        if image.size != base.size:  # a model of another native size: read at the scene's own
            image = image.resize(base.size, Image.BICUBIC)
        pixels = np.asarray(image)
        same = same_reading(analyze(pixels), truth)
        rows.append({"strength": strength, "same_scene": same, "psnr": psnr(pixels, base_pixels)})
    return rows


def autoencoder_roundtrip(editor, base: Image.Image) -> dict:
    """The base encoded and decoded by the model's autoencoder, read and scored as R's samples are: no
    tune can redraw a scene better than its own latent decodes, so this is the binding's ceiling."""
    from ..sampling import decode, to_pil
    from ..tuning import encode_latent

    editor.restore_base()  # the model's own decoder, not a tune's fitted one
    latent = encode_latent(editor.pipe, editor.prepare_image(base), editor.runtime)
    pixels = np.asarray(to_pil(decode(editor.pipe, latent, editor.runtime))[0])
    base_pixels = np.asarray(base.convert("RGB"))
    same = same_reading(analyze(pixels), analyze(base_pixels))
    row = {"family": CEILING, "guidance": None, "strength": 1.0}
    return {**row, "same_scene": same, "psnr": psnr(pixels, base_pixels)}


def summarise_binding(records: list[dict]) -> dict[float, dict[str, float]]:
    """Per strength: the share of scenes read back identical, the median and mean PSNR to the base, and
    the share of scenes that are both identical and >= 28 dB."""
    summary = {}
    for strength in sorted({r["strength"] for r in records}, reverse=True):
        rows = [r for r in records if r["strength"] == strength]
        values = [r["psnr"] for r in rows]
        summary[strength] = {
            "same_scene": float(np.mean([r["same_scene"] for r in rows])),
            "bound": float(np.mean([r["same_scene"] and r["psnr"] >= 28 for r in rows])),
            "psnr_median": float(np.median(values)),
            "psnr_mean": float(np.mean(values)),
            "psnr_28_share": float(np.mean([value >= 28 for value in values])),
            "scenes": len(rows),
        }
    return summary
