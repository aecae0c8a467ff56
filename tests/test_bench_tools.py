"""Smoke tests of the maintained measurement tools in bench/ (bench/README.md): each runs end to end on
the tiny test pipeline and prints its table. They measure nothing here; `gpu_check.py` and
`localize.py` have their own tests (test_gpu_check.py, test_localize.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(name: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "bench" / name), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_core_costs(tiny_model, tmp_path):
    out = run_tool(
        "core_costs.py", "--model", tiny_model, "--tune-steps", "2", "--edit-steps", "2", cwd=tmp_path
    )
    assert "full" in out and "lora" in out and "|" in out


def test_sample_batch(tiny_model, tmp_path):
    args = ["--model", tiny_model, "--tune-steps", "1", "--repeats", "1", "--batches", "1,4"]
    out = run_tool("sample_batch.py", *args, "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert "| 4 prompts |" in out and "faster" in out


def test_batch_throughput(tiny_model, tmp_path):
    args = ["--rounds", "1", "--modes", "in-process", "--work", str(tmp_path / "work")]
    out = run_tool(
        "batch_throughput.py",
        *args,
        "--",
        "--model",
        tiny_model,
        "--tune-steps",
        "1",
        "--steps",
        "2",
        cwd=tmp_path,
    )
    assert "| all | in-process |" in out and "| 12 |" in out


@pytest.mark.parametrize("tune", ["full:1:1e-4"])
def test_tune_binding(tiny_model, tmp_path, tune):
    args = ["--model", tiny_model, "--scenes", "1", "--tunes", tune, "--steps", "2", "--strengths", "1"]
    out = run_tool("tune_binding.py", *args, "--out", str(tmp_path / "rows.json"), cwd=tmp_path)
    assert (tmp_path / "rows.json").exists() and out.strip()
