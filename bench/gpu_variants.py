"""Where a full-size SD 1.5 tune and edit spend their time on a GPU: the current code against candidate
changes, each timed the same way (random weights from the shipped configs, 576x432 px, batch 4).

    python bench/gpu_variants.py --steps 32 --json out/variants.json
    python bench/gpu_variants.py --tiny --device cpu --steps 2      # the same code, tiny (a smoke run)

Rows: LoRA and full tune steps/s (after warm-up steps) and peak memory, with the UNet's frozen weights in
float32 (today) or in the compute dtype, channels_last or not; a 50-step edit with float32 or compute-dtype
weights; then a profile of one LoRA and one full step (top CUDA kernels) to `--profile`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_check import Peak, _sync, make_editor, photo  # noqa: E402


def tune_rate(pipe, runtime, latent, text, method, steps, checkpointing="off"):
    from unitune import TuneSettings
    from unitune.tuning import add_lora, remove_lora, train

    settings = TuneSettings(
        method=method, steps=steps, batch_size=4, seed=3, gradient_checkpointing=checkpointing
    )
    if method == "lora":
        add_lora(pipe.unet, settings.lora_rank, settings.lora_targets, seed=3)
        for name, param in pipe.unet.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()  # trained weights stay float32 (mixed precision)
    stamps = []
    with Peak(runtime.device) as peak:
        train(pipe, latent, text, settings, runtime, progress=lambda _: stamps.append(time.perf_counter()))
        _sync(runtime.device)
    remove_lora(pipe.unet)
    warm = min(4, steps // 2)
    rate = (len(stamps) - 1 - warm) / (stamps[-1] - stamps[warm]) if len(stamps) > warm + 1 else 0.0
    return rate, peak.gb


def edit_seconds(editor, steps):
    from unitune import EditSettings

    settings = EditSettings(steps=steps, strength=1.0, guidance=7.5)
    editor.generate(["warm"], EditSettings(steps=2))
    with Peak(editor.runtime.device) as peak:
        started = time.perf_counter()
        editor.generate(["a photo"], settings)  # the sampler of an edit at strength 1, without a tune
        _sync(editor.runtime.device)
        return time.perf_counter() - started, peak.gb


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--edit-steps", type=int, default=50)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    from unitune.loading import quiet_libraries
    from unitune.tuning import encode_latent, encode_text

    quiet_libraries()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        editor = make_editor("sd15", args.tiny, args.device, None, Path(cache))
        pipe, runtime = editor.pipe, editor.runtime
        image = editor.prepare_image(photo(editor.native_size * 2))
        latent = encode_latent(pipe, image, runtime)
        text = encode_text(pipe, "a sks photo", runtime, image.size)

        def record(what, rate, gb):
            rows.append({"what": what, "rate": round(rate, 3), "peak_gb": round(gb, 2)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

        base_state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
        for dtype_name in ("float32", "compute"):
            if dtype_name == "compute":
                pipe.unet.to(runtime.dtype)
            for layout in ("contiguous", "channels_last"):
                pipe.unet.to(
                    memory_format=torch.channels_last
                    if layout == "channels_last"
                    else torch.contiguous_format
                )
                rate, gb = tune_rate(pipe, runtime, latent, text, "lora", args.steps)
                record(f"lora steps/s, frozen {dtype_name}, {layout}", rate, gb)
                if dtype_name == "float32":
                    rate, gb = tune_rate(pipe, runtime, latent, text, "full", args.steps)
                    record(f"full steps/s, checkpointing off, {layout}", rate, gb)
                    pipe.unet.load_state_dict(base_state)
            seconds, gb = edit_seconds(editor, args.edit_steps)
            record(f"edit s ({args.edit_steps} steps), weights {dtype_name}", seconds, gb)
        pipe.unet.to(torch.float32, memory_format=torch.contiguous_format)
        pipe.unet.load_state_dict(base_state)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + (
                [ProfilerActivity.CUDA] if runtime.device.type == "cuda" else []
            )
            lines = []
            for method in ("lora", "full"):
                tune_rate(pipe, runtime, latent, text, method, 2)
                with profile(activities=activities) as prof:
                    tune_rate(pipe, runtime, latent, text, method, 3)
                sort = "self_cuda_time_total" if runtime.device.type == "cuda" else "self_cpu_time_total"
                lines += [f"## {method}, 3 steps", prof.key_averages().table(sort_by=sort, row_limit=25), ""]
                pipe.unet.load_state_dict(base_state)
            args.profile.write_text("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
