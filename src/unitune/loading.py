"""Find and load a Stable Diffusion 1.x / 2.x / XL pipeline; pick device and precision in one place.

A model is a hub id (`org/name`, or `org/name@revision`), a diffusers folder, or one checkpoint file
(`.safetensors`; `.ckpt` with allow_pickle). A checkpoint file is read with the configs this package ships
(`unitune/configs/sd1`, `sd2`, `sdxl`): nothing is fetched, so it loads offline, and SD 2.x files, which
look alike whether they were trained at 512 px with epsilon or at 768 px with v-prediction, take
`prediction_type` and `native_size` overrides (default: 768 px, v_prediction, as SD 2.1).

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
from .files import safetensors_header
from .settings import ModelDefaults

if TYPE_CHECKING:
    import torch

EMBEDDED_MODEL = "embedded/shapes"
CONFIGS = "configs"  # diffusers configs of SD 1.x, 2.x and XL, for checkpoint files
TOKENIZER = "assets/clip-tokenizer"  # CLIP's BPE, which every Stable Diffusion text encoder reads
MODEL_DEFAULTS_FILE = "unitune.json"  # the embedded model's too (a training export keeps it)
PREDICTION_TYPES = ("epsilon", "v_prediction")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
# the components whose files a tune depends on (safety checker and feature extractor play no part)
_TUNE_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
# a key of each kind of original (LDM / SGM) checkpoint, and the shape that tells SD 1.x from 2.x
_UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"
_CROSS_ATTENTION = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
_XL_BASE = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
_XL_REFINER = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
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
    cuda_graphs: bool = False  # replay UNet calls as CUDA graphs (unitune.graphs); CUDA only

    def autocast(self, cache: bool = True):
        """Autocast to the compute dtype (nothing for float32); `cache=False` for code captured in a CUDA
        graph (autocast's cast cache would outlive the capture)."""
        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=cache)


_SWITCHES = {"auto": None, "on": True, "off": False}


def pick_runtime(
    device: str | None = None, dtype: str | None = None, cuda_graphs: str | None = None
) -> Runtime:
    """cuda > mps > cpu unless `device` is given; float16 autocast on CUDA, float32 elsewhere by default;
    CUDA graphs ("auto", "on" or "off") on by default on CUDA."""
    import torch

    if device is None:
        device = (
            "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        )
    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise UnituneError(f"unknown device {device!r}") from None
    if (cuda_graphs or "auto") not in _SWITCHES:
        raise UnituneError(f"unknown --cuda-graphs {cuda_graphs!r}; choose auto, on or off")
    graphs = _SWITCHES[cuda_graphs or "auto"]
    graphs = torch_device.type == "cuda" if graphs is None else graphs
    if dtype is None or dtype == "auto":
        compute = torch.float16 if torch_device.type == "cuda" else torch.float32
        return Runtime(torch_device, compute, graphs)
    if dtype not in _DTYPES:
        raise UnituneError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(_DTYPES)}")
    return Runtime(torch_device, getattr(torch, _DTYPES[dtype]), graphs)


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


def load_pipeline(
    model: str,
    allow_pickle: bool = False,
    prediction_type: str | None = None,
    native_size: int | None = None,
):
    """An img2img pipeline (StableDiffusionImg2ImgPipeline or StableDiffusionXLImg2ImgPipeline) in float32
    on the CPU (move it with `.to`). `prediction_type` and `native_size` override the model's own."""
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise UnituneError(
            f"unknown prediction type {prediction_type!r}; choose {' or '.join(PREDICTION_TYPES)}"
        )
    if native_size is not None and native_size < 8:
        raise UnituneError(f"native size must be at least 8 pixels, got {native_size}")
    path = Path(model)
    if path.is_file() and path.suffix != ".safetensors" and not allow_pickle:
        raise UnituneError(f"{model}: pickle checkpoints can run code; pass --allow-pickle to load it anyway")
    family = checkpoint_family(path, allow_pickle) if path.is_file() else None
    try:
        if path.is_file():
            pipe = _load_checkpoint_file(model, family, prediction_type)
        else:
            pipe = _load_pretrained(model, allow_pickle)
    except UnituneError:
        raise
    except Exception as error:  # diffusers raises many kinds; the user needs one line
        raise UnituneError(
            f"{model}: could not load a Stable Diffusion pipeline ({first_line(error)})"
        ) from None
    img2img = as_img2img(pipe, model)
    if prediction_type is not None and img2img.scheduler.config.get("prediction_type") != prediction_type:
        img2img.scheduler = type(img2img.scheduler).from_config(
            img2img.scheduler.config, prediction_type=prediction_type
        )
    if native_size is not None:
        # the latent side the UNet was trained at; only the default working size follows it
        img2img.unet.register_to_config(sample_size=max(1, round(native_size / img2img.vae_scale_factor)))
    img2img.set_progress_bar_config(disable=True)
    return img2img


WEIGHT_ALIGNMENT = 64  # bytes: PyTorch's CPU allocator aligns every fresh tensor to 64


def align_weights(pipe) -> int:
    """Copy every parameter and buffer of the pipeline's modules that does not start on a 64-byte boundary
    into a freshly allocated tensor; return how many moved. Call it after moving the pipeline to its device:
    only CPU tensors are checked (a copy to a GPU is a fresh, aligned allocation already).

    Weights loaded from a diffusers folder can be views into a memory-mapped safetensors file at any
    offset, while a converted checkpoint file gives fresh tensors. CPU kernels sum in another order for
    unaligned buffers, so the same weights gave pixels one level apart depending on how they were
    loaded (and on the processor). One layout for every loading path makes the same inputs and seed give
    the same pixels whatever the path. Cost, measured (docs/lab/weight-alignment.md): nothing on the
    embedded model (its weights are aligned already); on an SD 1.5-size UNet about 3 s at load, which
    reads the weights the first step would have read anyway."""
    import torch

    moved = 0
    for module in pipe.components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.device.type == "cpu" and tensor.data_ptr() % WEIGHT_ALIGNMENT:
                tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
                moved += 1
    return moved


def as_img2img(pipe, model: str):
    """The img2img pipeline of the same components (no safety checker, no watermark), float32."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    if hasattr(pipe, "text_encoder_2"):  # SDXL (pipelines.is_xl)
        if pipe.text_encoder is None or pipe.unet.config.get("addition_embed_type") != "text_time":
            raise UnituneError(f"{model}: an SDXL refiner-style model; unitune edits with SDXL base models")
        if pipe.vae.config.get("latents_mean") is not None:
            raise UnituneError(
                f"{model}: a VAE with latent mean and std (e.g. Playground v2.5): not supported"
            )
        names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")
        components = {name: getattr(pipe, name) for name in names}
        zeros = pipe.config.get("force_zeros_for_empty_prompt", True)
        return StableDiffusionXLImg2ImgPipeline(
            **components,
            force_zeros_for_empty_prompt=zeros,
            requires_aesthetics_score=False,
            add_watermarker=False,
        )
    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    components.update(safety_checker=None, feature_extractor=None)
    return StableDiffusionImg2ImgPipeline(**components, requires_safety_checker=False)


def _load_pretrained(model: str, allow_pickle: bool):
    """A hub id (`org/name@revision` picks a revision) or a diffusers folder, SD or SDXL."""
    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    name, _, revision = model.partition("@") if not Path(model).exists() else (model, "", "")
    kwargs = dict(use_safetensors=not allow_pickle, dtype=torch.float32, revision=revision or None)
    class_name = DiffusionPipeline.load_config(name, revision=revision or None).get("_class_name", "")
    if class_name in ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"):
        return StableDiffusionXLPipeline.from_pretrained(name, **kwargs)
    if class_name not in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"):
        raise UnituneError(
            f"{model}: a {class_name or 'pipeline of unknown kind'}; unitune edits with Stable Diffusion "
            "1.x / 2.x and XL text-to-image models"
        )
    return StableDiffusionPipeline.from_pretrained(
        name, safety_checker=None, requires_safety_checker=False, **kwargs
    )


def checkpoint_family(path: Path, allow_pickle: bool = False) -> str:
    """ "sd1", "sd2" or "sdxl" for an original Stable Diffusion checkpoint file; UnituneError otherwise."""
    shapes = _checkpoint_shapes(path, allow_pickle)
    if _UNET_INPUT not in shapes:
        raise UnituneError(f"{path}: not a Stable Diffusion checkpoint (no UNet in the original layout)")
    if shapes[_UNET_INPUT][1] != 4:
        raise UnituneError(
            f"{path}: a UNet with {shapes[_UNET_INPUT][1]} input channels (inpainting or another variant); "
            "unitune edits with text-to-image checkpoints (4 channels)"
        )
    if _XL_BASE in shapes:
        return "sdxl"
    if _XL_REFINER in shapes:
        raise UnituneError(f"{path}: an SDXL refiner; unitune edits with SDXL base checkpoints")
    width = shapes.get(_CROSS_ATTENTION, [0])[-1]
    if width not in (768, 1024):
        raise UnituneError(
            f"{path}: a UNet with {width}-wide text conditioning: neither SD 1.x (768) nor 2.x (1024)"
        )
    return "sd1" if width == 768 else "sd2"


def _checkpoint_shapes(path: Path, allow_pickle: bool) -> dict[str, list[int]]:
    if path.suffix == ".safetensors":
        try:
            header = safetensors_header(path)
        except (ValueError, OSError) as error:
            raise UnituneError(f"{path}: not a readable safetensors file ({first_line(error)})") from None
        return {key: value["shape"] for key, value in header.items() if key != "__metadata__"}
    if not allow_pickle:
        raise UnituneError(f"{path}: pickle checkpoints can run code; pass --allow-pickle to load it anyway")
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    try:
        return {key: list(value.shape) for key, value in load_single_file_checkpoint(str(path)).items()}
    except Exception as error:
        raise UnituneError(f"{path}: unreadable checkpoint ({first_line(error)})") from None


def config_dir(family: str) -> Path:
    """The shipped diffusers configs of "sd1", "sd2" or "sdxl" (model_index.json and each component's)."""
    return Path(str(resources.files("unitune").joinpath(CONFIGS, family)))


def clip_tokenizer(pad_token: str | None = None):
    """CLIP's tokenizer from the package's assets; OpenCLIP's (SD 2.x, SDXL's second) pads with "!"."""
    from transformers import CLIPTokenizer

    folder = str(resources.files("unitune").joinpath(TOKENIZER))
    extra = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77, **extra)


def _load_checkpoint_file(model: str, family: str, prediction_type: str | None):
    """A checkpoint file with the shipped configs of its family (no hub access), tokenizers from assets."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    config = config_dir(family)
    scheduler_config = json.loads((config / "scheduler" / "scheduler_config.json").read_text())
    if prediction_type is not None:
        scheduler_config["prediction_type"] = prediction_type
    scheduler = _scheduler_class(scheduler_config["_class_name"]).from_config(scheduler_config)
    kwargs = dict(config=str(config), local_files_only=True, dtype=torch.float32, scheduler=scheduler)
    if family == "sdxl":
        tokenizers = dict(tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"))
        return StableDiffusionXLPipeline.from_single_file(model, **kwargs, **tokenizers)
    tokenizer = clip_tokenizer("!" if family == "sd2" else None)
    return StableDiffusionPipeline.from_single_file(
        model, tokenizer=tokenizer, safety_checker=None, requires_safety_checker=False, **kwargs
    )


def _scheduler_class(name: str):
    import diffusers

    return getattr(diffusers, name)


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
