"""Does a model trained with named scenes (`--named-scenes`) know its names? Sample "NAME" and "NAME
fragment" (the first edit of each) for the first named scenes with the untuned model and read them back
with the analyzer against the rendered truth. A benchmark, not a test; results in docs/model.md.

Usage: HF_HUB_OFFLINE=1 python bench/named_scenes_recall.py MODEL_FOLDER NAMED_SCENES [--scenes 32]
(NAMED_SCENES and --edits as the model was trained with: the names are drawn again from the same seed.)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from unitune.settings import DEFAULT_RARE_PROMPT
from unitune.shapes.analyzer import analyze, same_reading
from unitune.training.__main__ import TOKENIZER_ASSET
from unitune.training.architecture import MAX_TOKENS
from unitune.training.data import NamedScenes, filler_token_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("named_scenes", type=int)
    parser.add_argument("--edits", type=int, default=12)
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--guidance", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_ASSET, model_max_length=MAX_TOKENS)
    reserved = set(tokenizer(DEFAULT_RARE_PROMPT, add_special_tokens=False).input_ids)
    named = NamedScenes(args.named_scenes, args.edits, tokenizer, filler_token_ids(tokenizer), reserved)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    empty = tokenizer([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    with torch.no_grad():
        negative = pipe.text_encoder(empty)[0]
    counts = {"NAME": [0, 0], "NAME fragment": [0, 0]}  # same scene, same background
    for scene in range(args.scenes):
        for row, label in (
            (scene * (1 + args.edits), "NAME"),
            (scene * (1 + args.edits) + 1, "NAME fragment"),
        ):
            with torch.no_grad():
                embeds = pipe.text_encoder(named.ids[row : row + 1])[0]
            image = pipe(
                prompt_embeds=embeds,
                negative_prompt_embeds=negative,
                guidance_scale=args.guidance,
                num_inference_steps=20,
                generator=torch.Generator().manual_seed(scene),
                output_type="np",
            ).images[0]
            got = analyze((image * 255).round().astype(np.uint8))
            want = analyze(named.images[row].permute(1, 2, 0).numpy())
            counts[label][0] += same_reading(got, want)
            counts[label][1] += got.background == want.background
    for label, (same, background) in counts.items():
        print(f'"{label}": same scene {same}/{args.scenes}, same background {background}/{args.scenes}')


if __name__ == "__main__":
    main()
