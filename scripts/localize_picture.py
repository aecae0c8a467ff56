"""docs/localize.md's pictures, embedded model, its default tune:

- localize.png: one edit of the example image without localisation, with the automatic mask (the
  embedded model's default: snapped to the image's regions), and with a mask drawn by hand (each mask
  beside its edit);
- localize-outline.png: a shape edit of a benchmark validation scene with the automatic mask as it is
  (a new outline: the object's box less its inside) and with the object's own mask (the rule off).

Usage: HF_HUB_OFFLINE=1 python scripts/localize_picture.py   (writes both)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from unitune import Editor, regions
from unitune.benchmark.edits import edit_set
from unitune.shapes.world import render_pil

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src/unitune/assets/examples/shapes.png"
PROMPT = "on a green background"
SCALE, GAP, LABEL = 3, 6, 26
OUTLINE_EDIT = "validation-020-shape"  # a black triangle made "a black circle"


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
    caption = f'"{PROMPT}", strength 1, exact base pixels outside the mask'
    save_sheet(tiles, caption, ROOT / "docs/images/localize.png")
    outline_picture(editor)


def outline_picture(editor: Editor) -> None:
    """A shape edit with the automatic mask, and with the object's own mask (`regions.OUTLINE_RATIO` set
    out of reach, as before the rule), seeded as the benchmark seeds it."""
    edit = next(e for e in edit_set("validation", 30) if e.name == OUTLINE_EDIT)
    base = render_pil(edit.base)
    settings = replace(editor.default_edit_settings(), seed=edit.scene)
    [outline] = editor.edit(base, edit.prompt, settings)
    ratio, regions.OUTLINE_RATIO = regions.OUTLINE_RATIO, float("inf")
    try:
        [own] = editor.edit(base, edit.prompt, settings)
    finally:
        regions.OUTLINE_RATIO = ratio
    tiles = [
        (base, "base"),
        (render_pil(edit.target), "target"),
        (outline.mask, "automatic mask"),
        (outline.image, "default (auto)"),
        (own.mask, "object's own mask"),
        (own.image, "with it"),
    ]
    caption = f'"{edit.prompt}": a new outline needs room round the object; its kept inside holds it'
    save_sheet(tiles, caption, ROOT / "docs/images/localize-outline.png")


def save_sheet(tiles: list, caption: str, out: Path) -> None:
    """The tiles side by side, enlarged, each under its label, the caption under the first labels."""
    size = tiles[0][0].width * SCALE
    sheet = Image.new("RGB", (len(tiles) * (size + GAP) - GAP, size + LABEL), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, text) in enumerate(tiles):
        x = index * (size + GAP)
        draw.text((x, 2), text, fill="black")
        sheet.paste(image.convert("RGB").resize((size, size), Image.NEAREST), (x, LABEL))
    draw.text((0, 13), caption, fill="gray")
    sheet.save(out)
    print(out)


if __name__ == "__main__":
    main()
