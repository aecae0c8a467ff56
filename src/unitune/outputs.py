"""Results and how they are written: PNGs carrying their settings, plus a JSON manifest per run.

Every PNG has a text chunk `unitune` with the JSON settings needed to reproduce it. All files are
written as the tune cache writes its own (`files.write_durably`): a temporary file in the target folder,
fsynced and moved into place with os.replace.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .files import write_durably

PNG_KEY = "unitune"


@dataclass
class EditResult:
    """One output image and every setting that produced it (model, seed, prompts, dials, tune key)."""

    image: Image.Image
    settings: dict = field(default_factory=dict)
    mask: Image.Image | None = None  # a localised edit's mask at the image's size (white = may change)


def save_png(image: Image.Image, path: Path, settings: dict) -> None:
    info = PngInfo()
    info.add_text(PNG_KEY, json.dumps(settings, sort_keys=True))
    write_durably(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def save_json(data, path: Path) -> None:
    write_durably(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_settings(path: str | Path) -> dict:
    """The settings stored in a PNG written by unitune."""
    with Image.open(path) as image:
        return json.loads(image.text[PNG_KEY])


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "image"


def result_name(index: int, result: EditResult) -> str:
    settings = result.settings
    prompt = settings.get("prompt", "")
    dials = f"g{settings['guidance']:g}-s{settings['strength']:g}" if "guidance" in settings else ""
    if settings.get("model_guidance"):
        dials += f"-mg{settings['model_guidance']:g}"
    return f"{index:03d}-{slug(prompt)}-{dials}-seed{settings.get('seed', 0)}.png"


def mask_path(image_path: Path) -> Path:
    """Where a localised edit's mask is written: beside the image, `NAME-mask.png`."""
    return image_path.with_name(f"{image_path.stem}-mask.png")


def save_results(results: list[EditResult], out_dir: str | Path, command: str, extra: dict | None = None):
    """Write each result as a PNG and `manifest.json` listing them; returns the PNG paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, result in enumerate(results):
        path = out / result_name(index, result)
        if result.mask is not None:  # beside its image, written first: an image never lacks its mask
            save_png(result.mask, mask_path(path), result.settings)
        save_png(result.image, path, result.settings)
        paths.append(path)
    manifest = {
        "command": command,
        "images": [{"file": p.name, "settings": r.settings} for p, r in zip(paths, results, strict=True)],
        **(extra or {}),
    }
    save_json(manifest, out / "manifest.json")
    return paths
