"""docs/images/auto-dial.png: what `unitune edit --auto` does on the example image, one edit a row: the
base, the three candidate strengths at the model's other default dials (the same seed), each with the
untuned model's evidence, and the pick framed in red. Runs `Editor.sweep(..., auto=True)` over exactly
the dial's candidates (unitune.auto.AUTO_STRENGTHS), so the pick is the one `--auto` keeps.

Usage: HF_HUB_OFFLINE=1 python scripts/auto_dial_picture.py [prompt ...]   (embedded model, CPU, ~1 min)
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageDraw

from unitune import Editor
from unitune.auto import AUTO_STRENGTHS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src/unitune/assets/examples/shapes.png"
PROMPTS = ("on a green background", "a yellow circle", "a red square", "a small red circle")
SCALE, GAP, LABEL = 3, 6, 28


def row_images(editor: Editor, prompt: str) -> list[tuple[Image.Image, str, bool]]:
    """(image, caption, picked) for the base and each candidate of `prompt`."""
    settings = replace(editor.default_edit_settings(), auto=True)
    sweep = editor.sweep(EXAMPLE, prompt, [settings.guidance], list(AUTO_STRENGTHS), settings)
    cells = [(Image.open(EXAMPLE).convert("RGB"), "base", False)]
    for result in sweep.results:
        dial = result.settings["auto_dial"]
        caption = f"s{result.settings['strength']:g}\nevidence {1000 * dial['evidence']:+.1f}e-3"
        cells.append((result.image, caption, dial["picked"]))
    return cells


def figure(rows: list[tuple[str, list[tuple[Image.Image, str, bool]]]]) -> Image.Image:
    size = rows[0][1][0][0].width * SCALE
    row_height = LABEL + size + 14 + GAP
    sheet = Image.new("RGB", (4 * (size + GAP) + GAP, len(rows) * row_height + GAP), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (prompt, cells) in enumerate(rows):
        top = GAP + r * row_height
        draw.text((GAP, top), f'"{prompt}"', fill="black")
        for c, (image, caption, picked) in enumerate(cells):
            x, y = GAP + c * (size + GAP), top + 14
            draw.text(
                (x, y),
                caption.split("\n")[0] + (" (auto)" if picked else ""),
                fill="red" if picked else "black",
            )
            sheet.paste(image.resize((size, size), Image.NEAREST), (x, y + LABEL - 14))
            if "\n" in caption:
                draw.text((x, y + LABEL - 14 + size + 1), caption.split("\n")[1], fill="black")
            if picked:
                box = (x - 2, y + LABEL - 16, x + size + 1, y + LABEL - 14 + size + 1)
                draw.rectangle(box, outline="red", width=2)
    return sheet


def main() -> None:
    prompts = sys.argv[1:] or PROMPTS
    editor = Editor.load()
    rows = [(prompt, row_images(editor, prompt)) for prompt in prompts]
    out = ROOT / "docs/images/auto-dial.png"
    figure(rows).save(out)
    print(out)


if __name__ == "__main__":
    main()
