"""Read a shapes-world scene back from pixels: background colour, and each object's shape, colour,
size class and centre. Used to score generated images and edits against their known right answer.

An object's shape is the ideal shape (circle, square, upward triangle) of the same area and centroid
that overlaps its pixels best (intersection over union), and its size class follows from that shape's
extent. Unlike the fill ratio of the bounding box, this does not flip when a decoder softens a corner
or drops a triangle's one-pixel tip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .world import PALETTE, SHAPES, SIZES, SceneObject, shape_coverage

_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[name] for name in _PALETTE_NAMES], dtype=np.float64)

FOREGROUND_DISTANCE = 60.0  # RGB distance from the background colour that marks an object pixel
MIN_OBJECT_AREA = 30  # pixels; smaller blobs are noise
SIZE_THRESHOLD = (SIZES["small"] + SIZES["large"]) / 2
# extent (circle diameter, square side, triangle side) of a shape covering one pixel of area
EXTENT_PER_ROOT_AREA = {"circle": 2 / np.sqrt(np.pi), "square": 1.0, "triangle": np.sqrt(4 / np.sqrt(3))}


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


def same_reading(a: ReadScene, b: ReadScene) -> bool:
    """The same scene as far as the analyzer can tell: background, and every object's shape, colour, size."""
    signature = lambda r: (r.background, sorted((o.shape, o.colour, o.size) for o in r.objects))  # noqa: E731
    return signature(a) == signature(b)


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
    cx, cy = float(xs.mean() + 0.5), float(ys.mean() + 0.5)
    shape, extent = classify_shape(mask, cx, cy)
    interior = ndimage.binary_erosion(mask) if area > 60 else mask
    colour = nearest_colour(np.median(pixels[interior if interior.any() else mask], axis=0))
    size = "large" if extent >= SIZE_THRESHOLD else "small"
    return ReadObject(shape=shape, colour=colour, size=size, cx=cx, cy=cy, area=area)


def classify_shape(mask: np.ndarray, cx: float, cy: float) -> tuple[str, float]:
    """The ideal shape of the mask's area and centroid that overlaps it best, and that shape's extent."""
    root_area = np.sqrt(mask.sum())
    best = ("circle", 0.0, -1.0)
    for shape in SHAPES:
        extent = float(EXTENT_PER_ROOT_AREA[shape] * root_area)
        ideal = shape_coverage(SceneObject(shape, "", "", cx, cy, extent)) >= 0.5
        overlap = np.logical_and(ideal, mask).sum() / np.logical_or(ideal, mask).sum()
        if overlap > best[2]:
            best = (shape, extent, overlap)
    return best[0], best[1]
