"""How fast LoRA tuning lowers the denoising loss on the tiny test pipeline, by learning rate and rank.

Usage: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/lora_settings.py [--steps 128]

Prints the held-out denoising loss (16 fixed noise/timestep draws) of the image after tuning; the full
tune at its default learning rate is the reference. A random tiny UNet is not Stable Diffusion: use this
to pick a starting point, then re-measure on the real model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()
    from PIL import Image

    from tiny import save_tiny_pipeline
    from unitune import Editor, TuneSettings
    from unitune.tuning import encode_latent, encode_text, evaluate_loss

    with tempfile.TemporaryDirectory() as folder:
        editor = Editor.load(str(save_tiny_pipeline(Path(folder) / "tiny")), device="cpu", cache_dir=folder)
        image = Image.effect_mandelbrot((32, 32), (-2, -1.5, 1, 1.5), 50).convert("RGB")
        latent = encode_latent(editor.pipe, image, editor.runtime)

        def loss(settings: TuneSettings) -> float:
            with editor.applied(editor.tune(image, settings)):
                text = encode_text(editor.pipe, settings.rare_prompt, editor.runtime)
                return evaluate_loss(editor.pipe, latent, text, editor.runtime)

        print(f"tiny pipeline, {args.steps} steps, batch 4: held-out denoising loss after tuning\n")
        print("| method | lr | rank | loss |\n|---|---|---|---|")
        print(f"| none | - | - | {loss(TuneSettings(steps=0)):.3f} |")
        print(f"| full | 1e-4 | - | {loss(TuneSettings(steps=args.steps)):.3f} |")
        for lr in (1e-3, 3e-3, 1e-2, 3e-2):
            for rank in (4, 8, 16):
                settings = TuneSettings(method="lora", steps=args.steps, learning_rate=lr, lora_rank=rank)
                print(f"| lora | {lr:g} | {rank} | {loss(settings):.3f} |", flush=True)


if __name__ == "__main__":
    main()
