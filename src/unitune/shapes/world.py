"""The shapes world: seeded scenes of one or two flat shapes on a softly textured background.

Every scene is fully described by a `Scene`, so an edit ("on a green background") has a known right
answer: the same scene with one attribute changed, rendered with the same texture seed and positions.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGE_SIZE = 64

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 50),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 18.0, "large": 30.0}  # 18 px: 4.5 latent cells keep a small triangle's corners

SIZE_JITTER = 0.15
COLOUR_JITTER = 8
TEXTURE_AMPLITUDE = 12.0
TEXTURE_GRID = 5  # control points per side of the smooth texture field
EDGE_MARGIN = 2.0
GAP = 3.0  # minimum free pixels between two objects


@dataclass(frozen=True)
class SceneObject:
    """One shape. `extent` is its width in pixels (circle diameter, square side, triangle side)."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    extent: float
    rgb_jitter: tuple[int, int, int] = (0, 0, 0)

    @property
    def radius(self) -> float:
        """Radius of the circle that bounds the shape around its centre."""
        if self.shape == "square":
            return self.extent / np.sqrt(2)
        if self.shape == "triangle":
            return self.extent / np.sqrt(3)  # circumradius; the centre is the centroid
        return self.extent / 2


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...]
    texture_seed: int

    def replace_object(self, index: int, **changes) -> Scene:
        objects = list(self.objects)
        objects[index] = dataclasses.replace(objects[index], **changes)
        return dataclasses.replace(self, objects=tuple(objects))


# ---------------------------------------------------------------- sampling


def sample_scene(rng: random.Random, num_objects: int | None = None) -> Scene:
    """Draw a random scene: background, one or two non-overlapping objects, texture seed."""
    background = rng.choice(COLOURS)
    count = num_objects if num_objects is not None else rng.choice((1, 2))
    while True:
        objects: list[SceneObject] = []
        used = {background}
        for _ in range(count):
            colour = rng.choice([c for c in COLOURS if c not in used])
            used.add(colour)
            placed = place_object(rng, rng.choice(SHAPES), colour, rng.choice(tuple(SIZES)), objects)
            if placed is None:
                break
            objects.append(placed)
        if len(objects) == count:
            return Scene(background, tuple(objects), rng.randrange(2**31))


def place_object(
    rng: random.Random, shape: str, colour: str, size: str, others: list[SceneObject], tries: int = 100
) -> SceneObject | None:
    """A new object at a random position that overlaps none of `others`, or None if none fits."""
    extent = SIZES[size] * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
    jitter = tuple(rng.randint(-COLOUR_JITTER, COLOUR_JITTER) for _ in range(3))
    for _ in range(tries):
        candidate = SceneObject(shape, colour, size, 0.0, 0.0, extent, jitter)
        low = candidate.radius + EDGE_MARGIN
        cx, cy = rng.uniform(low, IMAGE_SIZE - low), rng.uniform(low, IMAGE_SIZE - low)
        candidate = dataclasses.replace(candidate, cx=cx, cy=cy)
        if all(not objects_overlap(candidate, other) for other in others):
            return candidate
    return None


def objects_overlap(a: SceneObject, b: SceneObject) -> bool:
    return float(np.hypot(a.cx - b.cx, a.cy - b.cy)) < a.radius + b.radius + GAP


# ---------------------------------------------------------------- rendering


def render(scene: Scene) -> np.ndarray:
    """The scene as a (64, 64, 3) uint8 array, with anti-aliased edges."""
    image = background_layer(scene)
    for obj in scene.objects:
        coverage = shape_coverage(obj)[..., None]
        colour = np.clip(np.array(PALETTE[obj.colour]) + np.array(obj.rgb_jitter), 0, 255)
        image = image * (1 - coverage) + colour * coverage
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render_pil(scene: Scene) -> Image.Image:
    return Image.fromarray(render(scene))


def background_layer(scene: Scene) -> np.ndarray:
    """Palette colour plus a smooth seeded texture of about +-12 levels, as float (64, 64, 3)."""
    texture = smooth_texture(scene.texture_seed)
    base = np.array(PALETTE[scene.background], dtype=np.float64)
    return base[None, None, :] + texture[..., None]


def smooth_texture(seed: int) -> np.ndarray:
    """A (64, 64) field in [-12, 12]: random control points, bicubically upsampled."""
    grid = np.random.default_rng(seed).uniform(-1.0, 1.0, (TEXTURE_GRID, TEXTURE_GRID)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid, mode="F").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
    return np.clip(field, -1.0, 1.0) * TEXTURE_AMPLITUDE


_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5  # pixel centres


def shape_coverage(obj: SceneObject) -> np.ndarray:
    """Fraction of each pixel covered by the shape, from its signed distance (one-pixel ramp)."""
    dx, dy = _XX - obj.cx, _YY - obj.cy
    if obj.shape == "circle":
        distance = np.hypot(dx, dy) - obj.extent / 2
    elif obj.shape == "square":
        distance = np.maximum(np.abs(dx), np.abs(dy)) - obj.extent / 2
    else:
        distance = triangle_distance(dx, dy, obj.extent)
    return np.clip(0.5 - distance, 0.0, 1.0)


def triangle_distance(dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    """Signed distance (inside < 0) to an upward equilateral triangle centred on its centroid."""
    inradius = side / (2 * np.sqrt(3))
    normals = ((0.0, 1.0), (np.sqrt(3) / 2, -0.5), (-np.sqrt(3) / 2, -0.5))  # image y points down
    return np.max([dx * nx + dy * ny - inradius for nx, ny in normals], axis=0)


# ---------------------------------------------------------------- captions


def describe_object(obj: SceneObject, with_size: bool = True) -> str:
    words = ["a", obj.size, obj.colour, obj.shape] if with_size else ["a", obj.colour, obj.shape]
    return " ".join(words)


def caption(scene: Scene) -> str:
    """The full caption: 'a {size} {colour} {shape}[ and a ...] on a {colour} background'."""
    objects = " and ".join(describe_object(obj) for obj in scene.objects)
    return f"{objects} on a {scene.background} background"


def training_caption(scene: Scene, rng: random.Random) -> str:
    """A caption with parts dropped at random, so fragments are understood; empty 10% of the time."""
    roll = rng.random()
    if roll < 0.10:
        return ""
    if roll < 0.20:
        return f"on a {scene.background} background"
    objects = list(scene.objects)
    if len(objects) == 2 and rng.random() < 0.25:
        objects = [rng.choice(objects)]
    with_size = rng.random() < 0.7
    phrase = " and ".join(describe_object(obj, with_size) for obj in objects)
    if rng.random() < 0.75:
        phrase += f" on a {scene.background} background"
    return phrase


def amended_caption(scene: Scene, rng: random.Random) -> str:
    """The caption of a scene one attribute away from `scene`, then a fragment that sets that attribute
    to `scene`'s own: 'a red circle on a green background a blue circle' for a blue circle on green.
    UniTune samples "R fragment", R standing for the tuned image; these teach that a fragment after a
    description overrides what it changes and leaves the rest (the fragments are the edit benchmark's
    five kinds: background, colour, shape, size, an added object)."""
    kinds = ["background", "colour", "shape", "size"] + (["add"] if len(scene.objects) == 2 else [])
    kind, index = rng.choice(kinds), rng.randrange(len(scene.objects))
    obj = scene.objects[index]
    used = {scene.background, *(o.colour for o in scene.objects)}
    if kind == "background":
        other = dataclasses.replace(scene, background=rng.choice([c for c in COLOURS if c not in used]))
        return f"{caption(other)} on a {scene.background} background"
    if kind == "add":
        rest = tuple(o for i, o in enumerate(scene.objects) if i != index)
        return f"{caption(dataclasses.replace(scene, objects=rest))} and {describe_object(obj)}"
    if kind == "colour":
        other = scene.replace_object(index, colour=rng.choice([c for c in COLOURS if c not in used]))
    elif kind == "shape":
        other = scene.replace_object(index, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
    else:
        other = scene.replace_object(index, size=next(s for s in SIZES if s != obj.size))
    return f"{caption(other)} {describe_object(obj, with_size=kind == 'size')}"


def vocabulary() -> set[str]:
    """Every word any caption can contain; UniTune's rare tokens must avoid these."""
    return {"a", "and", "on", "background", *COLOURS, *SHAPES, *SIZES}
