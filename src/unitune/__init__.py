"""unitune: edit an image from a text description by briefly fine-tuning a diffusion model on it."""

__version__ = "0.1.0"

from .api import Editor, TuneResult  # noqa: E402
from .cache import CacheEntry, TuneCache  # noqa: E402
from .errors import Cancelled, UnituneError, UnituneWarning  # noqa: E402
from .outputs import EditResult, read_settings, save_results  # noqa: E402
from .progress import Progress  # noqa: E402
from .settings import EditSettings, ModelDefaults, TuneSettings  # noqa: E402
from .sweep import SweepResult  # noqa: E402

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
    "read_settings",
    "save_results",
]
