"""bench/gpu_check.py runs end to end on tiny SD 1.5 and SDXL pipelines on the CPU (on a GPU it builds
the full-size ones from the shipped configs and times them)."""

import importlib.util
import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    sys.path.insert(0, str(BENCH))  # gpu_variants imports gpu_check
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_the_gpu_check_runs_at_tiny_size_on_the_cpu(tmp_path, capsys):
    gpu_check = bench_module("gpu_check")
    out = tmp_path / "gpu.json"
    rows = gpu_check.main(
        ["--tiny", "--device", "cpu", "--tune-steps", "2", "--edit-steps", "2", "--json", str(out)]
    )
    whats = [(row["family"], row["what"]) for row in rows]
    for family in ("sd15", "sdxl"):
        for what in (
            "tune full",
            "tune full, checkpointing on",
            "tune lora",
            "edit (full tune)",
            "edit (lora tune)",
        ):
            assert (family, what) in whats
    assert all(row["seconds"] > 0 and row["steps_per_s"] > 0 and row["peak_gb"] > 0 for row in rows)
    assert json.loads(out.read_text())["rows"] == rows
    assert "| sdxl |" in capsys.readouterr().out


def test_the_gpu_check_can_time_only_a_checkpointed_lora_tune():
    rows = bench_module("gpu_check").main(
        ["--tiny", "--device", "cpu", "--families", "sdxl", "--methods", "lora", "--lora-checkpointing", "on",
         "--tune-steps", "2", "--edit-steps", "2"]
    )  # fmt: skip
    assert [row["what"] for row in rows] == ["tune lora, checkpointing on"]
    assert rows[0]["checkpointing"] is True


def test_a_tune_that_runs_out_of_memory_is_a_row_and_the_check_goes_on(monkeypatch, capsys):
    from unitune import api

    real_train = api.train

    def train(pipe, latent, text, settings, *args, **kwargs):
        if settings.method == "full":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_train(pipe, latent, text, settings, *args, **kwargs)

    monkeypatch.setattr(api, "train", train)
    rows = bench_module("gpu_check").main(
        ["--tiny", "--device", "cpu", "--families", "sd15", "--tune-steps", "2", "--edit-steps", "2",
         "--no-compare-checkpointing"]
    )  # fmt: skip
    assert [row["what"] for row in rows] == ["tune full (out of memory)", "tune lora", "edit (lora tune)"]
    assert "out of cpu memory during a full tune" in capsys.readouterr().err


def test_the_gpu_variants_run_at_tiny_size_on_the_cpu(tmp_path):
    out = tmp_path / "variants.json"
    bench_module("gpu_variants").main(["--tiny", "--device", "cpu", "--steps", "3", "--edit-steps", "2",
                                       "--json", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())
    assert len(rows) == 8 and all(row["rate"] > 0 for row in rows)
