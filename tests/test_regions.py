"""The automatic mask snapped to the image's regions (unitune.regions, --mask-regions)."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from unitune import EditSettings, TuneSettings, UnituneError
from unitune.localize import grow_mask
from unitune.regions import (
    adds_object,
    background_label,
    edit_mask,
    image_regions,
    names_size,
    region_mask,
    segments,
)
from unitune.shapes.world import Scene, SceneObject, render_pil, shape_coverage

TUNE = TuneSettings(steps=2, learning_rate=5e-2, seed=91)


def _scene(side: int = 64) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A shapes-world picture (a red square and a blue circle on a textured grey-green ground) at `side`
    pixels; the pixels mostly inside each object."""
    square = SceneObject("square", "red", "small", 16.0, 18.0, 18.0)
    circle = SceneObject("circle", "blue", "large", 42.0, 42.0, 26.0)
    image = render_pil(Scene("green", (square, circle), texture_seed=3))
    scale = side // image.width
    inside = [np.kron(shape_coverage(o) > 0.5, np.ones((scale, scale), dtype=bool)) for o in (square, circle)]
    return image.resize((side, side), Image.Resampling.BILINEAR), *inside


def _map(where: np.ndarray, inside: float, elsewhere: float = 0.01) -> torch.Tensor:
    """A difference map at a quarter of the image's side: `inside` where the cell's pixels are mostly in
    `where`."""
    side = where.shape[0] // 4
    cells = torch.from_numpy(where.reshape(side, 4, side, 4).mean(axis=(1, 3)) > 0.5)
    return torch.where(cells, inside, elsewhere).float()[None, None]


def _core(inside: np.ndarray, pixels: int) -> np.ndarray:
    return ndimage.binary_erosion(inside, iterations=pixels)


def _ground(side: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The scene's regions and its background region."""
    regions = segments(np.asarray(_scene(side)[0]))
    return regions, regions == background_label(regions)


def test_the_background_is_the_region_of_the_border_and_the_objects_are_not_in_it():
    _, square, circle = _scene()
    regions, background = _ground()
    assert not (background & (square | circle)).any()
    assert background.sum() > 0.85 * (~(square | circle)).sum()


def test_a_map_on_one_object_gives_whole_regions_of_that_object_only():
    image, square, circle = _scene()
    _, background = _ground()
    mask = region_mask(_map(square, 1.0), image_regions(image), background_ratio=0.5)
    assert mask[_core(square, 1)].all()
    assert not (mask & background).any() and not (mask & circle).any()


def test_a_map_on_both_objects_gives_the_more_lit_one_only():
    """An edit's words name one thing: a map lighting the square and, more strongly, the circle gives the
    circle's regions, none of the square's; the other way round, the square's."""
    image, square, circle = _scene()
    regions = image_regions(image)
    for strong, weak in ((circle, square), (square, circle)):
        difference = torch.maximum(_map(strong, 1.0), _map(weak, 0.6))
        mask = region_mask(difference, regions, background_ratio=0.5)
        assert mask[_core(strong, 1)].all()
        assert not (mask & weak).any()


def test_a_map_as_strong_on_the_background_gives_the_background_with_a_margin_into_the_objects():
    """A background edit: the model's disagreement is as strong on the background as on the objects;
    the mask is the background region, grown 2 px (a diamond) into what it borders, the objects' cores
    kept."""
    image, square, circle = _scene()
    _, background = _ground()
    mask = region_mask(_map(np.ones_like(square), 1.0), image_regions(image), background_ratio=0.5)
    assert np.array_equal(mask, ndimage.binary_dilation(background, iterations=2))
    assert not mask[_core(square, 3) | _core(circle, 3)].any()


def test_the_background_ratio_decides_between_the_two():
    """The map stronger on the square than elsewhere: a background edit exactly when the ratio asked
    for is below the map's own ratio of its background mean to its mean over the rest."""
    image, square, _ = _scene()
    _, background = _ground()
    difference = _map(square, 1.0, elsewhere=0.4)
    spread = torch.nn.functional.interpolate(difference, size=(64, 64), mode="bilinear")[0, 0].numpy()
    ratio = spread[background].mean() / spread[~background].mean()
    assert 0.5 < ratio < 0.9
    assert not region_mask(difference, image_regions(image), background_ratio=ratio + 0.02)[background].any()
    assert region_mask(difference, image_regions(image), background_ratio=ratio - 0.02)[background].all()


def _box(mask: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(mask)
    box = np.zeros_like(mask)
    box[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1] = True
    return box


def test_a_map_lighting_round_an_object_as_much_as_inside_it_gives_room_for_a_new_outline():
    """A new shape: the map lights the circle and a ring round it alike. The mask is the circle's
    bounding box (its corners, outside the circle, may change) less the circle's inside, which stays;
    the square is not in it."""
    image, square, circle = _scene()
    difference = _map(ndimage.binary_dilation(circle, iterations=6), 1.0)
    mask = region_mask(difference, image_regions(image), background_ratio=0.9)
    corners = _box(circle) & ~ndimage.binary_dilation(circle, iterations=2)
    assert corners.any() and mask[corners].all()
    assert not mask[_core(circle, 4)].any()
    assert mask[circle & ~_core(circle, 1)].mean() > 0.9  # the circle's edge may change
    assert not (mask & ~ndimage.binary_dilation(_box(circle), iterations=3)).any()
    assert not (mask & square).any()


def test_a_map_lighting_an_object_more_than_round_it_keeps_the_whole_object_changeable():
    """A recolour: the map on the circle only; the circle's inside may change too, and nothing beyond
    its regions' reach does."""
    image, _, circle = _scene()
    mask = region_mask(_map(circle, 1.0), image_regions(image), background_ratio=0.9)
    assert mask[_core(circle, 1)].all()
    assert not (mask & ~ndimage.binary_dilation(circle, iterations=3)).any()


def test_the_regions_scale_with_the_image():
    """The segmentation's constants follow the image's area: the background is about the same share of
    the picture at 64 and at 128 px."""
    assert abs(_ground(64)[1].mean() - _ground(128)[1].mean()) < 0.05


def test_one_region_lets_everything_change():
    flat = Image.new("RGB", (32, 32), (90, 90, 90))
    assert region_mask(torch.rand(1, 1, 8, 8), image_regions(flat), background_ratio=0.5).all()


def test_an_edit_with_snapped_regions_uses_and_saves_the_grown_region_mask(editor, base_image):
    """--localize auto --mask-regions: the saved mask is a whole region of the image grown by mask_grow
    (binary here, so each pixel is in or out), recorded as the automatic mask."""
    settings = EditSettings(steps=4, strength=0.8, guidance=3.0, localize="auto", mask_regions=True, seed=3)
    [result] = editor.edit(base_image, ["a green background"], settings, TUNE)
    mask = np.asarray(result.mask)
    assert result.settings["mask_source"] == "auto" and result.settings["mask_regions"] is True
    assert set(np.unique(mask)) <= {0, 255} and 0 < result.settings["mask_coverage"] <= 1
    grown = EditSettings(**{**settings.to_dict(), "mask_grow": 2})
    [wider] = editor.edit(base_image, ["a green background"], grown, TUNE)
    expected = grow_mask((mask > 127).astype(np.float32), 2) > 0.5
    assert np.array_equal(np.asarray(wider.mask) > 127, expected)


@pytest.mark.parametrize(
    ("words", "adds"),
    [
        ("and a small red triangle", True),
        ("With a party hat", True),
        ("plus, a dog", True),
        ("add a moon", True),
        ("with a blue background", False),  # the background's, not an object's
        ("on a black background", False),
        ("a red circle", False),
        ("a sandcastle", False),  # "and" inside a word is not the word
        ("", False),
    ],
)
def test_the_words_say_whether_an_edit_adds_something(words, adds):
    assert adds_object(words) is adds


def test_the_words_say_whether_an_edit_names_a_size():
    assert names_size("a large red circle") and names_size("a Smaller, green square") and names_size("big.")
    assert not names_size("a red circle") and not names_size("on a black background")


def _never_read():
    raise AssertionError("an addition's mask read the difference map")


def test_an_addition_may_draw_anywhere_but_on_the_objects_and_their_surroundings():
    """An addition's words say where it goes (off the objects): the mask is the background kept clear of
    each object by the clearance, whatever the map says (it is not even read)."""
    image, square, circle = _scene()
    regions, background = _ground()
    mask = edit_mask("and a small yellow triangle", regions, _never_read, background_ratio=0.5)
    objects = ~background
    assert not (mask & ndimage.binary_dilation(objects, iterations=5)).any()
    assert mask[~ndimage.binary_dilation(objects, iterations=7)].all()
    assert not (mask & (square | circle)).any()


def test_words_naming_a_size_give_the_object_room_to_grow():
    """The same map on the square: without a size word the square's regions; with one, the same grown
    by SIZE_REACH px, so that a larger square fits."""
    image, square, circle = _scene()
    regions = image_regions(image)

    def read_map():
        return _map(square, 1.0)

    recolour = edit_mask("a green square", regions, read_map, background_ratio=0.5)
    resize = edit_mask("a large red square", regions, read_map, background_ratio=0.5)
    assert np.array_equal(resize, ndimage.binary_dilation(recolour, iterations=4))
    assert np.array_equal(recolour, region_mask(read_map(), regions, background_ratio=0.5))


def test_an_addition_through_the_editor_saves_the_mask_off_the_objects(editor, base_image):
    """--localize auto --mask-regions with an addition's words: the saved mask leaves the image's objects
    alone (the background's region, minus a clearance, grown by mask_grow 0 here)."""
    settings = EditSettings(steps=4, strength=0.8, guidance=3.0, localize="auto", mask_regions=True, seed=3)
    [result] = editor.edit(base_image, ["and a small red triangle"], settings, TUNE)
    mask = np.asarray(result.mask.resize(base_image.size)) > 127
    regions = image_regions(base_image)
    expected = edit_mask("and a small red triangle", regions, _never_read, background_ratio=0.5)
    assert result.settings["mask_source"] == "auto" and 0.3 < expected.mean() < 0.9
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize("ratio", [0.0, -1.0, float("nan"), float("inf")])
def test_an_absurd_background_ratio_is_refused(ratio):
    with pytest.raises(UnituneError, match="mask background ratio"):
        EditSettings(mask_background_ratio=ratio)
