"""Shared fixtures: a tiny seeded Stable Diffusion pipeline saved once per session (no downloads)."""

import os

# Tiny models run fastest on one thread, and more threads thrash when the CPU is shared (measured: the
# suite took 6 min with torch's default threads on 2 busy cores, 40 s with one). Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from tiny import save_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd")))


@pytest.fixture(scope="session")
def session_editor(tiny_model, tmp_path_factory):
    from unitune import Editor

    return Editor.load(tiny_model, device="cpu", cache_dir=tmp_path_factory.mktemp("tune-cache"))


@pytest.fixture
def editor(session_editor):
    """The session's editor with its UNet's base weights (an edit leaves its tune applied), and its
    original scheduler put back after the test."""
    scheduler = session_editor.pipe.scheduler
    session_editor.restore_base()
    yield session_editor
    session_editor.pipe.scheduler = scheduler


@pytest.fixture(scope="session")
def base_image() -> Image.Image:
    """A 32x32 picture with structure: a red square and a yellow disc on a blue gradient."""
    y, x = np.mgrid[0:32, 0:32]
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[..., 2] = 120 + 4 * y
    pixels[6:16, 4:14] = (220, 30, 30)
    pixels[(x - 22) ** 2 + (y - 21) ** 2 < 36] = (240, 220, 40)
    return Image.fromarray(pixels)
