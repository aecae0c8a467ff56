"""The exported model's cumulative training record: one entry per run that trained it (command, device,
steps, samples, wall time, throughput and the run's last evaluation), carried over by `--init-from`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

RECORD_FILE = "training-record.json"


def read_record(folder: Path) -> list[dict]:
    """The runs recorded in an exported folder (none for a folder exported before records existed)."""
    path = Path(folder) / RECORD_FILE
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def append_run(work: Path, run: dict) -> list[dict]:
    """Add `run` to the work folder's runs (a resumed run is a run of its own) and return them all."""
    path = Path(work) / "runs.jsonl"
    with path.open("a") as handle:
        handle.write(json.dumps(run) + "\n")
    return [json.loads(line) for line in path.read_text().splitlines()]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


def run_summary(
    command: str, device: str, finished: str, wall_minutes: float, work: Path, batch_size: int
) -> dict:
    """This run's entry, read from the work folder: its checkpoints' cumulative step counts and its log."""
    records = [json.loads(line) for line in (Path(work) / "log.jsonl").read_text().splitlines()]
    last = lambda stage: next((r for r in reversed(records) if r["stage"] == stage), {})  # noqa: E731
    evaluation = last("evaluation")
    autoencoder, denoiser = (_state(Path(work) / f"{name}.json") for name in ("autoencoder", "denoiser"))
    rates = [r["samples_per_second"] for r in records if "samples_per_second" in r]
    return {
        "command": command,
        "device": device,
        "finished": finished,
        "wall_minutes": round(wall_minutes, 2),
        "autoencoder_steps": autoencoder.get("step", 0),
        "autoencoder_psnr": last("autoencoder_done").get("psnr"),
        "unet_steps": denoiser.get("step", 0),
        "unet_samples": denoiser.get("step", 0) * batch_size,
        "unet_samples_per_second": round(sum(rates) / len(rates), 1) if rates else None,
        "last_evaluation": {k: v for k, v in evaluation.items() if k not in ("stage",)},
    }


def _state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
