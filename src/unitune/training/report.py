"""The embedded model's quality benchmark and model card data.

    python -m unitune.training.report --model src/unitune/embedded/shapes --work runs/shapes --out docs

Measures (not asserted): generation accuracy per attribute on 200 held-out full captions and on fragment
prompts, the autoencoder round trip (PSNR, analyzer agreement), and plots the training curves from the
run's log. Writes docs/lab/data/model-results.json, docs/images/model-*.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from ..shapes.analyzer import analyze, same_reading
from ..shapes.quality import evaluate_generation, generate, held_out_scenes
from ..shapes.world import caption, render
from .autoencoder import psnr, round_trip


def load_pipeline(folder: Path, device: str) -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def autoencoder_round_trip(pipeline, count: int = 256) -> dict[str, float]:
    """PSNR of decode(encode(x)) on held-out rendered scenes, and how often the analyzer reads the
    reconstruction as the same scene (background, count, and every object's shape/colour/size)."""
    scenes = held_out_scenes(count, seed=5)
    pixels = np.stack([render(scene) for scene in scenes])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    reconstruction = round_trip(pipeline.vae, images.to(pipeline.vae.device)).cpu()
    recon_pixels = ((reconstruction.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    same = [same_reading(analyze(a), analyze(b)) for a, b in zip(pixels, recon_pixels, strict=True)]
    return {"psnr_db": psnr(reconstruction, images), "analyzer_agreement": float(np.mean(same))}


def sample_grid(
    pipeline, path: Path, guidance: float, columns: int = 6, rows: int = 4, seed: int = 0
) -> None:
    """A labelled grid: each cell a held-out caption's sample, the rendered truth beside it."""
    scenes = held_out_scenes(columns * rows // 2, seed=7)
    images = generate(pipeline, [caption(s) for s in scenes], seed, 20, guidance)
    cells = []
    for scene, image in zip(scenes, images, strict=True):
        cells += [render(scene), image]
    size = 64 * 2
    grid = Image.new("RGB", (columns * size, rows * size), "white")
    for index, cell in enumerate(cells):
        tile = Image.fromarray(cell).resize((size, size), Image.NEAREST)
        grid.paste(tile, ((index % columns) * size, (index // columns) * size))
    grid.save(path)


def plot_curves(log_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    autoencoder = [r for r in records if r["stage"] == "autoencoder"]
    evaluations = [r for r in records if r["stage"] == "evaluation"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["minutes"] for r in autoencoder], [r["psnr"] for r in autoencoder])
    left.axhline(30, color="grey", linestyle="--", label="bar: 30 dB")
    left.set(xlabel="training minutes", ylabel="held-out PSNR (dB)", title="autoencoder")
    left.legend()
    keys = [
        "background",
        "object_count",
        "object1_colour_and_shape",
        "object2_colour_and_shape",
        "fragment_background",
        "fragment_object",
    ]
    for key in keys:
        right.plot(
            [r["minutes"] for r in evaluations],
            [r.get(key, np.nan) for r in evaluations],
            marker="o",
            label=key,
        )
    right.set(
        xlabel="UNet training minutes",
        ylabel="accuracy",
        title="generation (64 held-out captions)",
        ylim=(0, 1),
    )
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=100)


def machine_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("src/unitune/embedded/shapes"))
    parser.add_argument("--work", type=Path, default=Path("runs/shapes"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--guidance", default="3,5,8", help="comma-separated guidance scales, all reported")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default=None, help="cuda when there is one, else cpu")
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline(args.model, device)
    guidances = [float(g) for g in args.guidance.split(",")]
    started = time.monotonic()
    results = {
        "date": date.today().isoformat(),
        "machine": machine_name(device),
        "command": "python -m unitune.training.report "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "steps": args.steps,
        "generation": {
            str(g): evaluate_generation(pipeline, args.count, args.count // 2, args.steps, g)
            for g in guidances
        },
        "autoencoder": autoencoder_round_trip(pipeline),
        "parameters": {
            name: sum(p.numel() for p in getattr(pipeline, name).parameters())
            for name in ("unet", "text_encoder", "vae")
        },
    }
    results["seconds"] = time.monotonic() - started
    sample_grid(pipeline, images / "model-samples.png", guidances[len(guidances) // 2])
    if (args.work / "log.jsonl").exists():
        plot_curves(args.work / "log.jsonl", images / "model-curves.png")
    (args.out / "model-results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
