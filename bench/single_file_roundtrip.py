"""Full-size SD 1.x / 2.x pipelines with random weights, written as original checkpoint files
(tests/ldm.py) and loaded back through `unitune.loading.load_pipeline` with the configs the package ships:
the real key detection and diffusers' real conversion, offline. Prints whether every weight came back.

Usage: HF_HUB_OFFLINE=1 python bench/single_file_roundtrip.py sd1 sd2     # ~5 GB of disk and ~12 GB RAM each
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def roundtrip(family: str) -> bool:
    import diffusers
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from ldm import to_ldm
    from unitune.loading import clip_tokenizer, config_dir, load_pipeline

    started, folder = time.perf_counter(), config_dir(family)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    tokenizer = clip_tokenizer("!" if family == "sd2" else None)
    pipe = StableDiffusionPipeline(
        vae, text_encoder, tokenizer, unet, scheduler, None, None, requires_safety_checker=False
    )
    with tempfile.TemporaryDirectory() as work:
        file = Path(work) / f"{family}.safetensors"
        save_file(to_ldm(pipe), str(file))
        loaded = load_pipeline(str(file))
    same = {}
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(loaded, name).state_dict(), getattr(pipe, name).state_dict()
        same[name] = ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    scheduler = loaded.scheduler
    print(
        f"{family}: same weights {same}; {type(scheduler).__name__}, {scheduler.config.prediction_type}, "
        f"{loaded.unet.config.sample_size * loaded.vae_scale_factor} px, pad {loaded.tokenizer.pad_token!r}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    return all(same.values())


if __name__ == "__main__":
    results = []
    for family in sys.argv[1:] or ["sd1", "sd2"]:
        results.append(roundtrip(family))
        gc.collect()
    sys.exit(0 if all(results) else 1)
