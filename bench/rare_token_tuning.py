"""Does tuning R's token embeddings help UniTune? Textual inversion (Gal et al. 2022) binds an image to a
new token by training only its embedding; "pivotal tuning" trains the token and the generator together.
Here a full tune of the UNet at rate `unet` trains, alongside it, the text encoder's input embeddings of
R's tokens at rate `text` (every other row frozen), against the plain tune (`text` = 0: unitune's own
tune, same draws and optimizer). Embedded model, edit benchmark validation split, same seeds. A
benchmark, not a test; results in docs/core.md ("Tuning R's token embeddings").

Usage: HF_HUB_OFFLINE=1 python bench/rare_token_tuning.py SCENES MODE [MODE ...]
       a MODE is `unet_rate/text_rate`, e.g. `1e-4/0` (plain), `1e-4/1e-3` or `0/5e-3` (tokens only)

Prints per mode and (guidance, strength): R alone scored as a no-op edit (preserved %, median PSNR to
the base), and the edits (success, expressive, preserved %).
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
from unitune.pipelines import Conditioning
from unitune.progress import RunControl
from unitune.shapes.world import render_pil
from unitune.tuning import encode_latent, loss_of, noisy_batch, trainable_parameters, training_scheduler

CELLS = ((3, 1.0), (6, 1.0))
BATCH = 4


def rare_conditioning(pipe, rare: str, runtime) -> Conditioning:
    """R's conditioning with the graph to the text encoder's embeddings kept (the SD 1.x path)."""
    embeds, _ = pipe.encode_prompt(rare, runtime.device, 1, False)
    return Conditioning(embeds.float())


def tune(editor, base, rare, unet_rate, text_rate, steps=128):
    pipe, runtime = editor.pipe, editor.runtime
    latent = encode_latent(pipe, base, runtime)
    scheduler = training_scheduler(pipe)
    table = pipe.text_encoder.get_input_embeddings().weight
    rows = torch.tensor(pipe.tokenizer(rare, add_special_tokens=False).input_ids)
    mask = torch.zeros(table.shape[0], 1)
    mask[rows] = 1
    groups = []
    if unet_rate:
        groups.append({"params": trainable_parameters(pipe.unet, "full"), "lr": unet_rate})
    else:
        pipe.unet.requires_grad_(False)
    hook = None
    if text_rate:
        table.requires_grad_(True)
        hook = table.register_hook(lambda grad: grad * mask)
        groups.append({"params": [table], "lr": text_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0, fused=True)
    generator = torch.Generator().manual_seed(0)
    fixed = rare_conditioning(pipe, rare, runtime).expand(BATCH) if not text_rate else None
    pipe.unet.train()
    for _ in range(steps):
        noisy, t, target = noisy_batch(scheduler, latent, BATCH, generator)
        text = fixed if fixed is not None else rare_conditioning(pipe, rare, runtime).expand(BATCH)
        loss = loss_of(pipe.unet, noisy, t, target, text, runtime)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if hook is not None:
        hook.remove()
    table.requires_grad_(False)
    table.grad = None
    pipe.unet.eval()
    pipe.unet.requires_grad_(False)


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    editor = Editor.load(None, device="cpu", cache_dir=None)
    pipe = editor.pipe
    rare = editor.default_tune_settings().rare_prompt
    table = pipe.text_encoder.get_input_embeddings().weight
    original_table = table.detach().clone()
    nscenes, modes = int(sys.argv[1]), sys.argv[2:]
    rows, started = [], time.time()
    for number, scene in enumerate(base_scenes("validation", nscenes)):
        edits, base = edits_for_scene("validation", number, scene), editor.prepare_image(render_pil(scene))
        for mode in modes:
            unet_rate, text_rate = (float(x) for x in mode.split("/"))
            editor.weights.restore_base()
            editor.weights.snapshot_base()
            editor.weights._full_applied = True
            tune(editor, base, rare, unet_rate, text_rate)
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
            with torch.no_grad():
                table.copy_(original_table)
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
