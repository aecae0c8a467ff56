"""unitune: edit an image from a text description by briefly fine-tuning a diffusion model on it."""

from .api import Editor, TuneResult
from .cache import CacheEntry, TuneCache
from .errors import Cancelled, UnituneError, UnituneWarning
from .outputs import EditResult, read_settings, save_results
from .progress import Progress
from .settings import EditSettings, ModelDefaults, TuneSettings
from .sweep import SweepResult
from .version import __version__

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
