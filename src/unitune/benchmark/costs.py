"""Tune and edit costs: wall time, peak RSS, a tune step vs a bare UNet training step, an edit with and
without the automatic dial. `measure` runs each tune method in its own subprocess, so peak RSS
(resource.getrusage ru_maxrss) is that method's alone. Used by the benchmark (full mode) and by
bench/core_costs.py (the tiny test pipeline). A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

ROUNDS, ROUND_STEPS = 6, 10


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bare_step_times(editor, latent, text, settings, steps: int) -> list[float]:
    """A plain diffusers-style UNet training step on the same batch: the floor a tune step is compared to."""
    import torch
    import torch.nn.functional as F

    from ..tuning import noisy_batch, trainable_parameters, training_scheduler

    unet, scheduler = editor.pipe.unet, training_scheduler(editor.pipe)
    method, batch = settings.method, settings.batch_size
    times = []
    with editor.weights.training(settings):  # a LoRA added, or the base kept; the base again after
        optimizer = torch.optim.AdamW(trainable_parameters(unet, method), lr=1e-6)
        generator = torch.Generator().manual_seed(0)
        unet.train()
        for _ in range(steps):
            start = time.perf_counter()
            noisy, t, target = noisy_batch(scheduler, latent, batch, generator)
            loss = F.mse_loss(unet(noisy, t, **text.expand(batch).unet_kwargs()).sample, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        unet.eval()
        unet.requires_grad_(False)
    return times[1:]  # drop the warm-up step


def tune_step_times(editor, image, settings) -> list[float]:
    """Seconds per step of unitune's own tuning loop (`Editor.train`: `tune` without the cache), the
    UNet's steps only (no decoder fit)."""
    stamps = []
    settings = replace(settings, decoder_steps=0)
    editor.train(image, settings, progress=lambda event: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]  # drop warm-up steps


def auto_costs(editor, image, tune, edit_steps: int) -> tuple[float, float]:
    """Seconds of one edit at the model's recommended dials, and of the same edit with the automatic
    dial (three candidate samples and their scoring), after a warm-up edit; each a first edit of the
    image (no inversion kept from an earlier one)."""
    default = replace(editor.default_edit_settings(), steps=edit_steps)
    editor.edit(image, ["a red square"], default, tune)  # warm-up
    return first_edit_seconds(editor, image, default, tune), first_edit_seconds(
        editor, image, replace(default, auto=True), tune
    )


def first_edit_seconds(editor, image, settings, tune) -> float:
    """Seconds of one edit as the first of its image: the editor's kept inversions forgotten first."""
    editor.inversions.clear()
    start = time.perf_counter()
    editor.edit(image, ["a red square"], settings, tune)
    return time.perf_counter() - start


def measure_in_process(method: str, model: str, cache: str, tune_steps: int | None, edit_steps: int) -> dict:
    """The costs of one tune method on `model`, in this process (its peak RSS is this process's);
    `tune_steps` None: the model's step count for the method."""
    from PIL import Image

    from .. import Editor, EditSettings
    from ..tuning import encode_latent, encode_text

    editor = Editor.load(model, device="cpu", cache_dir=cache)
    image = Image.effect_mandelbrot((32, 32), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    # the model's own tune (steps None: its count for the method), every default filled in
    settings = editor.resolve_tune(replace(editor.default_tune_settings(), method=method, steps=tune_steps))
    base = editor.prepare_image(image)  # the working size the tune trains at, so both steps do the same work
    latent = encode_latent(editor.pipe, base, editor.runtime)
    text = encode_text(editor.pipe, settings.rare_prompt, editor.runtime, base.size)
    rss_loaded = rss_mib()
    start = time.perf_counter()
    editor.tune(image, settings)
    tune_s = time.perf_counter() - start
    bare, tuned = [], []
    for _ in range(ROUNDS):  # interleaved, so load from other processes hits both alike
        bare += bare_step_times(editor, latent, text, settings, ROUND_STEPS)
        tuned += tune_step_times(editor, image, replace(settings, steps=ROUND_STEPS))
    edit_s = first_edit_seconds(editor, image, EditSettings(steps=edit_steps, strength=1.0), settings)
    default_s, auto_s = auto_costs(editor, image, settings, edit_steps)
    return {
        "method": method,
        "tune_steps": settings.steps,
        "tune_s": tune_s,
        "tune_step_ms": 1000 * statistics.median(tuned),
        "bare_step_ms": 1000 * statistics.median(bare),
        "edit_s": edit_s,
        "edit_default_s": default_s,
        "auto_edit_s": auto_s,
        "rss_loaded_mib": rss_loaded,
        "rss_peak_mib": rss_mib(),
    }


def measure(method: str, model: str, cache: str, tune_steps: int | None, edit_steps: int) -> dict:
    """`measure_in_process` in a fresh interpreter (`python -m unitune.benchmark.costs`)."""
    command = [sys.executable, "-m", "unitune.benchmark.costs", method, "--model", model, "--cache", cache]
    command += ["--edit-steps", str(edit_steps)]
    if tune_steps is not None:
        command += ["--tune-steps", str(tune_steps)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="costs of one tune method (prints one JSON line)")
    parser.add_argument("method", choices=("full", "lora"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--tune-steps", type=int, help="[default: the model's for the method]")
    parser.add_argument("--edit-steps", type=int, default=20)
    args = parser.parse_args()
    costs = measure_in_process(args.method, args.model, args.cache, args.tune_steps, args.edit_steps)
    print(json.dumps(costs))


if __name__ == "__main__":
    main()
