"""The README's demo picture: the example image, the demo's mask and its edit, side by side, enlarged 4x.

Usage: python scripts/demo_picture.py out/demo   (after scripts/demo.sh; writes docs/images/demo.png)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SCALE, GAP, LABEL = 4, 8, 16


def main() -> None:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo")
    entry = json.loads((demo / "manifest.json").read_text())["images"][0]
    base = Image.open(ROOT / "src/unitune/assets/examples/shapes.png").convert("RGB")
    edit_path = demo / entry["file"]
    s = entry["settings"]
    guidance = s["mask_guidance"] if s.get("mask_source") and s.get("mask_guidance") else s["guidance"]
    panels = [(base, "base")]
    mask_path = edit_path.with_name(edit_path.stem + "-mask.png")
    if mask_path.exists():
        panels.append((Image.open(mask_path).convert("RGB"), "mask (white: may change)"))
    panels.append(
        (Image.open(edit_path).convert("RGB"), f'"{s["prompt"]}" (g{guidance:g}, seed {s["seed"]})')
    )
    size = base.width * SCALE
    sheet = Image.new("RGB", (len(panels) * (size + GAP) - GAP, size + LABEL), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, text) in enumerate(panels):
        x = index * (size + GAP)
        draw.text((x, 2), text, fill="black")
        sheet.paste(image.resize((size, size), Image.NEAREST), (x, LABEL))
    out = ROOT / "docs/images/demo.png"
    sheet.save(out)
    print(out)


if __name__ == "__main__":
    main()
