"""Read the images users really have and fit them to the model's working size, keeping their aspect.

Loading: first frame of animations, EXIF rotation applied, colour converted from the file's ICC profile
to sRGB, alpha composited on white, palette, grayscale, 16-bit and CMYK converted to 8-bit RGB.
Fitting (`Sizing`): the photo is resized, not cropped, to the width x height that keeps its aspect ratio
best at about the model's native pixel count (or `size` x `size` pixels), each side a multiple of the
VAE's stride; or to an exact `width` x `height`. Edits come back at that size, or at the photo's own.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import UnituneError, UnituneWarning, first_line

MAX_IMAGE_PIXELS = 64_000_000  # ~8000 x 8000; larger files are refused as possible decompression bombs
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """An 8-bit RGB image from a path or a PIL image; raises UnituneError for anything unusable."""
    if isinstance(source, Image.Image):
        image = _first_frame(source)
        return to_srgb(ImageOps.exif_transpose(image), image.info.get("icc_profile"), "the image")
    if not isinstance(source, str | Path):
        raise UnituneError(f"expected an image path or a PIL image, got {type(source).__name__}")
    path = Path(source)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _read(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnituneError(f"{path}: image too large (over {MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise UnituneError(f"{path}: not an image file") from None
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, zlib.error...
        raise UnituneError(f"{path}: unreadable image ({first_line(error)})") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UnituneError(f"{path}: no such file")
    if path.is_dir():
        raise UnituneError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise UnituneError(f"{path}: empty file")


def _read(path: Path) -> Image.Image:
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as image:
            image = _first_frame(image)
            image.load()  # decode now so truncated files fail here
            return to_srgb(ImageOps.exif_transpose(image), image.info.get("icc_profile"), path.name)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _first_frame(image: Image.Image) -> Image.Image:
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        return image.copy()
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparent pixels become white, high-bit-depth images are scaled to 0..255."""
    if image.mode in _HIGH_BIT_MODES:
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image).astype(np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
    if image.mode == "F":
        top = max(float(pixels.max()), 1e-12) if pixels.max() > 1 else 1.0
    return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8))


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_GRAY_MODES = ("1", "L", "LA", "La", *_HIGH_BIT_MODES)
_PROFILE_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}  # ICC colour space -> the PIL mode it reads


def to_srgb(image: Image.Image, icc_profile: bytes | None, name: str) -> Image.Image:
    """8-bit sRGB: pixels converted from the embedded ICC profile (perceptual intent), then `to_rgb`.

    A Display P3 or Adobe RGB photo read as if it were sRGB shifts colour (the model was trained on sRGB);
    an unreadable profile is reported in one warning line and ignored."""
    if not icc_profile:
        return to_rgb(image)
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        mode = _PROFILE_MODES.get(profile.profile.xcolor_space.strip())
        if mode is None:
            raise ValueError(f"a {profile.profile.xcolor_space.strip()} profile")
        if mode == "CMYK" and image.mode != "CMYK" or mode == "L" and image.mode not in _GRAY_MODES:
            raise ValueError(f"a {mode} profile on a {image.mode} image")
        pixels = image if mode == "CMYK" else to_rgb(image).convert(mode)  # alpha composited first
        return ImageCms.profileToProfile(pixels, profile, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        warnings.warn(f"{name}: ignored its colour profile ({first_line(error)})", UnituneWarning, 4)
        return to_rgb(image)


# --- fitting ---------------------------------------------------------------------------------------------

_AREA_WEIGHT = 0.1  # in the size choice, 1% of aspect error weighs as much as 10% of pixel count


MAX_WORK_SIDE = 4096  # the working size is at most about this many pixels squared (SD: 512-1024)


def _checked(size: tuple[int, int]) -> tuple[int, int]:
    """`size` (width, height), unless it holds more than MAX_WORK_SIDE squared pixels (given so, or a long
    photo with only --width or --height given), which would run the machine out of memory."""
    if size[0] * size[1] > 1.05 * MAX_WORK_SIDE**2:  # --size 4096 rounds to a little over at some aspects
        raise UnituneError(
            f"the working size would be {size[0]} x {size[1]} pixels, over about "
            f"{MAX_WORK_SIDE} x {MAX_WORK_SIDE}: give a smaller --size, or both --width and --height"
        )
    return size


@dataclass(frozen=True)
class Sizing:
    """How photos are fitted to the model: an exact `width` x `height`; one of them, the other following
    the photo's aspect; or about `size` x `size` pixels (default: the model's native pixel count) at the
    photo's aspect. Every side is a multiple of the VAE's stride (8 pixels for Stable Diffusion)."""

    size: int | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self):
        for name in ("size", "width", "height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UnituneError(f"{name} must be >= 1 pixel, got {value}")
        if self.size is not None and self.size > MAX_WORK_SIDE:
            raise UnituneError(f"size must be <= {MAX_WORK_SIDE} pixels, got {self.size}")
        _checked((self.width or 1, self.height or 1))
        if self.size is not None and (self.width or self.height):
            raise UnituneError("give --size or --width/--height, not both")

    def fit_size(self, photo: tuple[int, int], native: int, stride: int) -> tuple[int, int]:
        """(width, height) the model works at for a photo of size `photo` (width, height)."""
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value % stride:
                below, above = value // stride * stride, (value // stride + 1) * stride
                raise UnituneError(
                    f"{name} must be a multiple of {stride} pixels for this model, got {value} "
                    f"(try {max(below, stride)} or {above})"
                )
        return _checked(self._fit_size(photo, native, stride))

    def _fit_size(self, photo: tuple[int, int], native: int, stride: int) -> tuple[int, int]:
        aspect = photo[0] / photo[1]
        if self.width and self.height:
            return self.width, self.height
        if self.width:
            return self.width, _round_to(self.width / aspect, stride)
        if self.height:
            return _round_to(self.height * aspect, stride), self.height
        return aspect_size(photo, (self.size or native) ** 2, stride)

    def generate_size(self, native: int, stride: int) -> tuple[int, int]:
        """(width, height) of a text-to-image sample: as given, else a square of `size` or native side."""
        side = _round_to(self.size or native, stride)
        return _checked((self.width or self.height or side, self.height or self.width or side))

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in ("size", "width", "height") if getattr(self, name)}


def _round_to(value: float, stride: int) -> int:
    return max(stride, round(value / stride) * stride)


def aspect_size(photo: tuple[int, int], pixels: int, stride: int) -> tuple[int, int]:
    """The (width, height), multiples of `stride`, closest to the photo's aspect at about `pixels` pixels.

    Minimises |log aspect error| + 0.1 |log pixel-count ratio| over the candidate sizes; a photo that
    already has a chosen size keeps it (fitting twice changes nothing: by the triangle inequality the
    photo's own size costs no more than any other for its own aspect)."""
    aspect = photo[0] / photo[1]

    def cost(width: int, height: int) -> float:
        return abs(math.log(width / height / aspect)) + _AREA_WEIGHT * abs(math.log(width * height / pixels))

    best, best_cost = None, math.inf
    tallest = math.ceil(math.sqrt(2 * pixels / aspect) / stride) + 1
    for height in range(stride, tallest * stride + 1, stride):
        ideal = height * aspect / stride
        for width in {max(1, math.floor(ideal)) * stride, max(1, math.ceil(ideal)) * stride}:
            candidate_cost = cost(width, height)
            if candidate_cost < best_cost:
                best, best_cost = (width, height), candidate_cost
    if photo[0] % stride == 0 and photo[1] % stride == 0 and cost(*photo) <= best_cost + 1e-12:
        return tuple(photo)
    return best


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The image resized (Lanczos) to `size` (width, height): nothing cropped or padded; the aspect
    changes by at most the rounding to the stride, which resizing back to the photo's size undoes."""
    return image.copy() if image.size == tuple(size) else image.resize(size, Image.Resampling.LANCZOS)


def restore_size(result, size: tuple[int, int]):
    """An EditResult with its image resized (Lanczos) to the photo's own `size`, recorded in its settings."""
    from .outputs import EditResult

    image = result.image if result.image.size == tuple(size) else result.image.resize(size, Image.LANCZOS)
    return EditResult(image, {**result.settings, "photo_size": list(size)})


def image_hash(image: Image.Image) -> str:
    """SHA-256 of the pixels and size of an RGB image: the same picture in any file format hashes alike."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
