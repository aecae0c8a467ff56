"""The automatic mask snapped to the image's own regions (`--mask-regions`).

DiffEdit's map (either reading, `mask_reading`) lights up the scene's objects whatever the words say:
a recolour lights up the object, but so does "on a black background", where the model would redraw the
object with the new background. Its threshold cannot tell the two apart; where the map falls can. The
base image is cut into regions (scikit-image's Felzenszwalb graph segmentation) and the region most of
the image's border belongs to is taken as the background. Then (`edit_mask`):

- the words add something (`adds_object`: they open with "and", "with", "plus" or "add" and do not
  name the background): the image outside its objects, kept clear of each by ADDITION_CLEARANCE px.
  Nothing in the map tells an addition from an edit of the object it lights (the old one, often): the
  words do, and the map is not read;
- the map about as strong on the background as on the objects (mean ratio above
  `mask_background_ratio`): the edit is the background's, and the mask is the background, grown into
  the objects' edges by a margin;
- else: one object, the connected part of the image outside the background where the map's mean is
  highest, and of it the regions whose mean is above OBJECT_LIFT x the image's mean, whole (the object
  whole when none is). An edit's words name one thing; a map that lights two objects (it often does on
  two-object scenes) would let the edit redraw both. Words that name a size (`names_size`: "a large
  red circle") let the object's mask reach SIZE_REACH px further, room for the object to grow. Else,
  where the map lights a ring round the object about as much as its inside (`redraws_outline`: a new
  shape, whose outline passes in and out of the old one), the mask is the object's bounding box less
  its inside (`outline_mask`): room for the new outline, while the kept inside holds the object's place
  and colour.

The mask is then grown by `mask_grow` like a user's and used as one: at pixel size, averaged down to
the latent grid for the blend. Chosen on 120 validation edits of the embedded model and checked on the
150 test edits (docs/lab/regions.md; the single object: docs/lab/object-choice.md; the
words' rules: docs/lab/words.md).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REFERENCE_SIDE = 64  # the constants below were chosen at this side (the embedded model's) and scale with it
SEGMENT_SCALE = 1000.0  # Felzenszwalb's scale at REFERENCE_SIDE (larger: fewer, larger regions)
SEGMENT_SIGMA = 0.8  # its Gaussian pre-smoothing
SEGMENT_MIN_SIZE = 30  # its smallest region, in pixels at REFERENCE_SIDE
OBJECT_LIFT = 1.5  # an object edit's mask: the regions whose mean difference is above this x the image's
OBJECT_REACH = 2  # px at REFERENCE_SIDE by which the chosen object takes back its edge regions
BACKGROUND_MARGIN = 2  # px at REFERENCE_SIDE that a background edit's mask reaches into the objects
ADDITION_CLEARANCE = 6  # px at REFERENCE_SIDE an addition's mask keeps around each object (before mask_grow)
ADDITION_OPENERS = ("and", "with", "plus", "add", "adding")  # first words of an edit that adds something
SIZE_WORDS = ("small", "large", "big", "tiny", "huge", "smaller", "larger", "bigger")
SIZE_REACH = 4  # px at REFERENCE_SIDE by which an object's mask grows when the words name a size
OUTLINE_RATIO = 0.55  # a new outline: the map's mean in a ring round the object above this x its inside's
OUTLINE_RING = 5  # px at REFERENCE_SIDE: the width of that ring
OUTLINE_DEPTH = 4  # px at REFERENCE_SIDE: the object's inside, where that mean is read, lies this far in
KEPT_CORE = 3  # px at REFERENCE_SIDE: a new outline's mask keeps the object's inside beyond this depth


def segments(pixels: np.ndarray) -> np.ndarray:
    """(H, W) region labels of an RGB uint8 image (H, W, 3): Felzenszwalb's segmentation with the module's
    constants scaled to the image's area."""
    from skimage.segmentation import felzenszwalb

    area = pixels.shape[0] * pixels.shape[1] / REFERENCE_SIDE**2
    return felzenszwalb(
        pixels,
        scale=SEGMENT_SCALE * area,
        sigma=SEGMENT_SIGMA,
        min_size=max(1, round(SEGMENT_MIN_SIZE * area)),
    )


def background_label(regions: np.ndarray) -> int:
    """The label most of the image's border pixels carry."""
    border = np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]])
    return Counter(border.tolist()).most_common(1)[0][0]


def image_regions(base: Image.Image) -> np.ndarray:
    """(H, W) region labels of a PIL image (`segments` of its RGB pixels)."""
    return segments(np.asarray(base.convert("RGB")))


def edit_mask(
    words: str, regions: np.ndarray, read_map: Callable[[], torch.Tensor], background_ratio: float
) -> np.ndarray:
    """(H, W) bool at the regions' size: where an edit with these words may change the image (module
    docstring). `read_map` returns DiffEdit's difference map (1, 1, h, w) before its threshold; it is
    not read for an addition, whose words say where."""
    if adds_object(words):
        return addition_mask(regions)
    reach = SIZE_REACH if names_size(words) else 0
    return region_mask(read_map(), regions, background_ratio, reach)


def adds_object(words: str) -> bool:
    """Whether an edit's words add something to the image: they open with one of ADDITION_OPENERS ("and a
    small red triangle", "with a hat") and do not name the background ("with a blue background")."""
    tokens = _tokens(words)
    return bool(tokens) and tokens[0] in ADDITION_OPENERS and "background" not in tokens


def names_size(words: str) -> bool:
    """Whether an edit's words name a size (one of SIZE_WORDS)."""
    return any(token in SIZE_WORDS for token in _tokens(words))


def _tokens(words: str) -> list[str]:
    """The words' words, lower case, punctuation dropped ("Plus, a hat." -> plus, a, hat)."""
    return re.findall(r"[a-z]+", words.lower())


def addition_mask(regions: np.ndarray) -> np.ndarray:
    """(H, W) bool: where an addition may draw, the image outside its objects (every region but the
    background) grown by ADDITION_CLEARANCE px; everywhere on an image of one region."""
    background = regions == background_label(regions)
    return ~_grown(~background, _scaled(ADDITION_CLEARANCE, regions.shape))


def region_mask(
    difference: torch.Tensor, regions: np.ndarray, background_ratio: float, reach: int = 0
) -> np.ndarray:
    """(H, W) bool at the regions' size: where the edit may change the image, from DiffEdit's difference
    map (1, 1, h, w) before its threshold and the base image's `regions` (module docstring); an object's
    mask grown by `reach` px more (at REFERENCE_SIDE)."""
    height, width = regions.shape
    label = background_label(regions)
    background = regions == label
    grid = difference.detach().float().cpu()
    spread = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    if background.all():  # one region: nothing to tell apart
        return np.ones((height, width), dtype=bool)
    if spread[background].mean() > background_ratio * spread[~background].mean():
        return _grown(background, _scaled(BACKGROUND_MARGIN, regions.shape))
    chosen = _objects(regions, label, spread)
    if reach:
        return _grown(chosen, _scaled(reach, regions.shape))
    if redraws_outline(chosen, spread):
        return outline_mask(chosen)
    return chosen


def redraws_outline(chosen: np.ndarray, spread: np.ndarray) -> bool:
    """Whether the map lights a ring OUTLINE_RING px wide round the chosen object nearly as much as its
    inside (OUTLINE_DEPTH px in): more than OUTLINE_RATIO x. A recolour lights the inside and little
    round it; a new shape lights where its outline will pass, in and out of the old one. An object too
    thin to have an inside does not."""
    inside = _shrunk(chosen, _scaled(OUTLINE_DEPTH, chosen.shape))
    if not inside.any():
        return False
    ring = _grown(chosen, _scaled(OUTLINE_RING, chosen.shape)) & ~chosen
    return bool(spread[ring].mean() > OUTLINE_RATIO * spread[inside].mean())


def outline_mask(chosen: np.ndarray) -> np.ndarray:
    """(H, W) bool: room for an object's new outline, its bounding box, less its inside beyond KEPT_CORE
    px, which stays and holds the object's place and colour while the edit draws round it."""
    rows, columns = np.nonzero(chosen)
    box = np.zeros_like(chosen)
    box[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1] = True
    return box & ~_shrunk(chosen, _scaled(KEPT_CORE, chosen.shape))


def _scaled(pixels: int, shape) -> int:
    """`pixels` at REFERENCE_SIDE, at an image of `shape` (its shorter side)."""
    return round(pixels * min(shape) / REFERENCE_SIDE)


def _objects(regions: np.ndarray, background: int, spread: np.ndarray) -> np.ndarray:
    """The regions of the most lit object (`_most_lit_object`) whose mean difference is above
    OBJECT_LIFT x the image's (the object whole when none is)."""
    from scipy import ndimage

    labels = np.unique(regions)
    means = ndimage.mean(spread, regions, labels)
    lit = np.isin(regions, labels[(means > OBJECT_LIFT * spread.mean()) & (labels != background)])
    chosen = _most_lit_object(regions != background, spread)
    mask = lit & chosen
    return mask if mask.any() else chosen & (regions != background)


def _most_lit_object(foreground: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """The connected part of `foreground` (opened by one pixel, so that thin edge regions do not join two
    objects) with the highest mean `spread`, grown by OBJECT_REACH px to take back its edges."""
    from scipy import ndimage

    parts, count = ndimage.label(ndimage.binary_opening(foreground))
    if count < 2:  # nothing to choose between
        return foreground
    means = ndimage.mean(spread, parts, np.arange(1, count + 1))
    return _grown(parts == int(np.argmax(means)) + 1, max(1, _scaled(OBJECT_REACH, foreground.shape)))


def _shrunk(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` eroded by `pixels` steps of a 4-neighbour erosion."""
    from scipy import ndimage

    return ndimage.binary_erosion(mask, iterations=pixels) if pixels > 0 else mask


def _grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` grown by `pixels` steps of a 4-neighbour dilation (a diamond)."""
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=pixels) if pixels > 0 else mask
