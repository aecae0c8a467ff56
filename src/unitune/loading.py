"""Find and load a Stable Diffusion 1.x / 2.x pipeline; pick device and precision in one place.

The weights stay in float32; `dtype` chooses an autocast precision (float16 on CUDA by default,
bfloat16 on request on CPU). Tuning therefore always updates float32 master weights. torch and diffusers
are imported where they are used: the CLI resolves a model and reads its recommended settings (to check
flags) without them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UnituneError, first_line
from .settings import ModelDefaults

if TYPE_CHECKING:
    import torch

EMBEDDED_MODEL = "embedded/shapes"
MODEL_DEFAULTS_FILE = "unitune.json"  # the embedded model's too (a training export keeps it)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# the components whose files a tune depends on (safety checker and feature extractor play no part)
_TUNE_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# the scheduler settings the training noise depends on (see tuning.training_scheduler)
_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "rescale_betas_zero_snr",
)
_DTYPES = {  # --dtype -> the torch dtype's name
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision the models run."""

    device: torch.device
    dtype: torch.dtype  # compute dtype; weights stay float32 and autocast runs in this dtype

    def autocast(self):
        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def pick_runtime(device: str | None = None, dtype: str | None = None) -> Runtime:
    """cuda > mps > cpu unless `device` is given; float16 autocast on CUDA, float32 elsewhere by default."""
    import torch

    if device is None:
        device = (
            "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        )
    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise UnituneError(f"unknown device {device!r}") from None
    if dtype is None or dtype == "auto":
        return Runtime(torch_device, torch.float16 if torch_device.type == "cuda" else torch.float32)
    if dtype not in _DTYPES:
        raise UnituneError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(_DTYPES)}")
    return Runtime(torch_device, getattr(torch, _DTYPES[dtype]))


def embedded_model_dir() -> Path:
    return Path(str(resources.files("unitune").joinpath(EMBEDDED_MODEL)))


def resolve_model(model: str | None) -> str:
    """The model to load: a local folder, a single checkpoint file or a hub id. Checks local paths."""
    if model is None:
        folder = embedded_model_dir()
        if not (folder / "model_index.json").is_file():
            raise UnituneError(
                f"no --model given and the embedded model is missing ({folder}/model_index.json)"
            )
        return str(folder)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UnituneError(f"{model}: not a diffusers pipeline folder (no model_index.json)")
        return str(path.resolve())
    if path.is_file():
        if path.suffix not in (".safetensors", ".ckpt", ".pt", ".bin"):
            raise UnituneError(
                f"{model}: not a diffusion checkpoint (.safetensors or, with --allow-pickle, .ckpt)"
            )
        return str(path.resolve())
    if _HUB_ID.match(model) and not model.startswith("."):
        return model
    raise UnituneError(f"{model}: model not found")


def model_defaults_file(model: str) -> Path | None:
    """The resolved model's recommended-settings file, if any (local folders only)."""
    path = Path(model)
    if not path.is_dir():
        return None  # a hub id or a single checkpoint file carries no unitune.json
    return path / MODEL_DEFAULTS_FILE if (path / MODEL_DEFAULTS_FILE).is_file() else None


def load_model_defaults(model: str) -> ModelDefaults:
    """The resolved model's recommended settings: its unitune.json over the dataclass defaults."""
    file = model_defaults_file(model)
    if file is None:
        return ModelDefaults()
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnituneError(f"{file}: not a readable JSON file ({first_line(error)})") from None
    return ModelDefaults.from_dict(data, str(file))


def load_pipeline(model: str, allow_pickle: bool = False):
    """A StableDiffusionImg2ImgPipeline in float32 on the CPU (move it with `.to`)."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    path = Path(model)
    if path.is_file() and path.suffix != ".safetensors" and not allow_pickle:
        raise UnituneError(f"{model}: pickle checkpoints can run code; pass --allow-pickle to load it anyway")
    kwargs = dict(safety_checker=None, requires_safety_checker=False, dtype=torch.float32)
    try:
        if path.is_file():
            pipe = StableDiffusionPipeline.from_single_file(model, **kwargs)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(model, use_safetensors=not allow_pickle, **kwargs)
    except Exception as error:  # diffusers raises many kinds; the user needs one line
        raise UnituneError(
            f"{model}: could not load a Stable Diffusion pipeline ({first_line(error)})"
        ) from None
    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    components.update(safety_checker=None, feature_extractor=None)
    img2img = StableDiffusionImg2ImgPipeline(**components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    return img2img


def model_identity(model: str, pipe) -> str:
    """A string naming this exact model as a tune sees it: path or hub id; the hub revision; the size and
    mtime of every file of the components a tune uses; the training noise schedule."""
    parts = [model, *_noise_schedule(pipe)]
    source = _loaded_from(model, pipe)
    if source is not None:
        parts.append(f"revision={hub_revision(source)}")
        parts += [_file_stamp(file, source) for file in model_files(source)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16] + ":" + model


def _noise_schedule(pipe) -> list[str]:
    config = pipe.scheduler.config
    parts = [f"prediction_type={config.get('prediction_type', 'epsilon')}"]
    return parts + [f"{name}={config.get(name)}" for name in _SCHEDULE_KEYS]


def _loaded_from(model: str, pipe) -> Path | None:
    """The local file or folder the weights came from: `model` itself, or a hub id's snapshot folder."""
    path = Path(model)
    if path.exists():
        return path
    unet_folder = pipe.unet.config.get("_name_or_path")  # diffusers records where it read each component
    folder = Path(unet_folder).parent if unet_folder else None
    return folder if folder is not None and (folder / "model_index.json").is_file() else None


def hub_revision(source: Path) -> str | None:
    """The commit of a hub cache snapshot folder (.../models--org--name/snapshots/<commit>), else None."""
    snapshots = source.parent
    if snapshots.name == "snapshots" and snapshots.parent.name.startswith("models--"):
        return source.name
    return None


def model_files(source: Path) -> list[Path]:
    """A single checkpoint, or a pipeline folder's model_index.json and its tuned-with components' files."""
    if source.is_file():
        return [source]
    files = [source / "model_index.json"] if (source / "model_index.json").is_file() else []
    for component in _TUNE_COMPONENTS:
        files += sorted(file for file in (source / component).rglob("*") if file.is_file())
    return files


def _file_stamp(file: Path, source: Path) -> str:
    stat = file.stat()  # a hub snapshot's symlink: its blob's
    name = file.name if file == source else file.relative_to(source).as_posix()
    return f"{name}:{stat.st_size}:{stat.st_mtime_ns}"


def quiet_libraries() -> None:
    """Only errors from diffusers and transformers: no advisory warnings, no progress bars of theirs."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
