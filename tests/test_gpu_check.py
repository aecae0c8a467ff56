"""bench/gpu_check.py runs end to end on tiny SD 1.5 and SDXL pipelines on the CPU (on a GPU it builds
the full-size ones from the shipped configs and times them)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_the_gpu_check_runs_at_tiny_size_on_the_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
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
