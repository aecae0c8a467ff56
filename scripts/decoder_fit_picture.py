"""docs/images/decoder-fit.png: what the decoder fit (`--decoder-steps 50`) and its gate change, on the first
validation scenes of the edit benchmark (not chosen). Per scene, one row: the base; R alone from pure
noise decoded by the model's decoder and by the fitted one behind the gate; the scene's colour edit (the
model's default dials) decoded by the model's decoder, the fitted one without a gate and behind the gate
(0.3). The samples are the same latents; only the decoding differs. The analyzer's verdict and PSNR to
the base (R) or the target (edit) are written under each image.

Usage: HF_HUB_OFFLINE=1 python scripts/decoder_fit_picture.py [--scenes 3] [--out docs/images/decoder-fit.png]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import psnr, score
from unitune.shapes.world import render, render_pil

CELL, TEXT = 128, 30


def tile(image: Image.Image, caption: str) -> Image.Image:
    canvas = Image.new("RGB", (CELL, CELL + TEXT), "white")
    canvas.paste(image.convert("RGB").resize((CELL, CELL), Image.NEAREST), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(caption.split("\n")):
        draw.text((3, CELL + 2 + 13 * number), line, fill="black")
    return canvas


VARIANTS = {"model": "model decoder", "fitted": "fitted, no gate", "gated": "fitted, gate 0.3"}


def row(editor, number: int, scene) -> list[Image.Image]:
    base = render_pil(scene)
    edit = next(e for e in edits_for_scene("validation", number, scene) if e.kind == "colour")
    tune = replace(editor.resolve_tune(None), decoder_steps=50)
    r_alone = EditSettings(guidance=3.0, strength=1.0, steps=20, seed=number, decoder_gate=0.3)
    dials = replace(editor.default_edit_settings(), steps=20, seed=number, decoder_gate=0.3)
    target = np.asarray(render(edit.target))
    tiles = [tile(base, f"scene {number}: base\n{edit.prompt}")]
    images = {}
    for variant in VARIANTS:
        gate = 0.0 if variant == "fitted" else 0.3
        editor.edit(base, [""], r_alone, tune)  # the tune applied, its fitted decoder in place
        with editor.weights.model_decoder() if variant == "model" else _nothing():
            images[variant] = (
                editor.edit(base, [""], replace(r_alone, decoder_gate=gate), tune)[0].image,
                editor.edit(base, [edit.prompt], replace(dials, decoder_gate=gate), tune)[0].image,
            )
    for variant in ("model", "gated"):
        r, _ = images[variant]
        value = psnr(np.asarray(r.convert("RGB")), np.asarray(base.convert("RGB")))
        tiles.append(tile(r, f"R, {VARIANTS[variant]}\n{value:.1f} dB to the base"))
    for variant in VARIANTS:
        _, edited = images[variant]
        pixels = np.asarray(edited.convert("RGB"))
        verdict = "success" if score(pixels, edit)["success"] else "fail"
        tiles.append(tile(edited, f"edit, {VARIANTS[variant]}\n{verdict}, {psnr(pixels, target):.1f} dB"))
    return tiles


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--out", default="docs/images/decoder-fit.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        editor = Editor.load(None, device="cpu", cache_dir=cache)
        rows = [row(editor, n, s) for n, s in enumerate(base_scenes("validation", args.scenes))]
    sheet = Image.new("RGB", (CELL * len(rows[0]), (CELL + TEXT) * len(rows)), "white")
    for y, tiles in enumerate(rows):
        for x, image in enumerate(tiles):
            sheet.paste(image, (x * CELL, y * (CELL + TEXT)))
    sheet.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
