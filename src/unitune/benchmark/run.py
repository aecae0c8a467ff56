"""Run the edit benchmark end to end: edit set -> every method -> scores -> costs -> report.

python -m unitune.benchmark --quick        # or: unitune bench --quick
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import pickle
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ..shapes.world import render, render_pil
from . import costs, metrics
from .binding import autoencoder_roundtrip
from .edits import EDIT_KINDS, Edit, edit_set
from .methods import Grid, Output, TuneCost, run_scene


@dataclass(frozen=True)
class Config:
    validation_scenes: int
    test_scenes: int
    grid: Grid
    kinds: tuple[str, ...] = EDIT_KINDS
    seed: int = 0
    workers: int = 1  # processes, one torch thread each (the full run: one per core)
    tune_steps: int | None = None  # None: the model's for each method (what users get); CI: a handful
    tune_batch: int = 4  # TuneSettings' default
    cost_tune_steps: int | None = None  # the tune core_costs times (None: the model's; quick: fewer)
    costs: bool = True  # tune / edit / memory costs (unitune.benchmark.costs, one subprocess per method)

    def to_dict(self) -> dict:
        return asdict(self)


QUICK = Config(
    validation_scenes=2,
    test_scenes=2,
    grid=Grid(steps=10, guidances=(4.0,), strengths=(0.6, 0.8, 1.0), interpolations=(0.0, 0.5)),
    workers=2,
    costs=False,  # --costs adds them (about a minute)
    cost_tune_steps=32,
)
# Every method on the same grid. Guidance 12 was dropped for time: in model v3's first run (old grid) it
# led no method on validation (UniTune full 15% vs 24% at g6; LoRA 15%, tied with g6). Strengths include
# the automatic dial's candidates; 34 validation scenes give 121 validation edits (a choice between two
# settings then moves by under a point per edit), 36 test scenes 141 test edits (an edit whose words
# would name a second object one change away is left out: benchmark.edits._named).
FULL = Config(
    validation_scenes=34,
    test_scenes=36,
    grid=Grid(
        steps=20,
        guidances=(3.0, 6.0),
        strengths=(0.4, 0.6, 0.8, 1.0),
        interpolations=(0.0, 0.5, 1.0),
    ),
    workers=2,
)


@dataclass
class Results:
    config: Config
    model: str
    records: list[dict] = field(default_factory=list)
    dial_records: list[dict] = field(default_factory=list)  # the dial's extra candidates (not grid settings)
    binding: list[dict] = field(default_factory=list)  # R alone after each tune (benchmark.binding)
    signals: list[dict] = field(default_factory=list)  # the automatic dial's signals per raw sample
    tune_costs: list[TuneCost] = field(default_factory=list)
    examples: dict = field(default_factory=dict)  # (edit name, family, label) -> image, first test scenes
    costs: list[dict] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    seconds: float = 0.0
    untuned_tail: float = 0.0  # the model's default, used by every UniTune edit of the run
    model_guidance: float = 0.0  # likewise
    auto_model_guidance: float = 0.0  # the dial's extra candidate: strength 1 with this model guidance
    decoder_gate: float | None = None  # likewise, where a tune fits its decoder (None: a run before the gate)
    inversion: bool = False  # likewise: UniTune's edits start from the base's DDPM inversion
    inversion_guidance: float = 1.0


def record(output: Output, scores: dict) -> dict:
    edit, setting = output.edit, output.setting
    return {
        "split": edit.split,
        "scene": edit.scene,
        "kind": edit.kind,
        "edit": edit.name,
        "prompt": edit.prompt,
        "caption": edit.caption,
        "family": setting.family,
        "label": setting.label,
        "guidance": setting.guidance,
        "strength": setting.strength,
        "interpolation": setting.interpolation,
        "model_guidance": setting.model_guidance,
        "mask": setting.mask,
        "seed_offset": setting.seed_offset,
        "seconds": output.seconds,
        **scores,
    }


def run_benchmark(
    config: Config,
    model: str | None = None,
    device: str | None = "cpu",
    log: Callable[[str], None] = print,
) -> Results:
    """Every method on the validation and test edits with one loaded model; scored records.

    With `config.workers` > 1 each scene goes to the next free one of that many processes (one torch
    thread each, spawn), each loading the model once; the costs are then measured alone, after them.
    """
    from ..loading import load_model_defaults, resolve_model

    started = time.perf_counter()
    resolved = resolve_model(model)
    defaults = load_model_defaults(resolved).edit
    results = Results(
        config,
        resolved,
        machine=machine(),
        untuned_tail=defaults.untuned_tail,
        model_guidance=defaults.model_guidance,
        auto_model_guidance=defaults.auto_model_guidance,
        decoder_gate=defaults.decoder_gate,
        inversion=defaults.inversion,
        inversion_guidance=defaults.inversion_guidance,
    )
    items = [(split, scene) for split in ("validation", "test") for scene in range(_count(config, split))]
    if config.workers == 1:
        parts = [run_scenes(config, resolved, device, items, log)]
    else:
        parts = _run_in_workers(config, resolved, device, items, log, started)
    for part in parts:
        results.records += part.records
        results.dial_records += part.dial_records
        results.binding += part.binding
        results.signals += part.signals
        results.tune_costs += part.tune_costs
        results.examples.update(part.examples)
    log(f"{len(results.records)} scored outputs in {time.perf_counter() - started:.0f} s")
    if config.costs:
        with tempfile.TemporaryDirectory(prefix="unitune-bench-costs-") as folder:
            results.costs = measure_costs(resolved, config.cost_tune_steps, config.grid.steps, folder, log)
    results.seconds = time.perf_counter() - started
    return results


def _run_in_workers(config: Config, model: str, device, items, log, started: float) -> list[Results]:
    """Each scene a task for the next free worker (`config.workers` processes, one torch thread and one
    loaded editor each), the slower test scenes first, so no worker idles while another has scenes left;
    the parts in the order of `items`."""
    context = multiprocessing.get_context("spawn")
    initargs = (model, device, 1)
    with ProcessPoolExecutor(config.workers, context, initializer=_start_worker, initargs=initargs) as pool:
        order = sorted(items, key=lambda item: item[0] != "test")
        futures = {pool.submit(_run_scene_task, config, item): item for item in order}
        for future in as_completed(futures):
            split, scene = futures[future]
            elapsed = time.perf_counter() - started
            log(f"{split} scene {scene + 1}/{_count(config, split)} done at {elapsed:.0f} s")
        parts = {item: future.result() for future, item in futures.items()}
        return [parts[item] for item in items]


_WORKER: dict = {}  # in a benchmark worker process: its editor and its tune cache folder


def _start_worker(model: str, device, threads: int) -> None:
    """A worker's one-time set-up: the editor (`_load_editor`), its tune cache removed when the process
    exits."""
    _WORKER["cache"] = tempfile.TemporaryDirectory(prefix="unitune-bench-")
    _WORKER["editor"] = _load_editor(model, device, _WORKER["cache"].name, threads)


def _run_scene_task(config: Config, item: tuple[str, int]) -> Results:
    """One scene in a worker (`_start_worker`), its records in a Results of their own."""
    editor = _WORKER["editor"]
    results = Results(config, editor.model)
    _run_one_scene(editor, _scene_edits(config, *item), config, results)
    return results


def _count(config: Config, split: str) -> int:
    return config.validation_scenes if split == "validation" else config.test_scenes


def _scene_edits(config: Config, split: str, scene: int) -> list[Edit]:
    return [e for e in _edit_set(split, _count(config, split), config.kinds) if e.scene == scene]


_edit_set = functools.cache(edit_set)  # a split's edits, made once per process


def _load_editor(model: str, device, cache_dir: str, threads: int | None):
    """The model loaded with an empty tune cache (every tune is timed); `threads` torch threads."""
    import torch

    from ..api import Editor
    from ..loading import quiet_libraries

    if threads is not None:
        torch.set_num_threads(threads)
    quiet_libraries()
    return Editor.load(model, device=device, cache_dir=cache_dir)


def run_scenes(config: Config, model: str, device, items, log=None) -> Results:
    """The scenes `items` ((split, scene number) pairs) in this process, with one editor."""
    log = log or (lambda text: print(text, flush=True))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unitune-bench-") as cache:
        editor = _load_editor(model, device, cache, None)
        results = Results(config, editor.model)
        for split, scene in items:
            _run_one_scene(editor, _scene_edits(config, split, scene), config, results)
            elapsed = time.perf_counter() - started
            log(f"{split} scene {scene + 1}/{_count(config, split)} done at {elapsed:.0f} s")
    return results


def _run_one_scene(editor, edits, config: Config, results: Results) -> None:
    base_scene = edits[0].base
    base_pixels, base_image = render(base_scene), render_pil(base_scene)
    targets = {e.name: render(e.target) for e in edits}
    example = edits[0].split == "test" and edits[0].scene == 0

    def on_output(output: Output) -> None:
        scores = metrics.score(output.image, output.edit, base_pixels, targets[output.edit.name])
        (results.dial_records if output.setting.dial_only else results.records).append(record(output, scores))
        if example:
            results.examples[(output.edit.name, output.setting.family, output.setting.label)] = output.image

    seed = config.seed + 1000 * (edits[0].split == "test") + edits[0].scene
    test = edits[0].split == "test"  # the binding is reported on test scenes only: not measured elsewhere
    run_scene(
        editor,
        edits,
        base_image,
        config.grid,
        seed,
        results.tune_costs,
        config.tune_steps,
        config.tune_batch,
        on_output=on_output,
        on_binding=_binding_recorder(results, edits[0]) if test else None,
        on_signals=lambda row: results.signals.append({"split": edits[0].split, **row}),
    )
    if test and any(family in ("full", "lora") for family in config.grid.families):
        ceiling = autoencoder_roundtrip(editor, base_image)
        results.binding.append({"split": edits[0].split, "scene": edits[0].scene, **ceiling})


def _binding_recorder(results: Results, first: Edit):
    """Where a scene's binding rows go: the results' binding list, with the scene's split and number."""
    return lambda row: results.binding.append({"split": first.split, "scene": first.scene, **row})


def measure_costs(model: str, tune_steps: int | None, edit_steps: int, folder: str, log) -> list[dict]:
    """unitune.benchmark.costs on `model` (tune, tune step vs bare UNet step, edit, peak RSS), one
    subprocess per tune method."""
    rows = []
    for method in ("full", "lora"):
        rows.append(
            costs.measure(method, model, str(Path(folder) / f"costs-{method}"), tune_steps, edit_steps)
        )
        log(f"costs {method}: {rows[-1]}")
    return rows


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan,
    }


def save_records(results: Results, folder: Path, command: str) -> Path:
    """records.jsonl (one scored output per line) and results.pkl (everything, for --replot)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "records.jsonl"
    with path.open("w") as handle:
        for row in results.records:
            handle.write(json.dumps(row) + "\n")
    with (folder / "results.pkl").open("wb") as handle:
        pickle.dump((results, command), handle)
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m unitune.benchmark", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a handful of scenes and a tiny grid")
    parser.add_argument("--model", default=None, help="diffusers folder [default: the embedded model]")
    parser.add_argument("--report", type=Path, default=Path("docs/benchmark.md"))
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="raw records (JSONL)")
    parser.add_argument("--scenes", type=int, default=None, help="override scenes per split")
    parser.add_argument("--costs", action=argparse.BooleanOptionalAction, default=None, help="measure costs")
    parser.add_argument("--replot", type=Path, help="rewrite the report from a saved results.pkl, no run")
    args = parser.parse_args(argv)
    if args.replot:
        from .report import write_report

        with args.replot.open("rb") as handle:
            results, command = pickle.load(handle)
        print(write_report(results, args.report, args.images, command))
        return
    config = configure(args.quick, args.scenes, args.costs)
    command = "python -m unitune.benchmark " + " ".join(argv if argv is not None else sys.argv[1:])
    benchmark(config, args.model, args.report, args.images, args.out, command.strip())


def configure(quick: bool, scenes: int | None = None, costs: bool | None = None) -> Config:
    """The quick or full configuration; `scenes` per split and `costs` override it when given."""
    config = QUICK if quick else FULL
    if scenes is not None:
        config = replace(config, validation_scenes=scenes, test_scenes=scenes)
    return config if costs is None else replace(config, costs=costs)


def benchmark(config: Config, model, report, images, out, command: str, log=print) -> Path:
    """Run, save the raw records and write the markdown report; returns the report's path."""
    from .report import write_report

    results = run_benchmark(config, model, log=log)
    save_records(results, Path(out), command)
    path = write_report(results, Path(report), Path(images), command)
    log(f"wrote {path} ({results.seconds:.0f} s)")
    return path
