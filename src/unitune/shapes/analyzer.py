"""Read a shapes-world scene back from pixels: background colour, and each object's shape, colour,
size class and centre. Used to score generated images and edits against their known right answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from unitune.shapes.world import PALETTE, SIZES

_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[name] for name in _PALETTE_NAMES], dtype=np.float64)

FOREGROUND_DISTANCE = 60.0  # RGB distance from the background colour that marks an object pixel
MIN_OBJECT_AREA = 30  # pixels; smaller blobs are noise
SIZE_THRESHOLD = (SIZES["small"] + SIZES["large"]) / 2
SQUARE_FILL = 0.89  # fill ratio of the bounding box: square ~1.0, circle ~0.79, triangle ~0.5
CIRCLE_FILL = 0.64


@dataclass(frozen=True)
class ReadObject:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    area: int


@dataclass(frozen=True)
class ReadScene:
    background: str
    objects: tuple[ReadObject, ...]


def nearest_colour(rgb: np.ndarray) -> str:
    return _PALETTE_NAMES[int(np.argmin(np.linalg.norm(_PALETTE_RGB - rgb, axis=1)))]


def analyze(image) -> ReadScene:
    """Analyze a (64, 64, 3) uint8 array or PIL image."""
    pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float64)
    background_rgb = estimate_background(pixels)
    foreground = np.linalg.norm(pixels - background_rgb, axis=-1) > FOREGROUND_DISTANCE
    labels, count = ndimage.label(foreground)
    objects = [read_object(pixels, labels == index) for index in range(1, count + 1)]
    objects = [obj for obj in objects if obj is not None]
    objects.sort(key=lambda obj: -obj.area)
    return ReadScene(nearest_colour(background_rgb), tuple(objects))


def estimate_background(pixels: np.ndarray) -> np.ndarray:
    """Median colour of the palette class that covers most of the image border."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    names = np.array([nearest_colour(p) for p in border])
    values, counts = np.unique(names, return_counts=True)
    winner = values[np.argmax(counts)]
    return np.median(border[names == winner], axis=0)


def read_object(pixels: np.ndarray, mask: np.ndarray) -> ReadObject | None:
    area = int(mask.sum())
    if area < MIN_OBJECT_AREA:
        return None
    ys, xs = np.nonzero(mask)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    fill = area / (width * height)
    interior = ndimage.binary_erosion(mask) if area > 60 else mask
    colour = nearest_colour(np.median(pixels[interior if interior.any() else mask], axis=0))
    return ReadObject(
        shape=classify_shape(fill),
        colour=colour,
        size="large" if max(width, height) >= SIZE_THRESHOLD else "small",
        cx=float(xs.mean() + 0.5),
        cy=float(ys.mean() + 0.5),
        area=area,
    )


def classify_shape(fill: float) -> str:
    if fill >= SQUARE_FILL:
        return "square"
    if fill >= CIRCLE_FILL:
        return "circle"
    return "triangle"
