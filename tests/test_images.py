"""Images users really have load as 8-bit RGB and fit the model's native size; prompts are checked."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from unitune import UnituneError, UnituneWarning
from unitune.images import aspect_size, fit, image_hash, load_image
from unitune.interpolation import interpolate_details, unchanged_mask


def saved(image: Image.Image, tmp_path, name: str, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_alpha_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    rgb = load_image(saved(image, tmp_path, "a.png"))
    assert (
        rgb.mode == "RGB" and rgb.getpixel((5, 5)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (255, 0, 0)
    )


@pytest.mark.parametrize(
    ("mode", "name"), [("P", "p.png"), ("L", "l.png"), ("LA", "la.png"), ("CMYK", "c.jpg"), ("1", "b.png")]
)
def test_common_modes_load_as_rgb(tmp_path, mode, name):
    image = Image.new("RGB", (10, 6), (10, 200, 30)).convert(mode)
    rgb = load_image(saved(image, tmp_path, name))
    assert rgb.mode == "RGB" and rgb.size == (10, 6)


def test_16_bit_grayscale_is_scaled(tmp_path):
    pixels = np.full((4, 4), 65535, dtype=np.uint16)
    pixels[0, 0] = 0
    rgb = load_image(saved(Image.fromarray(pixels), tmp_path, "deep.png"))
    assert rgb.getpixel((1, 1)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (0, 0, 0)


def test_exif_rotation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    path = saved(Image.new("RGB", (20, 10), "red"), tmp_path, "r.jpg", exif=exif)
    assert load_image(path).size == (10, 20)


def test_animation_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).getpixel((4, 4))[0] > 200


@pytest.mark.parametrize("size", [(7, 300), (300, 7), (1000, 600), (32, 32)])
def test_any_size_fits_the_native_pixel_count_at_its_aspect(size):
    width, height = aspect_size(size, 32 * 32, 2)
    assert width % 2 == height % 2 == 0 and abs(np.log(width / height * size[1] / size[0])) < 0.1
    assert fit(Image.new("RGB", size, "white"), (width, height)).size == (width, height)


def test_hash_is_about_pixels_not_file_format(tmp_path, base_image):
    png, bmp = saved(base_image, tmp_path, "x.png"), saved(base_image, tmp_path, "x.bmp")
    assert image_hash(load_image(png)) == image_hash(load_image(bmp))
    assert image_hash(load_image(png)) != image_hash(load_image(png).rotate(90))


def test_long_prompt_is_truncated_with_a_warning(editor):
    from unitune.sampling import encode_prompts

    with pytest.warns(UnituneWarning, match="truncated"):
        encode_prompts(editor.pipe, "word " * 100, "", True, editor.runtime)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnituneWarning)
        encode_prompts(editor.pipe, "a short prompt", "", True, editor.runtime)


def test_interpolation_restores_unchanged_regions_only():
    base = torch.zeros(1, 3, 64, 64)
    edit = torch.full((1, 3, 64, 64), 0.02)  # a small change everywhere (lost detail)...
    edit[..., :, 32:] = 1.0  # ...and a real edit on the right half
    out = interpolate_details(edit, base, weight=1.0)
    assert out[..., 20:44, 4:20].abs().max() < 0.01  # left: back to the base
    assert out[..., 20:44, 48:60].min() > 0.99  # right: the edit is kept
    assert torch.equal(interpolate_details(edit, base, weight=0.0), edit)
    mask = unchanged_mask(edit, base)
    assert mask.shape == (1, 1, 64, 64) and 0 <= mask.min() and mask.max() <= 1


def test_pil_images_are_accepted():
    assert load_image(Image.new("L", (3, 3))).mode == "RGB"
    with pytest.raises(UnituneError):
        load_image(42)
