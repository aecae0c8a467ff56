"""The embedded model's training recipe runs end to end, resumes, and exports a loadable pipeline."""

import json
import subprocess
import sys

from diffusers import AutoencoderTiny, StableDiffusionPipeline


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
