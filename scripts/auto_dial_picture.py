"""docs/images/auto-dial.png: what `unitune edit --auto` does on the example image, one edit a row: the
base, the dial's candidates at the model's other default dials (the same seed; unitune.auto.candidates:
three strengths and, for the embedded model, strength 1 with model guidance), each with the untuned
model's evidence, and the pick framed in red. The candidates and the `--auto` edit are sampled one image
at a time (`sample_batch` 1), so the images shown are exactly the ones the dial chose among, and the
pick is the image `--auto` returns.

Usage: HF_HUB_OFFLINE=1 python scripts/auto_dial_picture.py [prompt ...]   (embedded model, CPU, ~1 min)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageDraw

from unitune import Editor
from unitune.auto import candidates

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src/unitune/assets/examples/shapes.png"
PROMPTS = ("on a green background", "a yellow circle", "a red square", "a small red circle")
SCALE, GAP, TEXT = 3, 6, 14  # TEXT: the height of a line of labels


@dataclass(frozen=True)
class Cell:
    image: Image.Image
    title: str  # above the image
    footer: str = ""  # below it
    picked: bool = False


def row_cells(editor: Editor, prompt: str) -> list[Cell]:
    """The base and each candidate of `prompt`, with its evidence; the dial's pick marked."""
    settings = replace(editor.default_edit_settings(), auto=True, sample_batch=1)
    [auto] = editor.edit(EXAMPLE, prompt, settings)
    dial = auto.settings["auto_dial"]
    cells = [Cell(Image.open(EXAMPLE).convert("RGB"), "base")]
    for option, signals in zip(candidates(settings), dial["candidates"], strict=True):
        [result] = editor.edit(EXAMPLE, prompt, replace(option, auto=False))
        picked = (option.strength, option.model_guidance) == (
            dial["picked_strength"],
            dial["picked_model_guidance"],
        )
        title = f"s{option.strength:g}" + (f" mg{option.model_guidance:g}" if option.model_guidance else "")
        footer = f"evidence {1000 * signals['evidence']:+.1f}e-3"
        cells.append(Cell(result.image, title + (" (auto)" if picked else ""), footer, picked))
    return cells


def figure(rows: list[tuple[str, list[Cell]]]) -> Image.Image:
    size = rows[0][1][0].image.width * SCALE
    row_height = 2 * TEXT + size + TEXT + GAP  # prompt, title, image, footer
    columns = max(len(cells) for _, cells in rows)
    sheet = Image.new("RGB", (columns * (size + GAP) + GAP, len(rows) * row_height + GAP), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (prompt, cells) in enumerate(rows):
        top = GAP + r * row_height
        draw.text((GAP, top), f'"{prompt}"', fill="black")
        for c, cell in enumerate(cells):
            x, y = GAP + c * (size + GAP), top + 2 * TEXT  # the image's top left corner
            draw.text((x, y - TEXT), cell.title, fill="red" if cell.picked else "black")
            sheet.paste(cell.image.resize((size, size), Image.NEAREST), (x, y))
            draw.text((x, y + size + 1), cell.footer, fill="black")
            if cell.picked:
                draw.rectangle((x - 2, y - 2, x + size + 1, y + size + 1), outline="red", width=2)
    return sheet


def main() -> None:
    prompts = sys.argv[1:] or PROMPTS
    editor = Editor.load()
    rows = [(prompt, row_cells(editor, prompt)) for prompt in prompts]
    out = ROOT / "docs/images/auto-dial.png"
    figure(rows).save(out)
    print(out)


if __name__ == "__main__":
    main()
