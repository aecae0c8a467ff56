"""Does weighting the tune's loss by timestep help UniTune? Binding errors sit in details (edges a pixel
off, colour drift), which the low-noise timesteps draw; the edit words compete with R at the high-noise
ones. A full tune whose loss weights sample i of the stratified batch (i = 0: the lowest-noise quarter of
the schedule) by w_i, at a given rate, against the plain tune (every w_i = 1, rate 1e-4: unitune's own
tune, same draws and optimizer). Embedded model, edit benchmark validation split, same seeds. A
benchmark, not a test; results in docs/core.md ("Timestep weights in the tune").

Usage: HF_HUB_OFFLINE=1 python bench/timestep_weights.py SCENES MODE [MODE ...]
       a MODE is `w0:w1:w2:w3@rate`, e.g. `1:1:1:1@1e-4` (plain) or `1:1:0.5:0.25@2e-4`

Prints per mode and (guidance, strength): R alone scored as a no-op edit (preserved %, median PSNR to
the base), and the edits (success, expressive, preserved %).
"""

import collections
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import score
from unitune.progress import RunControl
from unitune.shapes.world import render_pil
from unitune.tuning import (
    encode_latent,
    encode_text,
    loss_of,
    noisy_batch,
    trainable_parameters,
    training_scheduler,
)

CELLS = ((3, 1.0), (6, 1.0))


def parse_mode(text: str) -> tuple[torch.Tensor, float]:
    weights, rate = text.split("@")
    return torch.tensor([float(w) for w in weights.split(":")]), float(rate)


def weighted_loss(unet, noisy, steps, target, text, runtime, weights):
    """The per-sample MSE weighted by stratum, normalised so the weights average to 1."""
    if bool((weights == 1).all()):
        return loss_of(unet, noisy, steps, target, text, runtime)  # unitune's own loss, bit for bit
    with runtime.autocast():
        pred = unet(noisy, steps, **text.unet_kwargs()).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weights / weights.mean()).mean()


def tune(editor, base, rare, weights, rate, steps=128):
    pipe, runtime = editor.pipe, editor.runtime
    latent = encode_latent(pipe, base, runtime)
    text = encode_text(pipe, rare, runtime, base.size).expand(len(weights))
    scheduler = training_scheduler(pipe)
    params = trainable_parameters(pipe.unet, "full")
    optimizer = torch.optim.AdamW(params, lr=rate, weight_decay=0.0, fused=True)
    generator = torch.Generator().manual_seed(0)
    pipe.unet.train()
    for _ in range(steps):
        noisy, t, target = noisy_batch(scheduler, latent, len(weights), generator)
        loss = weighted_loss(pipe.unet, noisy, t, target, text, runtime, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    pipe.unet.eval()
    pipe.unet.requires_grad_(False)


def main() -> None:
    torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
    editor = Editor.load(None, device="cpu", cache_dir=None)
    rare = editor.default_tune_settings().rare_prompt
    nscenes, modes = int(sys.argv[1]), sys.argv[2:]
    rows, started = [], time.time()
    for number, scene in enumerate(base_scenes("validation", nscenes)):
        edits, base = edits_for_scene("validation", number, scene), editor.prepare_image(render_pil(scene))
        for mode in modes:
            weights, rate = parse_mode(mode)
            editor.weights.restore_base()
            editor.weights.snapshot_base()
            editor.weights._full_applied = True
            tune(editor, base, rare, weights, rate)
            for guidance, strength in CELLS:
                settings = EditSettings(guidance=guidance, strength=strength, steps=20, seed=0)
                image, _ = editor._sample(rare, settings, 0, base, "R", run=RunControl())
                bound = score(np.array(image), replace(edits[0], target=edits[0].base))
                rows.append((mode, guidance, strength, "R-bound", bound["preserved"], bound["psnr_target"]))
                for edit in edits:
                    image, _ = editor._sample(
                        f"{rare} {edit.prompt}", settings, 0, base, "e", run=RunControl()
                    )
                    s = score(np.array(image), edit)
                    rows.append(
                        (mode, guidance, strength, "edit", s["success"], s["expressive"], s["preserved"])
                    )
            editor.weights.restore_base()
        print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    groups = collections.defaultdict(list)
    for row in rows:
        groups[row[:4]].append(row[4:])
    for key, values in sorted(groups.items()):
        columns = list(zip(*values, strict=True))
        rates = 1 if key[3] == "R-bound" else 3
        print(*key, len(values), *[f"{summary(c, i < rates):.1f}" for i, c in enumerate(columns)])


def summary(column, is_rate: bool) -> float:
    """A rate's mean in percent, or a PSNR's median."""
    return 100 * statistics.mean(column) if is_rate else statistics.median(column)


if __name__ == "__main__":
    main()
