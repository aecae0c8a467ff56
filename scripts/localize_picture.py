"""docs/localize.md's picture: one edit of the example image without localisation, with the automatic
mask (the embedded model's default: snapped to the image's regions), and with a mask drawn by hand (each
mask beside its edit), embedded model, its default tune.

Usage: HF_HUB_OFFLINE=1 python scripts/localize_picture.py   (writes docs/images/localize.png)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from unitune import Editor

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src/unitune/assets/examples/shapes.png"
PROMPT = "on a green background"
SCALE, GAP, LABEL = 3, 6, 26


def hand_mask(base: Image.Image) -> Image.Image:
    """Everything but the disc may change: what a user paints for a background edit (white = change)."""
    pixels = np.asarray(base.convert("RGB"), dtype=np.int16)
    disc = np.abs(pixels - pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]).sum(axis=-1) < 60
    return Image.fromarray(np.where(disc, 0, 255).astype(np.uint8), mode="L")


def main() -> None:
    editor = Editor.load()
    base = editor.prepare_image(EXAMPLE)
    settings = replace(editor.default_edit_settings(), strength=1.0, seed=0)
    [plain] = editor.edit(base, PROMPT, replace(settings, localize="off"))
    [auto] = editor.edit(base, PROMPT, replace(settings, localize="auto", mask_composite=True))
    [user] = editor.edit(base, PROMPT, replace(settings, mask_composite=True), mask=hand_mask(base))
    tiles = [
        (base, "base"),
        (plain.image, "--localize off"),
        (auto.mask, "automatic mask"),
        (auto.image, "default (auto)"),
        (user.mask, "your mask"),
        (user.image, "--mask FILE"),
    ]
    size = base.width * SCALE
    sheet = Image.new("RGB", (len(tiles) * (size + GAP) - GAP, size + LABEL), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, text) in enumerate(tiles):
        x = index * (size + GAP)
        draw.text((x, 2), text, fill="black")
        sheet.paste(image.convert("RGB").resize((size, size), Image.NEAREST), (x, LABEL))
    draw.text((0, 13), f'"{PROMPT}", strength 1, exact base pixels outside the mask', fill="gray")
    out = ROOT / "docs/images/localize.png"
    sheet.save(out)
    print(out)


if __name__ == "__main__":
    main()
