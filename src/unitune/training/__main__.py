"""Train the embedded shapes-world model from scratch on the CPU, resumably, and export it as a
standard diffusers StableDiffusionPipeline folder.

    python -m unitune.training --work runs/shapes --export src/unitune/embedded/shapes

Stages: (1) render a seeded pool of scenes; (2) train the autoencoder for --ae-minutes; (3) encode the
pool once; (4) train UNet + text encoder for --unet-minutes, evaluating every --eval-every minutes;
(5) export the EMA weights in fp16. Run it again with the same --work to resume where it stopped.

    python -m unitune.training --init-from src/unitune/embedded/shapes --work runs/more \
        --ae-minutes 0 --unet-minutes 60 --lr 3e-4 --export runs/more/model

continues from an exported model instead (its autoencoder kept as is, its UNet and text encoder trained
further): checkpoints do not travel between machines, the exported folder does.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

from ..settings import DEFAULT_RARE_PROMPT
from ..shapes.quality import EVALUATION_SEED, evaluate_generation
from .architecture import (
    MAX_TOKENS,
    ArchitectureConfig,
    build_autoencoder,
    build_scheduler,
    build_text_encoder,
    build_unet,
)
from .autoencoder import psnr, round_trip, train_autoencoder
from .checkpoints import Checkpointer, TrainingLog
from .data import CaptionBank, NamedScenes, RarePrefix, filler_token_ids, render_pool
from .denoiser import DenoiserTrainer
from .record import RECORD_FILE, append_run, device_name, read_record, run_summary

TOKENIZER_ASSET = Path(__file__).resolve().parents[1] / "assets" / "clip-tokenizer"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/shapes"), help="checkpoints and logs")
    parser.add_argument("--export", type=Path, default=None, help="write the pipeline folder here")
    parser.add_argument("--pool", type=int, default=30_000, help="number of training scenes")
    parser.add_argument("--ae-minutes", type=float, default=16.0)
    parser.add_argument("--unet-minutes", type=float, default=60.0)
    parser.add_argument("--eval-every", type=float, default=15.0, help="minutes between evaluations")
    parser.add_argument("--eval-count", type=int, default=64, help="captions per evaluation during training")
    parser.add_argument("--batch", type=int, default=64, help="UNet batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="UNet peak learning rate")
    parser.add_argument("--ae-batch", type=int, default=64)
    parser.add_argument("--ae-crop", type=int, default=32, help="autoencoder crop (64: whole images)")
    parser.add_argument("--caption-variants", type=int, default=8, help="captions drawn per scene up front")
    parser.add_argument(
        "--prefix-probability",
        type=float,
        default=0.3,
        help="share of captions given 1..3 random filler tokens in front (0: none, as model v2 was trained)",
    )
    parser.add_argument(
        "--amend-probability",
        type=float,
        default=0.0,
        help="share of caption variants that describe a scene one attribute away, then a fragment that "
        "sets it to this scene's (world.amended_caption; 0: none, as models v1-v4 were trained)",
    )
    parser.add_argument(
        "--named-scenes",
        type=int,
        default=0,
        help="scenes given a two-token name and trained as 'NAME' and 'NAME fragment' -> the edited scene "
        "(data.NamedScenes; 0: none, as models v1-v4 were trained)",
    )
    parser.add_argument("--named-edits", type=int, default=12, help="edited versions of each named scene")
    parser.add_argument(
        "--named-probability", type=float, default=0.3, help="share of each batch drawn from the named scenes"
    )
    parser.add_argument("--device", default=None, help="cuda when there is one, else cpu")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering the pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this exported pipeline folder's weights (a checkpoint in --work still wins)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads; 1 if other jobs share a 2-core CPU"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.manual_seed(args.seed)
    start = load_exported(args.init_from) if args.init_from else None  # a bad folder fails before any work
    args.work.mkdir(parents=True, exist_ok=True)
    run_started = time.monotonic()
    config = ArchitectureConfig()
    if args.unet_minutes > 0:  # an export-only run (--ae-minutes 0 --unet-minutes 0) keeps the record
        record = {"architecture": config.to_dict(), **vars_json(args)}
        (args.work / "config.json").write_text(json.dumps(record, indent=2))
    log = TrainingLog(args.work / "log.jsonl")

    started = time.monotonic()
    pool = render_pool(args.pool, workers=args.workers)
    pool.images = pool.images.to(device)
    held_out = render_pool(256, seed=EVALUATION_SEED).image_batch(torch.arange(256)).to(device)
    log.write(stage="data", scenes=len(pool), seconds=time.monotonic() - started, device=str(device))

    autoencoder = build_autoencoder(config).to(device)
    if start is not None:
        load_weights(autoencoder, start.vae, args.init_from)
    train_autoencoder(
        autoencoder,
        pool,
        held_out,
        Checkpointer(args.work, "autoencoder"),
        log,
        args.ae_minutes,
        batch_size=args.ae_batch,
        seed=args.seed,
        crop=args.ae_crop,
    )
    log.write(stage="autoencoder_done", psnr=psnr(round_trip(autoencoder, held_out), held_out))

    latents = cached_latents(args.work / "latents.safetensors", autoencoder, pool)
    scaling_factor = start.vae.config.scaling_factor if start else 1.0 / latents.std().item()
    autoencoder.register_to_config(scaling_factor=scaling_factor)
    latents = latents * scaling_factor
    log.write(stage="latents", scaling_factor=scaling_factor)

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_ASSET, model_max_length=MAX_TOKENS)
    captions = CaptionBank(
        pool.scenes,
        tokenizer,
        args.caption_variants,
        seed=args.seed,
        amend_probability=args.amend_probability,
    ).to(device)
    unet = build_unet(config)
    text_encoder = build_text_encoder(config, len(tokenizer))
    if start is not None:
        load_weights(unet, start.unet, args.init_from)
        load_weights(text_encoder, start.text_encoder, args.init_from)
    unet.to(device, memory_format=torch.channels_last)
    text_encoder.to(device)
    scheduler = build_scheduler()
    pipeline = StableDiffusionPipeline(
        vae=autoencoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    prefix = (
        RarePrefix(filler_token_ids(tokenizer), args.prefix_probability) if args.prefix_probability else None
    )
    named = named_scenes(args, tokenizer, autoencoder, scaling_factor, device)
    trainer = DenoiserTrainer(
        unet,
        text_encoder,
        scheduler,
        latents,
        captions,
        lr=args.lr,
        batch_size=args.batch,
        prefix=prefix,
        named=named,
    )
    evaluate = lambda: evaluate_generation(pipeline, args.eval_count, args.eval_count // 2)  # noqa: E731
    trainer.train(
        Checkpointer(args.work, "denoiser", every_minutes=5),
        log,
        args.unet_minutes,
        evaluate,
        args.eval_every,
        seed=args.seed,
    )
    run = run_summary(
        command=" ".join(shlex.quote(a) for a in ["python", "-m", "unitune.training", *sys.argv[1:]]),
        device=device_name(device),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        wall_minutes=(time.monotonic() - run_started) / 60,
        work=args.work,
        batch_size=args.batch,
    )
    runs = append_run(args.work, run)
    if args.export:
        history = read_record(args.init_from) if args.init_from else []
        with trainer.ema_weights():
            export(pipeline, args.export, [*history, *runs])
        log.write(stage="exported", path=str(args.export))


def load_exported(folder: Path) -> StableDiffusionPipeline:
    """An exported pipeline folder (safetensors only), in float32, to start training from."""
    if not (folder / "model_index.json").is_file():
        raise SystemExit(f"--init-from {folder}: not an exported pipeline folder (no model_index.json)")
    return StableDiffusionPipeline.from_pretrained(
        folder, dtype=torch.float32, use_safetensors=True, safety_checker=None
    )


def load_weights(model: torch.nn.Module, source: torch.nn.Module, folder: Path) -> None:
    """`source`'s weights into `model`; a different architecture is a one-line error, not a traceback."""
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as error:
        lines = str(error).splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        name = type(model).__name__
        raise SystemExit(f"--init-from {folder}: {name} differs from this recipe's: {detail}") from None


def named_scenes(args, tokenizer, autoencoder, scaling_factor: float, device) -> NamedScenes | None:
    """The named scenes of `--named-scenes`, their latents encoded with the (frozen) autoencoder; R's own
    tokens are never a name, so R is new to the model when a tune binds it."""
    if not args.named_scenes:
        return None
    named = NamedScenes(
        args.named_scenes,
        args.named_edits,
        tokenizer,
        filler_token_ids(tokenizer),
        reserved=set(tokenizer(DEFAULT_RARE_PROMPT, add_special_tokens=False).input_ids),
        probability=args.named_probability,
    )
    images = named.images.to(device).float().div(127.5).sub(1.0)
    named.latents = encode_images(autoencoder, images) * scaling_factor
    return named.to(device)


def cached_latents(path: Path, autoencoder, pool) -> torch.Tensor:
    """The pool's latents, encoded once per run folder (the autoencoder is frozen from here on)."""
    device = pool.images.device
    if path.exists():
        return load_file(path)["latents"].to(device)
    latents = encode_pool(autoencoder, pool)
    save_file({"latents": latents.cpu()}, path)
    return latents


@torch.no_grad()
def encode_pool(autoencoder, pool, batch: int = 256) -> torch.Tensor:
    chunks = []
    for start in range(0, len(pool), batch):
        images = pool.image_batch(torch.arange(start, min(start + batch, len(pool))))
        chunks.append(autoencoder.encode(images.contiguous(memory_format=torch.channels_last)).latents)
    return torch.cat(chunks).contiguous()


@torch.no_grad()
def encode_images(autoencoder, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Latents of images in [-1, 1], (N, 3, 64, 64)."""
    chunks = [
        autoencoder.encode(
            images[start : start + batch].contiguous(memory_format=torch.channels_last)
        ).latents
        for start in range(0, len(images), batch)
    ]
    return torch.cat(chunks).contiguous()


def export(pipeline: StableDiffusionPipeline, folder: Path, record: list[dict]) -> None:
    """Save the pipeline in fp16 safetensors with its cumulative training record, replacing `folder`
    (the defaults file `unitune.json` of a folder being replaced is kept)."""
    temporary = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    device = pipeline.unet.device
    pipeline.to("cpu", torch.float16).save_pretrained(temporary, safe_serialization=True)
    pipeline.to(device, torch.float32)
    (temporary / RECORD_FILE).write_text(json.dumps({"runs": record}, indent=2) + "\n")
    if (folder / "unitune.json").is_file():
        shutil.copy2(folder / "unitune.json", temporary / "unitune.json")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(temporary, folder)


def vars_json(args: argparse.Namespace) -> dict:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


if __name__ == "__main__":
    main()
