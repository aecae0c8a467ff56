"""Any photo: its aspect ratio is kept, its colour profile read, and edits come back at its shape or size."""

import io
import json
import random

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image, ImageCms
from typer.testing import CliRunner

from icc import DISPLAY_P3, LINEAR_GRAY
from unitune import EditSettings, TuneSettings, UnituneError, UnituneWarning
from unitune.cli import app
from unitune.images import Sizing, aspect_size, fit, load_image

NO_TUNE = TuneSettings(steps=0)


def photo(width: int, height: int) -> Image.Image:
    """A landscape-or-portrait picture with structure: a gradient, a red block, a yellow disc."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 2] = (120 + 120 * y / height).astype(np.uint8)
    pixels[..., 1] = (200 * x / width).astype(np.uint8)
    pixels[height // 5 : height // 2, width // 8 : width // 3] = (220, 30, 30)
    pixels[(x - 0.7 * width) ** 2 + (y - 0.6 * height) ** 2 < (0.15 * height) ** 2] = (240, 220, 40)
    return Image.fromarray(pixels)


# --- the working size ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("photo_size", "expected"),
    [
        ((4000, 3000), (576, 432)),
        ((3000, 4000), (432, 576)),
        ((1920, 1080), (680, 384)),
        ((700, 700), (512, 512)),
    ],
)
def test_stable_diffusion_sizes_keep_the_aspect_at_about_512_squared(photo_size, expected):
    assert aspect_size(photo_size, 512 * 512, 8) == expected


def test_sizes_are_stride_multiples_near_the_pixel_count_and_fitting_twice_changes_nothing():
    rng = random.Random(0)
    for _ in range(300):
        size = (rng.randint(20, 6000), rng.randint(20, 6000))
        if max(size) / min(size) > 4:
            continue
        for pixels, stride in ((512**2, 8), (1024**2, 8), (32**2, 2)):
            width, height = aspect_size(size, pixels, stride)
            assert width % stride == 0 and height % stride == 0
            assert 0.7 < width * height / pixels < 1.4
            assert abs(np.log(width / height / (size[0] / size[1]))) < 0.05
            assert aspect_size((width, height), pixels, stride) == (width, height)


def test_explicit_width_and_height():
    assert Sizing(width=768, height=512).fit_size((4000, 3000), 512, 8) == (768, 512)
    assert Sizing(width=768).fit_size((4000, 3000), 512, 8) == (768, 576)
    assert Sizing(height=512).fit_size((4000, 3000), 512, 8) == (680, 512)
    assert Sizing(size=768).fit_size((4000, 3000), 512, 8) == aspect_size((4000, 3000), 768**2, 8)
    with pytest.raises(UnituneError, match=r"width must be a multiple of 8 pixels.*\(try 760 or 768\)"):
        Sizing(width=766).fit_size((4000, 3000), 512, 8)
    with pytest.raises(UnituneError, match="not both"):
        Sizing(size=512, width=512)


def test_an_absurd_working_size_is_refused_before_any_work():
    """Sides over 4096 pixels would run a machine out of memory: given, or following a long photo."""
    with pytest.raises(UnituneError, match="size must be <= 4096 pixels, got 100000"):
        Sizing(size=100000)
    with pytest.raises(UnituneError, match="working size would be 768 x 230400 pixels"):
        Sizing(width=768).fit_size((20, 6000), 512, 8)
    assert Sizing(size=4096).fit_size((4000, 3000), 512, 8) == aspect_size((4000, 3000), 4096**2, 8)


def test_fitting_resizes_without_cropping():
    image = Image.new("RGB", (400, 300), "black")
    image.paste((255, 0, 0), (0, 0, 10, 300))  # a stripe at the left edge survives (nothing cut)
    fitted = fit(image, (64, 48))
    assert fitted.size == (64, 48) and fitted.getpixel((0, 24))[0] > 200


# --- colour profiles -----------------------------------------------------------------------------------


def test_a_display_p3_photo_is_converted_to_srgb(tmp_path):
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    path = tmp_path / "p3.png"
    image.save(path, icc_profile=DISPLAY_P3)
    loaded = load_image(path)
    expected = ImageCms.profileToProfile(
        image,
        ImageCms.ImageCmsProfile(io.BytesIO(DISPLAY_P3)),
        ImageCms.createProfile("sRGB"),
        outputMode="RGB",
    )
    assert loaded.getpixel((3, 3)) == expected.getpixel((3, 3))
    red, green, blue = loaded.getpixel((3, 3))
    assert red > 205 and blue < 40  # P3's red is redder than sRGB's: the same numbers mean more red
    assert load_image(image).getpixel((3, 3)) == (200, 100, 50)  # no profile: taken as sRGB


def test_profiles_on_rgba_jpeg_and_pil_inputs(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (200, 100, 50, 0))
    rgba.putpixel((0, 0), (200, 100, 50, 255))
    path = tmp_path / "p3a.png"
    rgba.save(path, icc_profile=DISPLAY_P3)
    loaded = load_image(path)
    assert loaded.getpixel((5, 5)) == (255, 255, 255) and loaded.getpixel((0, 0))[2] < 40
    jpeg = tmp_path / "p3.jpg"
    Image.new("RGB", (16, 16), (200, 100, 50)).save(jpeg, icc_profile=DISPLAY_P3, quality=100)
    assert load_image(jpeg).getpixel((8, 8))[2] < 40
    with Image.open(jpeg) as opened:
        assert load_image(opened).getpixel((8, 8))[2] < 40
    srgb = tmp_path / "srgb.png"
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(srgb, icc_profile=profile)
    assert np.abs(np.subtract(load_image(srgb).getpixel((3, 3)), (200, 100, 50))).max() <= 1


def test_a_gray_profile_is_converted(tmp_path):
    path = tmp_path / "linear-gray.png"
    Image.new("L", (8, 8), 128).save(path, icc_profile=LINEAR_GRAY)
    red, green, blue = load_image(path).getpixel((3, 3))
    assert red == green == blue and red > 170  # linear 0.5 is sRGB ~0.74: lighter than the raw 128
    assert load_image(Image.new("L", (8, 8), 128)).getpixel((3, 3)) == (128, 128, 128)


def test_a_broken_profile_is_reported_and_ignored(tmp_path):
    path = tmp_path / "broken.png"
    Image.new("RGB", (8, 8), (200, 100, 50)).save(path, icc_profile=b"not a profile at all")
    with pytest.warns(UnituneWarning, match="broken.png: ignored its colour profile"):
        assert load_image(path).getpixel((3, 3)) == (200, 100, 50)


# --- editing a non-square photo ------------------------------------------------------------------------


def test_a_landscape_photo_is_edited_at_its_aspect(editor):
    image = photo(120, 80)
    assert editor.work_size(image.size) == (42, 28)  # 3:2 exactly, at about 32 x 32 pixels
    [result] = editor.edit(image, ["x"], EditSettings(steps=2, strength=0.5), NO_TUNE)
    assert result.image.size == (42, 28)
    assert (result.settings["width"], result.settings["height"]) == (42, 28)
    settings = EditSettings(steps=2, strength=0.5, original_size=True)
    [full] = editor.edit(image, ["x"], settings, NO_TUNE)
    assert full.image.size == (120, 80) and full.settings["photo_size"] == [120, 80]


def test_non_square_edit_matches_diffusers_img2img(editor):
    base = editor.prepare_image(photo(80, 120))
    assert base.size == (28, 42)
    settings = EditSettings(guidance=7.5, strength=0.6, steps=4, seed=3)
    ours = editor.edit(base, [""], settings, NO_TUNE)[0].image
    components = {k: v for k, v in editor.pipe.components.items() if k != "image_encoder"}
    pipe = StableDiffusionImg2ImgPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        NO_TUNE.rare_prompt,
        image=base,
        strength=0.6,
        guidance_scale=7.5,
        num_inference_steps=4,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert ours.size == theirs.size == (28, 42)
    assert np.abs(np.asarray(ours, float) - np.asarray(theirs, float)).max() <= 255e-4


def test_the_tune_key_follows_the_working_size(editor):
    image, tune = photo(120, 80), TuneSettings(steps=1, seed=3)
    key = editor.tune_key(image, tune)
    assert editor.tune_key(photo(120, 80), tune) == key
    sizing = editor.sizing
    try:
        editor.sizing = Sizing(width=32, height=24)
        other = editor.tune_key(image, tune)
        result = editor.tune(image, tune)
        [edited] = editor.edit(image, ["x"], EditSettings(steps=2, strength=1.0), tune)
    finally:
        editor.sizing = sizing
    assert other != key and result.key == other and edited.image.size == (32, 24)


def test_generate_at_a_width_and_height(editor):
    sizing = editor.sizing
    try:
        editor.sizing = Sizing(width=40, height=24)
        [result] = editor.generate("a red square", EditSettings(steps=2, guidance=1.0))
    finally:
        editor.sizing = sizing
    assert result.image.size == (40, 24)


def test_cli_width_height_and_original_size(tiny_model, tmp_path):
    path = tmp_path / "wide.png"
    photo(120, 80).save(path)
    common = ["--model", tiny_model, "--cache-dir", str(tmp_path / "cache"), "--tune-steps", "1"]
    common += ["--steps", "2", "--strength", "0.5"]
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, ["edit", str(path), "x", "--out", str(out), "--width", "32", *common])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert Image.open(out / manifest["images"][0]["file"]).size == (32, 22)
    result = runner.invoke(app, ["edit", str(path), "x", "--out", str(out), "--original-size", *common])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert Image.open(out / manifest["images"][0]["file"]).size == (120, 80)
    bad = runner.invoke(app, ["edit", str(path), "x", "--out", str(out), "--width", "33", *common])
    assert bad.exit_code == 2 and "width must be a multiple of 2 pixels" in bad.output
