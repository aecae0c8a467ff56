"""The edit set: seeded base scenes times five edit types, each with its ideal target.

The target is the base scene with one attribute changed (same texture seed, same positions), so every
edit has a known right answer. UniTune gets a caption fragment (the API prepends R); the baselines get
the full target caption.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..shapes.world import (
    COLOURS,
    EDGE_MARGIN,
    IMAGE_SIZE,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    caption,
    describe_object,
    objects_overlap,
    place_object,
    sample_scene,
)

EDIT_KINDS = ("background", "colour", "shape", "size", "add")
# training uses scene seed 1 and the generation evaluation seed 2; the benchmark's splits use neither
SPLIT_SEEDS = {"validation": 4101, "test": 4202}


@dataclass(frozen=True)
class Edit:
    """One edit: base and ideal target scene, the UniTune fragment and the baselines' full caption.

    `index` is the target object the edit is about (the recoloured/reshaped/resized or the added one);
    None for background edits.
    """

    split: str
    scene: int
    kind: str
    base: Scene
    target: Scene
    prompt: str
    caption: str
    index: int | None

    @property
    def name(self) -> str:
        return f"{self.split}-{self.scene:03d}-{self.kind}"


def fits(obj: SceneObject, others: list[SceneObject]) -> bool:
    """Inside the frame (with the world's margin) and clear of every other object."""
    low, high = obj.radius + EDGE_MARGIN, IMAGE_SIZE - obj.radius - EDGE_MARGIN
    inside = low <= obj.cx <= high and low <= obj.cy <= high
    return inside and all(not objects_overlap(obj, other) for other in others)


def base_scenes(split: str, count: int) -> list[Scene]:
    """`count` scenes of the split, alternating one and two objects (adding needs a one-object scene)."""
    rng = random.Random(SPLIT_SEEDS[split])
    return [sample_scene(rng, num_objects=1 + index % 2) for index in range(count)]


def edits_for_scene(split: str, number: int, base: Scene, kinds=EDIT_KINDS) -> list[Edit]:
    """Every edit kind that applies to `base` (adding only to one-object scenes: training saw at most two)."""
    rng = random.Random(SPLIT_SEEDS[split] * 1000 + number)
    edits = []
    for kind in kinds:
        made = MAKERS[kind](base, rng)
        if made is not None:
            target, prompt, index = made
            edits.append(Edit(split, number, kind, base, target, prompt, caption(target), index))
    return edits


def edit_set(split: str, scenes: int, kinds=EDIT_KINDS) -> list[Edit]:
    return [
        edit
        for number, base in enumerate(base_scenes(split, scenes))
        for edit in edits_for_scene(split, number, base, kinds)
    ]


# ---------------------------------------------------------------- one maker per kind: (target, prompt, index)


def _unused_colours(scene: Scene) -> list[str]:
    used = {scene.background, *(obj.colour for obj in scene.objects)}
    return [colour for colour in COLOURS if colour not in used]


def recolour_background(base: Scene, rng: random.Random):
    colour = rng.choice(_unused_colours(base))
    return replace(base, background=colour), f"on a {colour} background", None


def recolour_object(base: Scene, rng: random.Random):
    index = rng.randrange(len(base.objects))
    colour = rng.choice(_unused_colours(base))
    target = base.replace_object(index, colour=colour)
    return _named(base, target, index, "colour")


def _named(base: Scene, target: Scene, index: int, changed: str):
    """(target, fragment, index) with a fragment that names the edited object alone: 'a colour shape', or
    'a size colour shape' where that is needed (and always for a resize); None when no words name it
    alone. The words name it alone when every other object of the base differs from them in at least two
    of the attributes they name: one differing attribute is the edit itself, so an object one change
    away from the words would be a second right answer ("a small yellow triangle" beside a large yellow
    triangle and a small white one), which the baselines' full caption never has."""
    edited = target.objects[index]
    for with_size in (True,) if changed == "size" else (False, True):
        named = ("colour", "shape", "size") if with_size else ("colour", "shape")
        near = [
            i
            for i, obj in enumerate(base.objects)
            if sum(getattr(obj, a) != getattr(edited, a) for a in named) <= 1
        ]
        if near == [index]:
            return target, describe_object(edited, with_size=with_size), index
    return None


def _changed(base: Scene, rng: random.Random, attribute: str, values):
    """A random (object, value) change that still fits the frame and clears the other objects."""
    options = []
    for index, obj in enumerate(base.objects):
        others = [o for i, o in enumerate(base.objects) if i != index]
        for value in values:
            if value == getattr(obj, attribute):
                continue
            changes = {attribute: value}
            if attribute == "size":  # keep the object's own size jitter
                changes["extent"] = obj.extent * SIZES[value] / SIZES[obj.size]
            if fits(replace(obj, **changes), others):
                options.append((index, changes))
    if not options:
        return None
    index, changes = rng.choice(options)
    return base.replace_object(index, **changes), index


def reshape_object(base: Scene, rng: random.Random):
    changed = _changed(base, rng, "shape", SHAPES)
    if changed is None:
        return None
    target, index = changed
    return _named(base, target, index, "shape")


def resize_object(base: Scene, rng: random.Random):
    changed = _changed(base, rng, "size", tuple(SIZES))
    if changed is None:
        return None
    target, index = changed
    return _named(base, target, index, "size")


def add_object(base: Scene, rng: random.Random, attempts: int = 20):
    if len(base.objects) != 1:
        return None
    for _ in range(attempts):  # a large object may not fit next to a central one: draw again
        shape, colour = rng.choice(SHAPES), rng.choice(_unused_colours(base))
        added = place_object(rng, shape, colour, rng.choice(tuple(SIZES)), list(base.objects))
        if added is not None:
            target = replace(base, objects=(*base.objects, added))
            return target, "and " + describe_object(added, with_size=True), len(base.objects)
    return None


MAKERS = {
    "background": recolour_background,
    "colour": recolour_object,
    "shape": reshape_object,
    "size": resize_object,
    "add": add_object,
}
