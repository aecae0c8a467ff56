"""Frozen settings for each stage. CLI flags are generated from these fields (see `cli.py`)."""

from __future__ import annotations

import json
import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .errors import UnituneError

# Two whole-word CLIP BPE tokens from the end of the merge list (ids 49397 and 49372): rarely seen in
# training text, so they carry almost no meaning of their own (UniTune's "rare tokens" identifier).
DEFAULT_RARE_PROMPT = "olis httr"
METHODS = ("full", "lora")
_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
LORA_TARGET_SETS = {  # module-name suffixes in a diffusers UNet
    "attention": _ATTENTION,
    "all": (
        *_ATTENTION,
        "proj_in",
        "proj_out",
        "ff.net.0.proj",
        "ff.net.2",
        "conv1",
        "conv2",
        "time_emb_proj",
    ),
}
LR_SCHEDULES = ("constant", "cosine")  # names of diffusers.optimization.get_scheduler
DEFAULT_LR_SCHEDULE = {"full": "constant", "lora": "constant"}
DEFAULT_LEARNING_RATE = {"full": 1e-4, "lora": 3e-3}  # lora: measured, docs/lab/tune-settings.md
DEFAULT_TUNE_STEPS = {"full": 128, "lora": 128}  # UniTune's 128 x 4 noised copies
OPTIMIZERS = ("adamw", "adamw8bit")
MAX_SAMPLE_BATCH = 64  # images per UNet batch while sampling; beyond, only memory
MAX_MODEL_GUIDANCE = 20.0  # far past any useful weight (about 1 on the embedded model)
DEFAULT_DECODER_GATE = 0.3  # chosen on validation (docs/lab/binding.md, "The decoder gate")
MAX_DECODER_GATE = 10.0  # RGB distances are at most sqrt(3): past it the gate is open everywhere
CHECKPOINTING = ("auto", "on", "off")
LOCALIZE_MODES = ("off", "auto")  # unitune.localize
MASK_READINGS = ("tuned", "untuned")
MAX_MASK_DRAWS = 64  # DiffEdit averages 10
MAX_MASK_DILATION = 64  # latent cells
MAX_MASK_GROW = 256  # pixels


def _opt(default, flag: str, help: str):
    return field(default=default, metadata={"flag": flag, "help": help})


UNIFORM_NOISE_WEIGHTS = "1"
MAX_NOISE_SLICES = 1000  # the training schedule's timesteps


def parse_noise_weights(text: str) -> tuple[float, ...]:
    """The tune's loss weights over equal slices of the noise schedule, lowest noise first, from
    "1,1,1,0.25" (one or more finite weights >= 0, not all 0); UnituneError otherwise."""
    try:
        weights = tuple(float(part) for part in str(text).replace(";", ",").split(","))
    except ValueError:
        raise UnituneError(f"noise weights must be comma-separated numbers, got {text!r}") from None
    if not 1 <= len(weights) <= MAX_NOISE_SLICES:
        raise UnituneError(f"noise weights: 1 to {MAX_NOISE_SLICES} numbers, got {len(weights)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise UnituneError(f"noise weights must be finite, >= 0 and not all 0, got {text!r}")
    return weights


def uniform_noise_weights(text: str) -> bool:
    """Whether the weighting is uniform: the plain loss (any one weight, or all equal)."""
    return len(set(parse_noise_weights(text))) == 1


MAX_BATCH_SIZE = 64  # noised copies of the one latent per tune step (UniTune: 4); beyond, only memory
MAX_LORA_RANK = 256  # a rank past the layers' own width is a full tune in disguise
MAX_DECODER_STEPS = 10_000  # a fit of one image's decoding; far past any useful length (50 embedded)


@dataclass(frozen=True)
class TuneSettings:
    """How to fine-tune the UNet on (image, rare prompt). `steps`, `learning_rate` or `lr_schedule` None
    means the method's default (the model's `unitune.json`, else the built-in one)."""

    method: str = _opt("full", "--method", "full: all UNet weights; lora: LoRA on attention projections")
    steps: int | None = _opt(
        None,
        "--tune-steps",
        "optimizer steps (0 = no training) [default: the model's for the method, else 128]",
    )
    batch_size: int = _opt(4, "--batch-size", "noise/timestep samples of the one latent per step")
    learning_rate: float | None = _opt(
        None, "--lr", "AdamW learning rate [default: the model's for the method, else 1e-4 full, 3e-3 lora]"
    )
    lora_rank: int = _opt(8, "--lora-rank", "LoRA rank (lora only)")
    lora_targets: str = _opt(
        "attention",
        "--lora-targets",
        "LoRA layers: attention (q, k, v, out) or all (also the transformer's proj/feed-forward and the "
        "ResNet convolutions)",
    )
    rare_prompt: str = _opt(
        DEFAULT_RARE_PROMPT, "--rare-prompt", "prompt R of rare tokens bound to the image"
    )
    lr_schedule: str | None = _opt(
        None,
        "--lr-schedule",
        "learning rate over the tune: constant, or cosine (from the rate down to 0 at the last step) "
        "[default: the model's, else constant]",
    )
    seed: int = _opt(0, "--tune-seed", "seed for the tuning noise and timesteps")
    noise_weights: str | None = _opt(
        None,
        "--noise-weights",
        "loss weights over equal slices of the noise schedule, lowest noise first, e.g. 1,1,1,0.25 (the "
        "highest-noise quarter at a quarter of the others' weight); 1 = uniform [default: the model's "
        "for the method, else uniform]",
    )
    optimizer: str = _opt(
        "adamw",
        "--optimizer",
        "adamw (PyTorch's fused kernel) or adamw8bit (bitsandbytes' 8-bit AdamW: optimizer state in a "
        "quarter of the memory; CUDA only)",
    )
    decoder_steps: int = _opt(
        0,
        "--decoder-steps",
        "after the UNet's tune, fit the autoencoder's decoder for this many Adam steps to decode the "
        "image's own latent as the image (0 = off; edits decode with it behind --decoder-gate)",
    )
    decoder_learning_rate: float = _opt(2e-4, "--decoder-lr", "Adam learning rate of the decoder fit")
    gradient_checkpointing: str = _opt(
        "auto",
        "--gradient-checkpointing",
        "recompute activations in the backward pass (less memory, about twice the time): auto (on CUDA "
        "when the tune would not fit the free memory without it), on or off; the same weights either way",
    )

    def __post_init__(self):
        if self.method not in METHODS:
            raise UnituneError(f"unknown tune method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.steps is not None and self.steps < 0:
            raise UnituneError(f"tune steps must be >= 0, got {self.steps}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:  # a batch is copies of one latent: more is memory
            raise UnituneError(f"batch size must be in [1, {MAX_BATCH_SIZE}], got {self.batch_size}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise UnituneError(f"learning rate must be > 0, got {self.learning_rate}")
        if not 1 <= self.lora_rank <= MAX_LORA_RANK:
            raise UnituneError(f"LoRA rank must be in [1, {MAX_LORA_RANK}], got {self.lora_rank}")
        if self.lora_targets not in LORA_TARGET_SETS:
            choices = ", ".join(LORA_TARGET_SETS)
            raise UnituneError(f"unknown LoRA targets {self.lora_targets!r}; choose one of {choices}")
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            choices = ", ".join(LR_SCHEDULES)
            raise UnituneError(
                f"unknown learning-rate schedule {self.lr_schedule!r}; choose one of {choices}"
            )
        if not self.rare_prompt.strip():
            raise UnituneError("the rare prompt must not be empty")
        if self.optimizer not in OPTIMIZERS:
            raise UnituneError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.noise_weights is not None:
            parse_noise_weights(self.noise_weights)
        if not 0 <= self.decoder_steps <= MAX_DECODER_STEPS:
            raise UnituneError(f"decoder steps must be in [0, {MAX_DECODER_STEPS}], got {self.decoder_steps}")
        if not (math.isfinite(self.decoder_learning_rate) and self.decoder_learning_rate > 0):
            raise UnituneError(f"decoder learning rate must be > 0, got {self.decoder_learning_rate}")
        if self.gradient_checkpointing not in CHECKPOINTING:
            choices = ", ".join(CHECKPOINTING)
            raise UnituneError(
                f"gradient checkpointing must be one of {choices}, got {self.gradient_checkpointing!r}"
            )

    def resolved(
        self,
        learning_rates: dict[str, float] | None = None,
        lr_schedules: dict[str, str] | None = None,
        tune_steps: dict[str, int] | None = None,
        noise_weights: dict[str, str] | None = None,
    ) -> TuneSettings:
        """A copy with every default filled in (the step count, learning rate, schedule and noise weights
        from the model's per-method `tune_steps`, `learning_rates`, `lr_schedules` and `noise_weights`,
        else the built-in ones): what the cache key and metadata record."""
        counts = {**DEFAULT_TUNE_STEPS, **(tune_steps or {})}
        steps = self.steps if self.steps is not None else counts[self.method]
        rates = {**DEFAULT_LEARNING_RATE, **(learning_rates or {})}
        lr = self.learning_rate if self.learning_rate is not None else rates[self.method]
        schedule = self.lr_schedule or {**DEFAULT_LR_SCHEDULE, **(lr_schedules or {})}[self.method]
        weights = self.noise_weights or (noise_weights or {}).get(self.method, UNIFORM_NOISE_WEIGHTS)
        weights = ",".join(f"{w:g}" for w in parse_noise_weights(weights))  # one spelling per weighting
        return replace(self, steps=steps, learning_rate=lr, lr_schedule=schedule, noise_weights=weights)


@dataclass(frozen=True)
class EditSettings:
    """The edit dials (UniTune section 3): guidance, noisy start and base-detail interpolation."""

    guidance: float = _opt(10.0, "--guidance", "classifier-free guidance weight (<= 1 disables guidance)")
    strength: float = _opt(
        0.9, "--strength", "noisy start: fraction of the schedule re-noised (1 = pure noise)"
    )
    interpolation: float = _opt(
        0.0, "--interpolation", "base-detail interpolation weight in [0, 1] (0 = off)"
    )
    guidance_rescale: float = _opt(
        0.0, "--guidance-rescale", "rescale strong guidance towards the conditional prediction (0-1; 0 = off)"
    )
    steps: int = _opt(50, "--steps", "sampling steps of the full schedule")
    seed: int = _opt(0, "--seed", "seed of image k of each prompt is seed + k")
    num_images: int = _opt(1, "--num-images", "images per prompt")
    negative_prompt: str = _opt("", "--negative-prompt", "prompt guided against (default: empty)")
    original_size: bool = _opt(
        False,
        "--original-size",
        "return each edit resized to the photo's own width x height (default: the working size, same aspect)",
    )
    untuned_tail: float = _opt(
        0.0,
        "--untuned-tail",
        "share of the schedule, at its low-noise end, sampled with the untuned weights (0 = the tune "
        "throughout; 0.3: timesteps below 300 of 1000)",
    )
    model_guidance: float = _opt(
        0.0,
        "--model-guidance",
        "weight of the untuned model's reading of the edit's words (without R), added at the tuned steps "
        "(SINE's model guidance; 0 = off); costs one more guided UNet call per tuned step",
    )
    sample_batch: int = _opt(
        1,
        "--sample-batch",
        "images denoised together in one UNet batch (prompts, seeds, sweep cells, --auto's candidates): "
        "faster on small models; in a batch an image can differ from its run alone by float rounding",
    )
    decoder_gate: float = _opt(
        DEFAULT_DECODER_GATE,
        "--decoder-gate",
        "with a tune's decoder fit (--decoder-steps): decode with the fitted decoder only where the sample "
        "is still the image, with the model's where the edit changed it; the gate's width in RGB distance "
        "(as interpolation's mask; 0 = the fitted decoder everywhere)",
    )
    auto_model_guidance: float = _opt(
        0.0,
        "--auto-model-guidance",
        "with --auto, one more candidate: strength 1 with this model guidance (0 = none)",
    )
    auto: bool = _opt(
        False,
        "--auto",
        "automatic dial: sample strengths 0.6, 0.8 and 1 (and --auto-model-guidance's candidate), keep "
        "the one in which the untuned model reads the edit's words best (unitune.auto; ~3.5x one edit)",
    )

    localize: str = _opt(
        "off",
        "--localize",
        "auto: change only where the tuned model's readings of 'R edit' and 'R' disagree (DiffEdit's mask "
        "from the tune), keeping the base image elsewhere at every step; off: the whole image may change. "
        "--mask FILE gives the region yourself",
    )
    mask_reading: str = _opt(
        "tuned",
        "--mask-reading",
        "which readings the automatic mask compares: tuned ('R edit' against 'R', with the tune) or untuned "
        "(the edit's words against no words, with the model before the tune)",
    )
    mask_draws: int = _opt(10, "--mask-draws", "noise draws averaged for the automatic mask (DiffEdit: 10)")
    mask_strength: float = _opt(
        0.5, "--mask-strength", "noise level the automatic mask is read at, as a strength in (0, 1]"
    )
    mask_ratio: float = _opt(
        3.0,
        "--mask-ratio",
        "the automatic mask's difference map is clamped at this multiple of its mean before rescaling "
        "(diffusers' mask_thresholding_ratio)",
    )
    mask_threshold: float = _opt(
        0.5, "--mask-threshold", "the rescaled difference above which a cell may change, in [0, 1)"
    )
    mask_dilation: int = _opt(0, "--mask-dilation", "grow the automatic mask by this many latent cells")
    mask_regions: bool = _opt(
        False,
        "--mask-regions",
        "snap the automatic mask to the image's own regions: the background when the readings' "
        "disagreement is about as strong there as on the objects, else the one object where it is "
        "strongest (4 px wider when the words name a size; its box less its inside when the "
        "disagreement rings it as strongly: a new outline); an addition's words ('and a ...', 'with "
        "a ...') give the image off its objects (unitune.regions); grown by --mask-grow like your own mask",
    )
    mask_background_ratio: float = _opt(
        0.5,
        "--mask-background-ratio",
        "with --mask-regions: the edit is the background's when the disagreement's mean over the "
        "background is above this multiple of its mean over the rest (lower: more edits read as "
        "background edits)",
    )
    mask_grow: int = _opt(
        0,
        "--mask-grow",
        "grow your own mask (--mask, or one painted in the UI) by this many pixels of the image the model "
        "works at before it is used: an edit needs room at the region's edge",
    )
    mask_guidance: float | None = _opt(
        None,
        "--mask-guidance",
        "guidance of a localised edit (a mask given or estimated; default: --guidance): the base is kept "
        "outside the mask, so a stronger pull towards the words costs nothing there",
    )
    auto_mask_guidance: float | None = _opt(
        None,
        "--auto-mask-guidance",
        "guidance inside the automatic mask (--localize auto, no mask of yours; default: --mask-guidance): "
        "an estimated mask can be wrong, and a strong pull amplifies its errors",
    )
    mask_composite: bool = _opt(
        False,
        "--mask-composite",
        "after decoding, put the base image's own pixels back outside the mask (soft at its edge), so the "
        "kept part is exact instead of the autoencoder's reconstruction",
    )
    inversion: bool = _opt(
        False,
        "--inversion",
        "start an edit from the base image's edit-friendly DDPM inversion under 'R' (its noise maps keep "
        "the layout) instead of fresh noise; samples with DDIM at eta 1, whatever the model's scheduler",
    )
    inversion_guidance: float = _opt(
        1.0, "--inversion-guidance", "guidance of 'R' while inverting (1 = the conditional reading alone)"
    )

    def __post_init__(self):
        if self.localize not in LOCALIZE_MODES:
            choices = " or ".join(LOCALIZE_MODES)
            raise UnituneError(f"localize must be {choices}, got {self.localize!r}")
        if self.mask_reading not in MASK_READINGS:
            choices = " or ".join(MASK_READINGS)
            raise UnituneError(f"mask reading must be {choices}, got {self.mask_reading!r}")
        if not 1 <= self.mask_draws <= MAX_MASK_DRAWS:
            raise UnituneError(f"mask draws must be in [1, {MAX_MASK_DRAWS}], got {self.mask_draws}")
        if not 0 < self.mask_strength <= 1:
            raise UnituneError(f"mask strength must be in (0, 1], got {self.mask_strength}")
        if not (math.isfinite(self.mask_ratio) and self.mask_ratio > 0):
            raise UnituneError(f"mask ratio must be > 0, got {self.mask_ratio}")
        if not 0 <= self.mask_threshold < 1:
            raise UnituneError(f"mask threshold must be in [0, 1), got {self.mask_threshold}")
        if not 0 <= self.mask_dilation <= MAX_MASK_DILATION:
            raise UnituneError(f"mask dilation must be in [0, {MAX_MASK_DILATION}], got {self.mask_dilation}")
        if not (math.isfinite(self.mask_background_ratio) and self.mask_background_ratio > 0):
            raise UnituneError(f"mask background ratio must be > 0, got {self.mask_background_ratio}")
        if not 0 <= self.mask_grow <= MAX_MASK_GROW:
            raise UnituneError(f"mask grow must be in [0, {MAX_MASK_GROW}] pixels, got {self.mask_grow}")
        if self.localize == "auto" and int(self.steps * self.mask_strength) < 1:
            raise UnituneError(f"steps x mask strength must be >= 1, got {self.steps} x {self.mask_strength}")
        if self.guidance < 0:
            raise UnituneError(f"guidance must be >= 0, got {self.guidance}")
        if self.mask_guidance is not None and not (
            math.isfinite(self.mask_guidance) and self.mask_guidance >= 0
        ):
            raise UnituneError(f"mask guidance must be >= 0, got {self.mask_guidance}")
        if self.auto_mask_guidance is not None and not (
            math.isfinite(self.auto_mask_guidance) and self.auto_mask_guidance >= 0
        ):
            raise UnituneError(f"auto mask guidance must be >= 0, got {self.auto_mask_guidance}")
        if not (math.isfinite(self.inversion_guidance) and self.inversion_guidance >= 0):
            raise UnituneError(f"inversion guidance must be >= 0, got {self.inversion_guidance}")
        if not 0 <= self.guidance_rescale <= 1:
            raise UnituneError(f"guidance rescale must be in [0, 1], got {self.guidance_rescale}")
        if not 0 < self.strength <= 1:
            raise UnituneError(f"strength must be in (0, 1], got {self.strength}")
        if not 0 <= self.interpolation <= 1:
            raise UnituneError(f"interpolation must be in [0, 1], got {self.interpolation}")
        if not 0 <= self.untuned_tail < 1:
            raise UnituneError(f"untuned tail must be in [0, 1), got {self.untuned_tail}")
        for name, weight in (
            ("model guidance", self.model_guidance),
            ("auto model guidance", self.auto_model_guidance),
        ):
            if not 0 <= weight <= MAX_MODEL_GUIDANCE:
                raise UnituneError(f"{name} must be in [0, {MAX_MODEL_GUIDANCE:g}], got {weight}")
        if not (math.isfinite(self.decoder_gate) and 0 <= self.decoder_gate <= MAX_DECODER_GATE):
            raise UnituneError(f"decoder gate must be in [0, {MAX_DECODER_GATE:g}], got {self.decoder_gate}")
        if self.steps < 1:
            raise UnituneError(f"steps must be >= 1, got {self.steps}")
        if int(self.steps * self.strength) < 1:
            raise UnituneError(f"steps x strength must be >= 1, got {self.steps} x {self.strength}")
        if self.num_images < 1:
            raise UnituneError(f"num images must be >= 1, got {self.num_images}")
        if not 1 <= self.sample_batch <= MAX_SAMPLE_BATCH:
            raise UnituneError(f"sample batch must be in [1, {MAX_SAMPLE_BATCH}], got {self.sample_batch}")

    def to_dict(self) -> dict:
        return asdict(self)


FALLS_BACK_TO = {"auto_mask_guidance": "mask_guidance"}  # an unset field samples with the other


def over_defaults(defaults, given: dict):
    """The settings the user `given` (field -> value) over a model's recommended `defaults`; a field that
    falls back to another (FALLS_BACK_TO) drops the model's value where the user gives only the other,
    so `--mask-guidance 12` reaches the automatic mask too."""
    dropped = {
        name: None
        for name, other in FALLS_BACK_TO.items()
        if other in given and name not in given and hasattr(defaults, name)
    }
    return replace(defaults, **dropped, **given)


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: the one list of these options. The CLI's model flags are made from its
    fields, and `Editor.load` and the batch runner take the same names (tests/test_cli.py checks)."""

    model: str | None = _opt(
        None, "--model", "hub id, diffusers folder or .safetensors file [default: embedded]"
    )
    device: str | None = _opt(None, "--device", "cuda, mps or cpu [default: best available]")
    dtype: str | None = _opt(None, "--dtype", "auto, float32, float16 or bfloat16 (autocast precision)")
    allow_pickle: bool = _opt(
        False, "--allow-pickle", "allow loading pickle (.ckpt / .bin) weights, which can run code"
    )
    cache_dir: Path | None = _opt(
        None, "--cache-dir", "tune cache [default: $UNITUNE_CACHE_DIR or ~/.cache/unitune]"
    )
    cache_max_size: str | None = _opt(
        None,
        "--cache-max-size",
        "tune cache limit, e.g. 20GB or none: least recently used tunes are evicted beyond it "
        "[default: $UNITUNE_CACHE_MAX_SIZE or 20GB]",
    )
    size: int | None = _opt(
        None, "--size", "work at about SIZE x SIZE pixels, the photo's aspect kept [default: the model's]"
    )
    width: int | None = _opt(
        None, "--width", "work at this width (a multiple of 8 for Stable Diffusion); alone: height follows"
    )
    height: int | None = _opt(
        None, "--height", "work at this height; alone: the width follows the photo's aspect"
    )
    prediction_type: str | None = _opt(
        None,
        "--prediction-type",
        "epsilon or v_prediction: override the model's (an SD 2.x file is taken as v_prediction)",
    )
    native_size: int | None = _opt(
        None, "--native-size", "pixels per side the model was trained at, e.g. 512 for SD 2.x base"
    )
    cuda_graphs: str | None = _opt(
        None,
        "--cuda-graphs",
        "auto, on or off: replay the UNet's calls as CUDA graphs (same numbers, less host time) "
        "[default: auto = on with CUDA]",
    )

    def to_dict(self) -> dict:
        """Keyword arguments for `Editor.load` (and the batch runner)."""
        return asdict(self)


@dataclass(frozen=True)
class ModelDefaults:
    """A model's recommended settings (its folder's `unitune.json`), used wherever a caller passes None."""

    edit: EditSettings = field(default_factory=EditSettings)
    tune: TuneSettings = field(default_factory=TuneSettings)
    learning_rates: dict[str, float] = field(default_factory=dict)  # per tune method, when --lr is not given
    lr_schedules: dict[str, str] = field(default_factory=dict)  # per tune method, when --lr-schedule is not
    tune_steps: dict[str, int] = field(default_factory=dict)  # per tune method, when --tune-steps is not
    noise_weights: dict[str, str] = field(default_factory=dict)  # per tune method, as the three above

    @classmethod
    def from_dict(cls, data, source: str) -> ModelDefaults:
        """`{"edit": {...}, "tune": {...}, "learning_rates": {"full": ..., "lora": ...}, "lr_schedules":
        {"full": ...}, "tune_steps": {"lora": ...}, "noise_weights": {"full": "1,1,1,0.25"}}`, each part
        optional, the first two any subset of the settings' fields; unknown keys raise."""
        expected = ", ".join(f"'{key}'" for key in MODEL_DEFAULTS_KEYS)
        if not isinstance(data, dict):
            raise UnituneError(f"{source}: expected a JSON object with {expected}")
        for key in data:
            if key not in MODEL_DEFAULTS_KEYS:
                raise UnituneError(f"{source}: unknown key {key!r}; expected {expected}")
        return cls(
            edit=settings_from_dict(EditSettings, data.get("edit", {}), f"{source}: edit"),
            tune=settings_from_dict(TuneSettings, data.get("tune", {}), f"{source}: tune"),
            learning_rates=_learning_rates(data.get("learning_rates", {}), f"{source}: learning_rates"),
            lr_schedules=_lr_schedules(data.get("lr_schedules", {}), f"{source}: lr_schedules"),
            tune_steps=_tune_steps(data.get("tune_steps", {}), f"{source}: tune_steps"),
            noise_weights=_noise_weights(data.get("noise_weights", {}), f"{source}: noise_weights"),
        )


MODEL_DEFAULTS_KEYS = ("edit", "tune", "learning_rates", "lr_schedules", "tune_steps", "noise_weights")


def _learning_rates(values, source: str) -> dict[str, float]:
    def rate(method, value):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise UnituneError(f"{source}: {method} must be a positive number, got {value!r}")
        return float(value)

    return _per_method(values, source, "learning rate", rate)


def _lr_schedules(values, source: str) -> dict[str, str]:
    def schedule(method, value):
        if value not in LR_SCHEDULES:
            raise UnituneError(f"{source}: {method} must be one of {', '.join(LR_SCHEDULES)}, got {value!r}")
        return value

    return _per_method(values, source, "schedule", schedule)


def _tune_steps(values, source: str) -> dict[str, int]:
    def count(method, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UnituneError(f"{source}: {method} must be a whole number >= 0, got {value!r}")
        return value

    return _per_method(values, source, "step count", count)


def _noise_weights(values, source: str) -> dict[str, str]:
    def weights(method, value):
        if not isinstance(value, str):
            raise UnituneError(f'{source}: {method} must be a string like "1,1,1,0.25", got {value!r}')
        try:
            parse_noise_weights(value)
        except UnituneError as error:
            raise UnituneError(f"{source}: {method}: {error}") from None
        return value

    return _per_method(values, source, "noise weights", weights)


def _per_method(values, source: str, what: str, check) -> dict:
    """A JSON object of tune method -> value, each value passed through `check(method, value)`."""
    if not isinstance(values, dict):
        raise UnituneError(f"{source}: expected a JSON object of tune method -> {what}")
    for method in values:
        if method not in METHODS:
            raise UnituneError(f"{source}: unknown tune method {method!r}; choose from {', '.join(METHODS)}")
    return {method: check(method, value) for method, value in values.items()}


def settings_from_dict(cls, values, source: str, base=None):
    """`cls` (EditSettings or TuneSettings) from a JSON object of some of its fields, over `base` (an
    instance, as `over_defaults`; None: the dataclass defaults); an unknown key, a wrong type or a bad
    value raises naming `source` and the key."""
    if not isinstance(values, dict):
        raise UnituneError(f"{source}: expected a JSON object of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    checked = {}
    for key, value in values.items():
        if key not in names:
            raise UnituneError(f"{source}: unknown key {key!r}; {cls.__name__} fields: {', '.join(names)}")
        types = typing.get_args(hints[key]) or (hints[key],)  # `float | None` -> (float, NoneType)
        if float in types and type(value) is int:
            value = float(value)  # JSON writes 5.0 as 5 as often as not
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            raise UnituneError(f"{source}: {key} must be {_type_name(hints[key])}, got {value!r}")
        checked[key] = value
    try:
        return cls(**checked) if base is None else over_defaults(base, checked)
    except UnituneError as error:
        raise UnituneError(f"{source}: {error}") from None


def _type_name(hint) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in typing.get_args(hint) or (hint,))


def settings_json(settings: dict) -> str:
    """Canonical JSON: the same settings always give the same string (and cache key)."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
