"""A guidance x strength grid for one prompt, and a labelled contact sheet of it."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from .errors import UnituneError
from .outputs import EditResult

LABEL_HEIGHT = 14
MARGIN = 4


@dataclass
class SweepResult:
    """Results in row-major order (one row per strength, one column per guidance) and the sheet."""

    results: list[EditResult]
    guidances: list[float]
    strengths: list[float]
    sheet: Image.Image
    picked: int | None = None  # the automatic dial's pick (an index into results), when asked for


def parse_floats(text: str, what: str) -> list[float]:
    """Comma- (or semicolon-) separated numbers, as users type a sweep's guidances or strengths;
    UnituneError naming `what` (the flag or field) for anything else, or for no number at all."""
    try:
        values = [float(v) for v in (text or "").replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise UnituneError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise UnituneError(f"{what}: give at least one value")
    return values


def grid(guidances: list[float], strengths: list[float]) -> list[tuple[float, float]]:
    """(guidance, strength) cells, row-major: rows are strengths, columns guidances."""
    return [(g, s) for s in strengths for g in guidances]


def contact_sheet(
    images: list[Image.Image], guidances: list[float], strengths: list[float], picked: int | None = None
) -> Image.Image:
    """Tile the grid's images, each captioned with its guidance and strength; a red frame and "auto"
    mark the image at index `picked`."""
    width, height = images[0].size
    cell_w, cell_h = width + MARGIN, height + LABEL_HEIGHT + MARGIN
    sheet = Image.new("RGB", (cell_w * len(guidances) + MARGIN, cell_h * len(strengths) + MARGIN), "white")
    draw = ImageDraw.Draw(sheet)
    for index, ((guidance, strength), image) in enumerate(
        zip(grid(guidances, strengths), images, strict=True)
    ):
        row, col = divmod(index, len(guidances))
        x, y = MARGIN + col * cell_w, MARGIN + row * cell_h
        mark = " auto" if index == picked else ""
        draw.text((x, y), f"g={guidance:g} s={strength:g}{mark}", fill="red" if mark else "black")
        sheet.paste(image, (x, y + LABEL_HEIGHT))
        if mark:
            box = (x - 2, y + LABEL_HEIGHT - 2, x + width + 1, y + LABEL_HEIGHT + height + 1)
            draw.rectangle(box, outline="red", width=2)
    return sheet
