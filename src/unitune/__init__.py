"""unitune: edit an image from a text description by briefly fine-tuning a diffusion model on it.

The public names below are imported on first use (PEP 562, as diffusers' own `__init__` does), so
`import unitune.cli` and `unitune --help` do not load torch, diffusers or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "CacheEntry": "cache",
    "Cancelled": "errors",
    "EditResult": "outputs",
    "EditSettings": "settings",
    "Editor": "api",
    "ModelDefaults": "settings",
    "Progress": "progress",
    "SweepResult": "sweep",
    "TuneCache": "cache",
    "TuneResult": "api",
    "TuneSettings": "settings",
    "UnituneError": "errors",
    "UnituneWarning": "errors",
    "read_settings": "outputs",
    "save_results": "outputs",
}

__all__ = [
    "CacheEntry",
    "Cancelled",
    "EditResult",
    "EditSettings",
    "Editor",
    "ModelDefaults",
    "Progress",
    "SweepResult",
    "TuneCache",
    "TuneResult",
    "TuneSettings",
    "UnituneError",
    "UnituneWarning",
    "__version__",
    "read_settings",
    "save_results",
]

if TYPE_CHECKING:
    from .api import Editor, TuneResult
    from .cache import CacheEntry, TuneCache
    from .errors import Cancelled, UnituneError, UnituneWarning
    from .outputs import EditResult, read_settings, save_results
    from .progress import Progress
    from .settings import EditSettings, ModelDefaults, TuneSettings
    from .sweep import SweepResult


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
