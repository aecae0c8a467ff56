"""What a candidate UNet for the embedded model costs on this CPU: a guided sampling step (batch 2), a
tune step (batch 4, AdamW) and training throughput (batch 64). A benchmark, not a test.

Usage: python bench/unet_sizes.py        (2 torch threads; nothing else should run beside it)
"""

from __future__ import annotations

import time

import torch

from unitune.training.architecture import ArchitectureConfig, build_unet

CANDIDATES = {
    "v1 (32, 64, 128)": ArchitectureConfig(unet_channels=(32, 64, 128)),
    "v2 (64, 128, 128)": ArchitectureConfig(unet_channels=(64, 128, 128)),
    "(64, 128, 192)": ArchitectureConfig(unet_channels=(64, 128, 192)),
}


def seconds_per_call(function, calls: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        function()
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def measure(config: ArchitectureConfig) -> dict:
    unet = build_unet(config).to(memory_format=torch.channels_last)
    width = config.text_width

    def sample_step():
        with torch.no_grad():
            unet(torch.randn(2, 8, 16, 16), torch.tensor([500, 500]), torch.randn(2, 32, width))

    optimizer = torch.optim.AdamW(unet.parameters(), 1e-4)

    def train_step(batch: int):
        loss = unet(
            torch.randn(batch, 8, 16, 16), torch.randint(0, 1000, (batch,)), torch.randn(batch, 32, width)
        )
        loss.sample.pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {
        "parameters (M)": sum(p.numel() for p in unet.parameters()) / 1e6,
        "guided step ms": 1000 * seconds_per_call(sample_step, 20),
        "tune step ms (batch 4)": 1000 * seconds_per_call(lambda: train_step(4), 10),
        "samples/s (batch 64)": 64 / seconds_per_call(lambda: train_step(64), 3, warmup=1),
    }


def main() -> None:
    torch.set_num_threads(2)
    print("| UNet | parameters (M) | guided step ms | tune step ms (batch 4) | samples/s (batch 64) |")
    print("|---|---|---|---|---|")
    for name, config in CANDIDATES.items():
        row = measure(config)
        print(f"| {name} | " + " | ".join(f"{value:.1f}" for value in row.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
