"""Read the images users really have and fit them to the model's native size.

Loading: first frame of animations, EXIF rotation applied, alpha composited on white, palette,
grayscale, 16-bit and CMYK converted to 8-bit RGB. Fitting: scale so the image covers the square
native size, then center-crop (nothing is padded; the edges of the longer side are cut).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UnituneError, first_line

MAX_IMAGE_PIXELS = 64_000_000  # ~8000 x 8000; larger files are refused as possible decompression bombs
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """An 8-bit RGB image from a path or a PIL image; raises UnituneError for anything unusable."""
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(_first_frame(source)))
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
            return to_rgb(ImageOps.exif_transpose(image))
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


def fit_to_size(image: Image.Image, size: int) -> Image.Image:
    """Scale to cover a size x size square keeping the aspect ratio, then center-crop (no padding)."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def image_hash(image: Image.Image) -> str:
    """SHA-256 of the pixels and size of an RGB image: the same picture in any file format hashes alike."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
