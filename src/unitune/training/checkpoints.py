"""Resumable training state: model weights as safetensors, optimizer state, step and time spent; the
clock both training stages run against (a wall-clock budget that counts earlier runs' time)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from unitune.files import write_durably


class Checkpointer:
    """Saves `name.safetensors` + `name.optim.pt` + `name.json` into a folder every `every_minutes`.

    The optimizer state is our own training artifact (never user input), so `torch.load` runs with
    weights_only=True on it."""

    def __init__(self, folder: Path, name: str, every_minutes: float = 3.0):
        self.folder = Path(folder)
        self.name = name
        self.every = every_minutes * 60
        self.last_save = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def weights_path(self) -> Path:
        return self.folder / f"{self.name}.safetensors"

    @property
    def state_path(self) -> Path:
        return self.folder / f"{self.name}.json"

    def exists(self) -> bool:
        return self.state_path.exists()

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
        if not self.exists():
            return {"step": 0, "seconds": 0.0}
        load_model(model, self.weights_path)
        optimizer_path = self.folder / f"{self.name}.optim.pt"
        if optimizer is not None and optimizer_path.exists():
            optimizer.load_state_dict(torch.load(optimizer_path, weights_only=True))
        return json.loads(self.state_path.read_text())

    def maybe_save(self, model, optimizer, state: dict) -> None:
        if time.monotonic() - self.last_save >= self.every:
            self.save(model, optimizer, state)

    def save(self, model: torch.nn.Module, optimizer, state: dict) -> None:
        write_durably(self.weights_path, lambda path: save_model(model, path))
        if optimizer is not None:
            write_durably(
                self.folder / f"{self.name}.optim.pt", lambda path: torch.save(optimizer.state_dict(), path)
            )
        write_durably(self.state_path, lambda path: Path(path).write_text(json.dumps(state)))
        self.last_save = time.monotonic()


class TrainingClock:
    """Training time against a budget of `minutes`, resumed from a checkpoint's `state` (its "step" and
    "seconds" count on from earlier runs); time spent `paused` (evaluations) is not training time."""

    def __init__(self, state: dict, minutes: float):
        self.state, self.budget = state, minutes * 60
        self.first_step = state["step"]
        self._started = time.monotonic() - state["seconds"]

    def steps(self) -> Iterator[float]:
        """Before each step, the fraction of the budget spent (for the learning-rate schedule), until it is
        all spent; the loop body calls `count_step` after its step."""
        while (elapsed := time.monotonic() - self._started) < self.budget:
            yield elapsed / self.budget

    def count_step(self) -> None:
        self.state["step"] += 1
        self.state["seconds"] = time.monotonic() - self._started

    @contextlib.contextmanager
    def paused(self):
        paused = time.monotonic()
        try:
            yield
        finally:
            self._started += time.monotonic() - paused

    @property
    def trained(self) -> bool:
        """Whether this run took any step (so there is something new to save)."""
        return self.state["step"] > self.first_step


class TrainingLog:
    """Append-only JSON-lines log, also echoed to stdout."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, **record) -> None:
        line = json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()})
        print(line, flush=True)
        with self.path.open("a") as handle:
            handle.write(line + "\n")
