"""The embedded model's training recipe runs end to end, resumes, and exports a loadable pipeline."""

import json
import subprocess
import sys

import torch
from diffusers import AutoencoderTiny, StableDiffusionPipeline

from unitune.training.architecture import LATENT_STRIDE
from unitune.training.autoencoder import random_crops


def train(work, export, minutes):
    command = [
        sys.executable,
        "-m",
        "unitune.training",
        "--work",
        str(work),
        "--export",
        str(export),
        "--pool",
        "64",
        "--ae-minutes",
        str(minutes),
        "--unet-minutes",
        str(minutes),
        "--eval-every",
        "100",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def test_recipe_trains_resumes_and_exports(tmp_path):
    work, export = tmp_path / "work", tmp_path / "model"
    train(work, export, 0.05)
    first = json.loads((work / "denoiser.json").read_text())
    train(work, export, 0.1)  # same folder, larger budget: continues from the checkpoint
    second = json.loads((work / "denoiser.json").read_text())
    assert first["step"] > 0 and second["step"] > first["step"]
    pipe = StableDiffusionPipeline.from_pretrained(export, safety_checker=None)
    assert isinstance(pipe.vae, AutoencoderTiny) and pipe.scheduler.config.prediction_type == "v_prediction"


def test_autoencoder_crops_lie_on_the_latent_grid():
    images = torch.arange(4 * 3 * 64 * 64, dtype=torch.float32).reshape(4, 3, 64, 64)
    crops = random_crops(images, 32, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 3, 32, 32)
    for image, crop in zip(images, crops, strict=True):
        offset = int((crop[0, 0, 0] - image[0, 0, 0]).item())  # the corner pixel tells where it came from
        y, x = divmod(offset, 64)
        assert y % LATENT_STRIDE == 0 and x % LATENT_STRIDE == 0
        assert torch.equal(crop, image[:, y : y + 32, x : x + 32])
