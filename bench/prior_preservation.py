"""Does DreamBooth's prior preservation help UniTune? A full tune whose every batch holds 2 noised copies
of the base (with R) and 2 images the untuned model drew for captions of other random scenes (with
their captions; Ruiz et al. 2023, "DreamBooth", section 4.2), against the plain tune (4 copies of the
base), at the same 128 steps and rate 1e-4. Embedded model, edit benchmark validation split, same seeds.
A benchmark, not a test; results in docs/core.md ("Prior preservation: tried, not adopted").

Usage: HF_HUB_OFFLINE=1 python bench/prior_preservation.py SCENES MODES     e.g. 8 plain,prior

Prints per mode and (guidance, strength): R alone scored as a no-op edit (preserved %, median PSNR to
the base), and the edits (success, expressive, preserved %). The tune loop is written out here (the
plain mode reproduces unitune's own tune: same draws, same optimizer); edits sample through the Editor.
"""

import collections
import random
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
from unitune.shapes.world import caption, render_pil, sample_scene
from unitune.tuning import (
    encode_latent,
    encode_text,
    loss_of,
    noisy_batch,
    trainable_parameters,
    training_scheduler,
)


def main() -> None:
    torch.set_num_threads(2)
    ed = Editor.load(None, device="cpu", cache_dir=None)
    pipe, rt = ed.pipe, ed.runtime
    R = ed.default_tune_settings().rare_prompt
    nscenes = int(sys.argv[1])
    modes = sys.argv[2].split(",")
    rng = random.Random(777)
    prior_caps = [caption(sample_scene(rng, num_objects=1 + i % 2)) for i in range(8)]
    prior_imgs = [r.image for r in ed.generate(prior_caps, EditSettings(guidance=6, steps=20, seed=0))]
    sch = training_scheduler(pipe)

    def tune(base, mode, lr=1e-4, steps=128):
        lat = encode_latent(pipe, base, rt)
        txt = encode_text(pipe, R, rt, base.size)
        plats = [encode_latent(pipe, im, rt) for im in prior_imgs]
        ptxt = [encode_text(pipe, c, rt, base.size) for c in prior_caps]
        unet = pipe.unet
        params = trainable_parameters(unet, "full")
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
        g = torch.Generator().manual_seed(0)
        unet.train()
        for step in range(steps):
            if mode == "plain":
                noisy, t, tgt = noisy_batch(sch, lat, 4, g)
                cond = txt.expand(4)
            else:
                n1, t1, g1 = noisy_batch(sch, lat, 2, g)
                i, j = (2 * step) % 8, (2 * step + 1) % 8
                n2a, t2a, g2a = noisy_batch(sch, plats[i], 1, g)
                n2b, t2b, g2b = noisy_batch(sch, plats[j], 1, g)
                noisy = torch.cat([n1, n2a, n2b])
                t = torch.cat([t1, t2a, t2b])
                tgt = torch.cat([g1, g2a, g2b])
                cond = Conditioning.cat([txt.expand(2), ptxt[i], ptxt[j]])
            loss = loss_of(unet, noisy, t, tgt, cond, rt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        unet.eval()
        unet.requires_grad_(False)

    rows = []
    t0 = time.time()
    for number, scene in enumerate(base_scenes("validation", nscenes)):
        edits, base = edits_for_scene("validation", number, scene), render_pil(scene)
        base = ed.prepare_image(base)
        for mode in modes:
            ed.weights.restore_base()
            ed.weights.snapshot_base()
            ed.weights._full_applied = True
            tune(base, mode)
            for gd, s in ((3, 1.0), (6, 1.0), (6, 0.8)):
                st = EditSettings(guidance=gd, strength=s, steps=20, seed=0)
                rimg, _ = ed._sample(R, st, 0, base, "R", run=RunControl())
                rs = score(np.array(rimg), replace(edits[0], target=edits[0].base))
                rows.append((mode, gd, s, "R-bound", rs["preserved"], rs["psnr_target"]))
                for x in edits:
                    img, _ = ed._sample(f"{R} {x.prompt}", st, 0, base, "e", run=RunControl())
                    sc = score(np.array(img), x)
                    rows.append((mode, gd, s, "edit", sc["success"], sc["expressive"], sc["preserved"]))
            ed.weights.restore_base()
        print(f"scene {number} {time.time() - t0:.0f}s", flush=True)
    agg = collections.defaultdict(list)
    for r in rows:
        agg[r[:4]].append(r[4:])
    for k, v in sorted(agg.items()):
        cols = list(zip(*v, strict=True))
        print(
            *k,
            len(v),
            *[f"{summary(c, i < (1 if k[3] == 'R-bound' else 3)):.1f}" for i, c in enumerate(cols)],
        )


def summary(column, is_rate: bool) -> float:
    """A rate's mean in percent, or a PSNR's median."""
    return 100 * statistics.mean(column) if is_rate else statistics.median(column)


if __name__ == "__main__":
    main()
