"""Does training only part of the UNet help UniTune? A full tune of a subset of the UNet's weights (the
rest frozen; autograd then skips the weight gradients of frozen layers and the whole backward pass below
the first trained one), against the plain tune of every weight: same 128 steps, rate 1e-4, draws and
optimizer. Custom Diffusion (Kumari et al. 2023) trains only cross-attention; a decoder-only tune skips
the encoder's backward pass. Embedded model, edit benchmark validation split, same seeds. A benchmark,
not a test; results in docs/core.md ("Training part of the UNet").

Usage: HF_HUB_OFFLINE=1 python bench/trained_parts.py SCENES PART [PART ...]
       PART: all, decoder (mid and up blocks, output layers), up (up blocks, output layers),
       attention (every transformer block), cross (cross-attention projections only)

Prints per part: seconds per tune (mean; compare only within one run), and per (guidance, strength) R
alone scored as a no-op edit (preserved %, median PSNR to the base) and the edits (success, expressive,
preserved %).
"""

import collections
import os
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from unitune import Editor, EditSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.benchmark.metrics import score
from unitune.progress import RunControl
from unitune.shapes.world import render_pil
from unitune.tuning import encode_latent, encode_text, loss_of, noisy_batch, training_scheduler

CELLS = ((3, 1.0), (6, 1.0))
BATCH = 4
PARTS = {
    "all": lambda name: True,
    "decoder": lambda name: name.startswith(("mid_block", "up_blocks", "conv_norm_out", "conv_out")),
    "up": lambda name: name.startswith(("up_blocks", "conv_norm_out", "conv_out")),
    "attention": lambda name: ".attentions." in name,
    "cross": lambda name: ".attn2.to_" in name,
}


def trained(unet, part: str) -> list[torch.nn.Parameter]:
    unet.requires_grad_(False)
    params = [p for name, p in unet.named_parameters() if PARTS[part](name)]
    for param in params:
        param.requires_grad_(True)
    return params


def tune(editor, base, rare, part, rate=1e-4, steps=128):
    pipe, runtime = editor.pipe, editor.runtime
    latent = encode_latent(pipe, base, runtime)
    text = encode_text(pipe, rare, runtime, base.size).expand(BATCH)
    scheduler = training_scheduler(pipe)
    optimizer = torch.optim.AdamW(trained(pipe.unet, part), lr=rate, weight_decay=0.0, fused=True)
    generator = torch.Generator().manual_seed(0)
    pipe.unet.train()
    for _ in range(steps):
        noisy, t, target = noisy_batch(scheduler, latent, BATCH, generator)
        loss = loss_of(pipe.unet, noisy, t, target, text, runtime)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    pipe.unet.eval()
    pipe.unet.requires_grad_(False)


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    editor = Editor.load(None, device="cpu", cache_dir=None)
    rare = editor.default_tune_settings().rare_prompt
    nscenes, parts = int(sys.argv[1]), sys.argv[2:]
    rows, seconds, started = [], collections.defaultdict(list), time.time()
    for number, scene in enumerate(base_scenes("validation", nscenes)):
        edits, base = edits_for_scene("validation", number, scene), editor.prepare_image(render_pil(scene))
        for part in parts:
            editor.weights.restore_base()
            editor.weights.snapshot_base()
            editor.weights._full_applied = True
            tune_started = time.perf_counter()
            tune(editor, base, rare, part)
            seconds[part].append(time.perf_counter() - tune_started)
            for guidance, strength in CELLS:
                settings = EditSettings(guidance=guidance, strength=strength, steps=20, seed=0)
                image, _ = editor._sample(rare, settings, 0, base, "R", run=RunControl())
                bound = score(np.array(image), replace(edits[0], target=edits[0].base))
                rows.append((part, guidance, strength, "R-bound", bound["preserved"], bound["psnr_target"]))
                for edit in edits:
                    image, _ = editor._sample(
                        f"{rare} {edit.prompt}", settings, 0, base, "e", run=RunControl()
                    )
                    s = score(np.array(image), edit)
                    rows.append(
                        (part, guidance, strength, "edit", s["success"], s["expressive"], s["preserved"])
                    )
            editor.weights.restore_base()
        print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    for part, values in seconds.items():
        print(part, "s/tune", f"{statistics.mean(values):.1f}")
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
