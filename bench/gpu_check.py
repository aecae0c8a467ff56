"""A GPU check anyone can run: full-size SD 1.5 and SDXL with random weights, built from the configs the
package ships (nothing downloaded), timed through the public API: tune (full, LoRA), edit, peak memory.

Usage:
    python bench/gpu_check.py                          # on a GPU: SD 1.5 at 512 px, SDXL at 1024 px
    python bench/gpu_check.py --families sd15 --json out/gpu.json
    python bench/gpu_check.py --tiny --device cpu      # the same code on tiny pipelines (the test suite)
    python bench/gpu_check.py --families sdxl --no-compare-checkpointing   # one full tune, not two
    python bench/gpu_check.py --families sdxl --methods lora --lora-checkpointing on

Random weights are fine for cost: every operation does the same work as with trained weights. Timings
follow a warm-up (one tune step and one edit), which also pays the CUDA start-up. A tune's time is from
the call to its last step, encoding the image and R included (the cache write, 3.4 GB for a full SD 1.5
tune, is reported apart); steps/s is steps over that time. An edit
is timed with its tune already applied (the second edit of an image). Peak memory is
torch.cuda.max_memory_reserved over each measured call after emptying the allocator's cache, what the card
must hold (a CUDA graph's private memory counts there, not in the allocated peak, also reported); on a CPU
the process's peak RSS so far. `--cuda-graphs off` times the eager calls; `--check-graphs` first compares
a short tune and edit replayed and eager.
Prints a markdown table with the issue's targets; `--json` writes the rows. A tune that runs out of
memory is a row that says so. The H100 tables and what limits them: docs/lab/gpu-checks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

# the targets of issue 12 for one H100 (SD 1.5 at 512 px; SDXL at 1024 px within 3x of them)
TARGETS = {"tune full": (20.0, 16.0), "tune lora": (12.0, 8.0), "edit": (2.0, None)}
XL_FACTOR = 3.0

TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    sample_size=16,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
)
TINY_VAE = dict(
    block_out_channels=[32, 64],
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    sample_size=32,
)
TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)


def build_pipeline(family: str, tiny: bool, device: torch.device):
    """An img2img pipeline of the family ("sd15" or "sdxl") with random weights, from the shipped configs
    (`tiny`: the same architecture shrunk to test size)."""
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from unitune.loading import as_img2img, clip_tokenizer, config_dir

    folder = config_dir("sdxl" if family == "sdxl" else "sd1")
    unet_config = UNet2DConditionModel.load_config(folder / "unet")
    vae_config = AutoencoderKL.load_config(folder / "vae")
    text_configs = [CLIPTextConfig.from_pretrained(folder / "text_encoder")]
    if family == "sdxl":
        text_configs.append(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    if tiny:
        unet_config.update(TINY_UNET, cross_attention_dim=32 * len(text_configs))
        if family == "sdxl":
            unet_config.update(
                attention_head_dim=(2, 4),
                transformer_layers_per_block=(1, 2),
                addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=6 * 8 + 32,
            )
        else:
            unet_config.update(attention_head_dim=8)
        vae_config.update(TINY_VAE)
        text_configs = [
            CLIPTextConfig(**{**c.to_dict(), **TINY_TEXT, "projection_dim": 32}) for c in text_configs
        ]
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    import diffusers

    scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    with device:  # random initialisation where the weights will live
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        text_encoder = CLIPTextModel(text_configs[0])
        if family == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection(text_configs[1])
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae,
            text_encoder,
            text_encoder_2,
            clip_tokenizer(),
            clip_tokenizer("!"),
            unet,
            scheduler,
            add_watermarker=False,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae, text_encoder, clip_tokenizer(), unet, scheduler, None, None, requires_safety_checker=False
        )
    return as_img2img(pipe, f"random:{family}")


def make_editor(
    family: str, tiny: bool, device: str | None, dtype: str | None, cache_dir: Path, cuda_graphs=None
):
    from unitune import Editor
    from unitune.cache import TuneCache
    from unitune.loading import pick_runtime

    runtime = pick_runtime(device, dtype, cuda_graphs)
    pipe = build_pipeline(family, tiny, runtime.device).to(runtime.device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.requires_grad_(False).eval()
    return Editor(pipe, f"random:{family}{'-tiny' if tiny else ''}", runtime, TuneCache(cache_dir, "none"))


def photo(size: int):
    """A 4:3 test photo with some structure (the working size follows the model's native pixel count)."""
    import numpy as np
    from PIL import Image

    height, width = size * 3 // 4, size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    return Image.fromarray(pixels.astype(np.uint8))


class Peak:
    """Peak memory over a block, in GB: on CUDA the allocator's peak of memory reserved from the card
    (`gb`; what the block needs, a CUDA graph's private memory included, which the peak of allocated
    memory, `allocated_gb`, does not count once captured), or on the CPU the process's peak RSS."""

    def __init__(self, device: torch.device):
        self.device, self.gb, self.allocated_gb = device, 0.0, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            gc.collect()
            torch.cuda.empty_cache()  # so the reserved peak counts this block's needs, not earlier ones
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.gb = torch.cuda.max_memory_reserved() / 1e9
            self.allocated_gb = torch.cuda.max_memory_allocated() / 1e9
        else:
            self.gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def measure(family: str, args) -> list[dict]:
    from unitune import EditSettings, TuneSettings, UnituneError
    from unitune.tuning import encode_latent, uses_checkpointing

    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        started = time.perf_counter()
        editor = make_editor(family, args.tiny, args.device, args.dtype, Path(cache_dir), args.cuda_graphs)
        build_s = time.perf_counter() - started
        image = photo(editor.native_size * 2)
        work = editor.work_size(image.size)
        device = editor.runtime.device
        edit = EditSettings(steps=args.edit_steps, strength=1.0, guidance=7.5)
        warm_up = TuneSettings(method="lora", steps=1, seed=99)
        editor.edit(image, ["warm-up"], EditSettings(steps=2), warm_up)  # CUDA start-up, kernels
        # the full tune again with checkpointing the other way round (by default it is on where the tune
        # would not fit the free memory without it)
        latent = encode_latent(editor.pipe, editor.prepare_image(image), editor.runtime)
        default_on = uses_checkpointing(TuneSettings(), editor.runtime, editor.pipe.unet, latent)
        other = "off" if default_on else "on"
        methods = args.methods.split(",")
        tunes = (
            [("full", "auto")] + [("full", other)] * args.compare_checkpointing if "full" in methods else []
        )
        tunes += [("lora", args.lora_checkpointing)] if "lora" in methods else []
        if args.check_graphs:
            rows.append(graph_check(family, editor, image))
        for method, checkpointing in tunes:
            # another seed for the second full tune: checkpointing is not in the key, so it would be cached
            seed = 1 if checkpointing == "auto" else 2
            tune = TuneSettings(method=method, steps=args.tune_steps, batch_size=4, seed=seed)
            tune = replace(tune, gradient_checkpointing=checkpointing)
            stamps: list[float] = []
            editor.restore_base()
            _sync(device)
            checkpointed = uses_checkpointing(tune, editor.runtime, editor.pipe.unet, latent)
            what = f"tune {method}" + ("" if checkpointing == "auto" else f", checkpointing {checkpointing}")
            try:
                with Peak(device) as peak:
                    started = time.perf_counter()
                    result = editor.tune(
                        image, tune, progress=lambda _, stamps=stamps: stamps.append(time.perf_counter())
                    )
                    _sync(device)
                    total = time.perf_counter() - started
            except UnituneError as error:  # out of memory: a row that says so, and on to the next
                print(f"{family} {what}: {error}", file=sys.stderr)
                rows.append(row(family, editor, what + " (out of memory)", float("nan"), 0.0, peak.gb))
                continue
            assert result.trained
            tune_s = stamps[-1] - started if stamps else total
            rows.append(
                row(family, editor, what, tune_s, len(stamps) / tune_s, peak.gb, total - tune_s, build_s)
            )
            rows[-1].update(checkpointing=checkpointed, peak_allocated_gb=_rounded(peak.allocated_gb))
            if checkpointing != "auto":
                continue
            editor.edit(image, ["warm"], EditSettings(steps=2), tune)  # applies the tune (read, merge)
            with Peak(device) as peak:
                _sync(device)
                started = time.perf_counter()
                editor.edit(image, ["a photo"], edit, tune)
                _sync(device)
                edit_s = time.perf_counter() - started
            rows.append(
                row(family, editor, f"edit ({method} tune)", edit_s, args.edit_steps / edit_s, peak.gb)
            )
            rows[-1]["peak_allocated_gb"] = _rounded(peak.allocated_gb)
    for entry in rows:
        entry["size"] = f"{work[0]}x{work[1]}"
    return rows


def graph_check(family: str, editor, image) -> dict:
    """The same short LoRA tune and edit with the UNet calls replayed as CUDA graphs and eagerly: the
    largest differences of the step losses and of the pixels (0-255), and both times."""
    import numpy as np

    from unitune import EditSettings, TuneSettings
    from unitune.cache import key_settings

    tune = TuneSettings(method="lora", steps=16, batch_size=4, seed=5)
    edit = EditSettings(steps=16, strength=1.0, guidance=7.5, seed=3)
    results, graphs_setting = {}, editor.runtime.cuda_graphs
    for captured in (True, False):
        editor.runtime = replace(editor.runtime, cuda_graphs=captured)
        editor.restore_base()
        started = time.perf_counter()
        tensors, losses = editor.train(image, tune)
        editor.weights.restore_base()
        with editor.weights.applied(tensors, key_settings(tune)):
            pixels = np.asarray(editor.generate(["a photo"], edit)[0].image, dtype=np.float64)
        _sync(editor.runtime.device)
        results[captured] = (np.array(losses), pixels, time.perf_counter() - started)
    editor.runtime = replace(editor.runtime, cuda_graphs=graphs_setting)
    (graph_losses, graph_pixels, graph_s), (eager_losses, eager_pixels, eager_s) = (
        results[True],
        results[False],
    )
    entry = {
        "family": family,
        "what": "graph check (16-step LoRA tune + 16-step edit)",
        "loss_max_abs_diff": float(np.abs(graph_losses - eager_losses).max()),
        "pixel_max_abs_diff": float(np.abs(graph_pixels - eager_pixels).max()),
        "captured_s": round(graph_s, 2),
        "eager_s": round(eager_s, 2),
    }
    print(json.dumps(entry), file=sys.stderr, flush=True)
    return entry


def row(family, editor, what, seconds, steps_per_s, peak_gb, save_s=None, build_s=None) -> dict:
    entry = {
        "family": family,
        "what": what,
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps_per_s, 2),
        "peak_gb": round(peak_gb, 2),
        "cache_write_s": None if save_s is None else round(save_s, 2),
        "build_s": None if build_s is None else round(build_s, 1),
        "dtype": str(editor.runtime.dtype).removeprefix("torch."),
        "cuda_graphs": editor.runtime.cuda_graphs and editor.runtime.device.type == "cuda",
    }
    print(json.dumps(entry), file=sys.stderr, flush=True)  # as it comes, in case a later row fails
    return entry


def _rounded(gb: float | None) -> float | None:
    return None if gb is None else round(gb, 2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def target(entry: dict, tiny: bool) -> str:
    """The issue's target for the row (times x3 for SDXL) and whether it is met."""
    if tiny:
        return "- (tiny)"
    key = "edit" if entry["what"].startswith("edit") else entry["what"].split(",")[0]
    seconds, memory = TARGETS[key]
    factor = XL_FACTOR if entry["family"] == "sdxl" else 1.0
    met = entry["seconds"] <= seconds * factor and (memory is None or entry["peak_gb"] <= memory * factor)
    memory_text = f", <= {memory * factor:g} GB" if memory is not None else ""
    return f"<= {seconds * factor:g} s{memory_text}: {'met' if met else 'missed'}"


def table(rows: list[dict], device_name: str, tiny: bool) -> str:
    lines = [
        f"device: {device_name}",
        "",
        "| model | size | what | checkpointing | CUDA graphs | s | steps/s | peak GB (allocated) "
        "| cache write s | target (H100) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    checks = [entry for entry in rows if "pixel_max_abs_diff" in entry]
    for entry in (entry for entry in rows if entry not in checks):
        write = "" if entry["cache_write_s"] is None else f"{entry['cache_write_s']:g}"
        checkpointing = {None: "", True: "on", False: "off"}[entry.get("checkpointing")]
        allocated = "" if entry.get("peak_allocated_gb") is None else f" ({entry['peak_allocated_gb']:g})"
        lines.append(
            f"| {entry['family']} | {entry['size']} | {entry['what']} | {checkpointing} | "
            f"{'on' if entry.get('cuda_graphs') else 'off'} | "
            f"{entry['seconds']:g} | {entry['steps_per_s']:g} | {entry['peak_gb']:g}{allocated} | {write} | "
            f"{target(entry, tiny)} |"
        )
    for entry in checks:
        lines.append(
            f"\n{entry['family']} {entry['what']}: "
            f"losses differ by at most {entry['loss_max_abs_diff']:.3g}, "
            f"pixels by {entry['pixel_max_abs_diff']:g} of 255; {entry['captured_s']} s captured, "
            f"{entry['eager_s']} s eager"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    parser.add_argument("--tiny", action="store_true", help="tiny pipelines (the CPU test)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu [default: best available]")
    parser.add_argument("--dtype", default=None, help="autocast precision [default: float16 on CUDA]")
    parser.add_argument("--tune-steps", type=int, default=128)
    parser.add_argument("--edit-steps", type=int, default=50)
    parser.add_argument(
        "--compare-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the full tune with gradient checkpointing the other way round",
    )
    parser.add_argument("--methods", default="full,lora", help="comma-separated tune methods: full, lora")
    parser.add_argument(
        "--lora-checkpointing",
        default="auto",
        choices=("auto", "on", "off"),
        help="gradient checkpointing for the LoRA tune (not auto: no edit row after it)",
    )
    parser.add_argument("--cuda-graphs", default=None, help="auto, on or off [default: auto, on with CUDA]")
    parser.add_argument(
        "--check-graphs",
        action="store_true",
        help="first compare a short tune and edit replayed as CUDA graphs with the eager ones",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    from unitune.loading import quiet_libraries

    quiet_libraries()
    rows = []
    if not set(args.methods.split(",")) <= {"full", "lora"}:
        parser.error(f"unknown method in {args.methods!r}; choose full and/or lora")
    for family in args.families.split(","):
        if family not in ("sd15", "sdxl"):
            parser.error(f"unknown family {family!r}; choose sd15 or sdxl")
        rows += measure(family, args)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{device.type} ({torch.__version__})"
    )
    print(table(rows, name + (" (tiny pipelines)" if args.tiny else ""), args.tiny))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": name, "tiny": args.tiny, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
