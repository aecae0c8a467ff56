"""Does scaling the tune at sampling time help UniTune? The tuned weights are the base plus an update;
sampling with base + alpha * update (alpha < 1 weakens the tune, as a LoRA's scale does in diffusers and
A1111) moves along the binding / editing trade-off without training again, so it could be a dial like
guidance and strength. Full tunes at each rate (128 steps, unitune's own tune otherwise), then R alone
and every edit sampled at each alpha. Embedded model, edit benchmark validation split, same seeds. A
benchmark, not a test; results in docs/binding.md ("Scaling the tune at sampling time").

Usage: HF_HUB_OFFLINE=1 python bench/tune_scale.py SCENES RATES ALPHAS    e.g. 8 1e-4,2e-4 1,0.8,0.6

Prints per `rate@alpha` and (guidance, strength): R alone scored as a no-op edit (preserved %, median
PSNR to the base), and the edits (success, expressive, preserved %). THREADS=1 runs one thread.
"""

import os
import sys
import time

import torch
from variant_tunes import CELLS, print_summary, scored_samples

from unitune import Editor, TuneSettings
from unitune.benchmark.edits import base_scenes, edits_for_scene
from unitune.shapes.world import render_pil
from unitune.tuning import encode_latent, encode_text, train


def scaled(base: dict, tuned: dict, alpha: float) -> dict:
    return {name: base[name] + alpha * (tuned[name] - base[name]) for name in base}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    scenes, rates = int(sys.argv[1]), [float(r) for r in sys.argv[2].split(",")]
    alphas = [float(a) for a in sys.argv[3].split(",")]
    editor = Editor.load(None, device="cpu", cache_dir=None)
    pipe, runtime = editor.pipe, editor.runtime
    rare = editor.default_tune_settings().rare_prompt
    base_weights = {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}
    rows, started = [], time.time()
    for number, scene in enumerate(base_scenes("validation", scenes)):
        edits, base = edits_for_scene("validation", number, scene), editor.prepare_image(render_pil(scene))
        latent = encode_latent(pipe, base, runtime)
        text = encode_text(pipe, rare, runtime, base.size)
        for rate in rates:
            settings = TuneSettings(method="full", learning_rate=rate)
            with editor.weights.training(settings):
                train(pipe, latent, text, settings, runtime)
                tuned = {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}
                for alpha in alphas:
                    pipe.unet.load_state_dict(scaled(base_weights, tuned, alpha))
                    rows += scored_samples(editor, base, rare, edits, f"{rate:g}@{alpha:g}", CELLS)
        print(f"scene {number} {time.time() - started:.0f}s", flush=True)
    print_summary(rows)


if __name__ == "__main__":
    main()
