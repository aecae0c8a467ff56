"""The public Python API: load a model once, tune on an image once, edit it many times.

    from unitune import Editor, EditSettings, TuneSettings
    editor = Editor.load()                                  # embedded model, automatic device
    results = editor.edit("cat.png", ["wearing a hat"], EditSettings(guidance=10), TuneSettings())
    results[0].image.save("hat.png")

The CLI and any UI call only this module.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from .auto import AUTO_STRENGTHS, pick, score_candidates
from .cache import TuneCache, tune_key
from .errors import UnituneError
from .images import Sizing, fit, image_hash, load_image, restore_size
from .interpolation import interpolate_details
from .loading import (
    Runtime,
    load_model_defaults,
    load_pipeline,
    model_identity,
    pick_runtime,
    resolve_model,
)
from .outputs import EditResult
from .pipelines import text_encoders
from .progress import Progress, ProgressFn, StopFn, check_stop, report
from .sampling import decode, encode_prompts, initial_latents, iter_denoise, schedule, to_pil
from .settings import EditSettings, ModelDefaults, TuneSettings, settings_json
from .sweep import SweepResult, contact_sheet, grid
from .tuning import (
    TUNE_RECIPE_VERSION,
    add_lora,
    encode_latent,
    encode_text,
    load_lora,
    lora_state,
    merge_lora,
    remove_lora,
    train,
)
from .version import __version__

ImageInput = str | Path | Image.Image


@dataclass
class TuneResult:
    """A tune in the cache: its key and file, whether this call trained it, and the step losses."""

    key: str
    path: Path
    trained: bool
    settings: dict
    losses: list[float] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    import diffusers
    import peft
    import transformers

    return {
        "unitune": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


class Editor:
    """A loaded pipeline plus the tune cache. Thread-safe: calls run one at a time.

    The editor owns its pipeline's UNet weights: after an edit the UNet holds that edit's tune (see
    `restore_base`). Two editors built on one pipeline must `restore_base()` before the other uses it."""

    def __init__(
        self,
        pipe,
        model: str,
        runtime: Runtime,
        cache: TuneCache,
        defaults: ModelDefaults | None = None,
        sizing: Sizing | None = None,
    ):
        self.pipe, self.model, self.runtime, self.cache = pipe, model, runtime, cache
        self.defaults = defaults or ModelDefaults()
        self.sizing = sizing or Sizing()  # how photos are fitted (images.Sizing); replace it at will
        self._lock = threading.RLock()
        self._base_state: dict[str, torch.Tensor] | None = None
        self._full_applied = False
        self._lora_originals: dict[str, torch.Tensor] | None = None  # the weights a merged LoRA changed
        self._applied_key: str | None = None  # the tune whose weights the UNet holds now (None: the base)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        allow_pickle: bool = False,
        cache_dir: str | Path | None = None,
        cache_max_size: str | int | None = None,
        size: int | None = None,
        width: int | None = None,
        height: int | None = None,
        prediction_type: str | None = None,
        native_size: int | None = None,
    ) -> Editor:
        """Load `model` (hub id, diffusers folder or .safetensors file; None = embedded model) once.

        A local folder's `unitune.json` (the embedded model's folder has one) sets the
        settings used when a call passes None; see `default_edit_settings` / `default_tune_settings`.
        `cache_max_size` ("20GB", a number of bytes or "none") bounds the tune cache: least recently used
        tunes are evicted beyond it [default: $UNITUNE_CACHE_MAX_SIZE, else 20 GB].
        `size` (about size x size pixels at each photo's aspect) or `width` / `height` (exact; one alone:
        the other follows the aspect) set the working size; default: the model's native pixel count.
        `prediction_type` ("epsilon" or "v_prediction") and `native_size` (pixels per side it was trained
        at) override the model's own: an SD 2.x checkpoint file is taken as 768 px v-prediction otherwise.
        """
        sizing = Sizing(size, width, height)
        runtime = pick_runtime(device, dtype)
        cache = TuneCache(cache_dir, cache_max_size)
        resolved = resolve_model(model)
        defaults = load_model_defaults(resolved)
        pipe = load_pipeline(resolved, allow_pickle, prediction_type, native_size).to(runtime.device)
        for module in (pipe.unet, pipe.vae, *text_encoders(pipe)):
            module.requires_grad_(False).eval()
        return cls(pipe, resolved, runtime, cache, defaults, sizing)

    def default_edit_settings(self) -> EditSettings:
        """The model's recommended edit settings (its unitune.json over the dataclass defaults)."""
        return self.defaults.edit

    def default_tune_settings(self) -> TuneSettings:
        """The model's recommended tune settings (its unitune.json over the dataclass defaults)."""
        return self.defaults.tune

    def resolve_tune(self, settings: TuneSettings | None) -> TuneSettings:
        """`settings` (None: the model's recommended ones) with every default filled in, the learning
        rate from the model's per-method `learning_rates` when none was given."""
        return (settings or self.default_tune_settings()).resolved(self.defaults.learning_rates)

    @property
    def native_size(self) -> int:
        """Side in pixels of the square the model was trained at: unet sample_size x VAE scale factor."""
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    @property
    def stride(self) -> int:
        """Pixels per latent: every working side is a multiple of it."""
        return self.pipe.vae_scale_factor

    def work_size(self, photo_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) a photo of `photo_size` is edited at (see `images.Sizing`)."""
        return self.sizing.fit_size(photo_size, self.native_size, self.stride)

    def prepare_image(self, image: ImageInput) -> Image.Image:
        """Load (any mode, EXIF-rotated, first frame, sRGB) and resize to the working size at its aspect."""
        photo = load_image(image)
        return fit(photo, self.work_size(photo.size))

    # --- 1. tune -------------------------------------------------------------------------------------

    def tune_key(self, image: ImageInput, settings: TuneSettings | None = None) -> str:
        base = self.prepare_image(image)
        settings = self.resolve_tune(settings).to_dict()
        identity = f"{model_identity(self.model, self.pipe)}|compute={self.runtime.dtype}"
        return tune_key(identity, image_hash(base), settings, TUNE_RECIPE_VERSION)

    def tune(
        self,
        image: ImageInput,
        settings: TuneSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> TuneResult:
        """Fine-tune on (image, R) unless the cache already holds this (model, image, settings) tune."""
        base = self.prepare_image(image)
        tuned, _ = self._tuned(base, self.resolve_tune(settings), progress, should_stop, load=False)
        return tuned

    def _tuned(self, base, settings: TuneSettings, progress, should_stop, load: bool):
        """(TuneResult, its weights when `load`): a sound cached entry's, else trained and saved now.

        All under the key's lock, so another process wanting the same tune waits and then reuses it,
        and no one evicts the entry while it is read. A bad entry is reported and trained again.
        """
        key = self.tune_key(base, settings)
        with self._lock, self.cache.locked(key):
            # the applied tune's weights are in the UNet already: checked, not read again
            cached = self.cache.read(key, tensors=load and key != self._applied_key)
            if cached is not None:
                tensors, metadata = cached
                result = TuneResult(key, self.cache.path(key), False, settings.to_dict(), _losses(metadata))
                return result, tensors
            tensors, losses = self._train(base, settings, progress, should_stop)
            path = self.cache.save(key, tensors, self._metadata(base, settings, losses))
            self.cache.enforce_limit()  # under the key's lock: the new entry is never the one evicted
        return TuneResult(key, path, True, settings.to_dict(), losses), tensors

    def _train(self, base, settings: TuneSettings, progress, should_stop):
        latent = encode_latent(self.pipe, base, self.runtime)
        text = encode_text(self.pipe, settings.rare_prompt, self.runtime, base.size)
        self._restore_base()
        if settings.method == "lora":
            add_lora(self.pipe.unet, settings.lora_rank, settings.lora_targets, seed=settings.seed)
        else:
            self._snapshot_base()
            self._full_applied = True
        try:
            losses = train(self.pipe, latent, text, settings, self.runtime, progress, should_stop)
            return self._tuned_tensors(settings.method), losses
        finally:
            self._restore_base()

    def _tuned_tensors(self, method: str) -> dict[str, torch.Tensor]:
        unet = self.pipe.unet
        state = lora_state(unet) if method == "lora" else unet.state_dict()
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}

    def _metadata(self, base, settings: TuneSettings, losses: list[float]) -> dict[str, str]:
        return {  # the cache adds "format" and "key"
            "model": self.model,
            "model_identity": model_identity(self.model, self.pipe),
            "compute_dtype": str(self.runtime.dtype),
            "recipe_version": str(TUNE_RECIPE_VERSION),
            "image_hash": image_hash(base),
            "settings": settings_json(settings.to_dict()),
            "seed": str(settings.seed),
            "versions": settings_json(library_versions()),
            "losses": json.dumps(losses),
        }

    # --- tuned weights in and out of the UNet ----------------------------------------------------------

    def _snapshot_base(self) -> None:
        if self._base_state is None:
            state = self.pipe.unet.state_dict()
            # kept on the CPU: a second UNet in accelerator memory would cost as much as the model
            self._base_state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}

    def restore_base(self) -> None:
        """Put the UNet's base weights back now. An edit leaves its tune applied, so the next edit with
        the same tune neither reads its file nor copies weights; training a tune, `generate`, an edit with
        another tune, `applied` and this call put the base weights back first."""
        with self._lock:
            self._restore_base()

    def _restore_base(self) -> None:
        self._applied_key = None
        remove_lora(self.pipe.unet)
        if self._lora_originals is not None:
            self.pipe.unet.load_state_dict(self._lora_originals, strict=False)
            self._lora_originals = None
        if self._full_applied:
            self.pipe.unet.load_state_dict(self._base_state)
            self._full_applied = False

    @contextlib.contextmanager
    def applied(self, tune: TuneResult):
        """The UNet with the tune's weights inside the block, its base weights again after it.

        UnituneError if the tune is no longer in the cache (removed, evicted) or its file is damaged.
        """
        with self.cache.locked(tune.key):
            tensors, metadata = self.cache.load(tune.key)
        with self._lock:
            self._restore_base()
            with self._applied(tensors, json.loads(metadata["settings"]), tune.key):
                yield
            self._restore_base()

    @contextlib.contextmanager
    def _applied(self, tensors: dict[str, torch.Tensor] | None, settings: dict, key: str):
        """The tune `key` in the UNet inside the block, and still after it (`tensors` may be None when
        it is applied already); after an error or a stop, the base weights again."""
        with self._lock:
            if key != self._applied_key:
                self._restore_base()
                try:
                    self._apply(tensors, settings)
                except BaseException:
                    self._restore_base()
                    raise
                self._applied_key = key
            try:
                yield
            except BaseException:
                self._restore_base()
                raise

    def _apply(self, tensors: dict[str, torch.Tensor], settings: dict) -> None:
        if settings["method"] == "lora":
            load_lora(self.pipe.unet, tensors, settings["lora_rank"], settings["lora_targets"])
            self._lora_originals = merge_lora(self.pipe.unet)
        else:
            self._snapshot_base()
            self._full_applied = True
            self.pipe.unet.load_state_dict(tensors)

    # --- 2. edit ---------------------------------------------------------------------------------------

    def edit(
        self,
        image: ImageInput,
        prompts: list[str] | str,
        edit: EditSettings | None = None,
        tune: TuneSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> list[EditResult]:
        """Edit `image` once per prompt and seed; tunes first unless a cached tune exists."""
        edit, tune = edit or self.default_edit_settings(), self.resolve_tune(tune)
        prompts = _prompts(prompts)
        photo = load_image(image)
        base = fit(photo, self.work_size(photo.size))
        with self._lock:  # no other call changes the UNet between reading the tune and sampling
            tuned, tensors = self._tuned(base, tune, progress, should_stop, load=True)
            with self._applied(tensors, tuned.settings, tuned.key):
                results = [
                    self._edit_one(base, prompt, edit, tuned, seed, progress, should_stop)
                    for prompt in prompts
                    for seed in range(edit.seed, edit.seed + edit.num_images)
                ]
        return [restore_size(result, photo.size) for result in results] if edit.original_size else results

    def _edit_one(
        self, base, prompt, edit: EditSettings, tuned: TuneResult, seed, progress, should_stop, raws=None
    ):
        """One edited image with its settings; `raws`, a list, receives the sample before interpolation."""
        full_prompt = f"{tuned.settings['rare_prompt']} {prompt}".strip()
        label = f"{prompt} (seed {seed})"
        dial = None
        if edit.auto:
            edit, image, dial = self._auto_dial(base, prompt, edit, tuned, seed, label, progress, should_stop)
        else:
            image, raw = self._sample(full_prompt, edit, seed, base, label, progress, should_stop)
            if raws is not None:
                raws.append(raw)
        settings = self._result_settings("edit", prompt, full_prompt, edit, seed, base.size)
        settings.update(tune_key=tuned.key, tune=tuned.settings, image_hash=image_hash(base))
        if dial is not None:
            settings["auto_dial"] = dial
        return EditResult(image, settings)

    def _auto_dial(self, base, prompt, edit: EditSettings, tuned, seed, label, progress, should_stop):
        """Sample each candidate strength (same seed), score the raw samples with the tuned model
        (unitune.auto) and keep the pick: (its settings, its image, the record of the choice)."""
        full_prompt = f"{tuned.settings['rare_prompt']} {prompt}".strip()
        candidates = [replace(edit, strength=strength) for strength in AUTO_STRENGTHS]
        samples = [
            self._sample(full_prompt, c, seed, base, f"{label} s={c.strength:g}", progress, should_stop)
            for c in candidates
        ]
        raws = [raw for _, raw in samples]
        signals = score_candidates(self.pipe, raws, tuned.settings["rare_prompt"], prompt, self.runtime)
        index = pick(signals)
        dial = {
            "picked_strength": candidates[index].strength,
            "candidates": [
                {"strength": c.strength, **s.to_dict()} for c, s in zip(candidates, signals, strict=True)
            ],
        }
        return candidates[index], samples[index][0], dial

    def generate(
        self,
        prompts: list[str] | str,
        edit: EditSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> list[EditResult]:
        """Plain text-to-image with the base model (strength is ignored: always from pure noise)."""
        edit = replace(edit or self.default_edit_settings(), strength=1.0, interpolation=0.0)
        prompts = _prompts(prompts)
        results = []
        with self._lock:
            self._restore_base()
            for prompt in prompts:
                for seed in range(edit.seed, edit.seed + edit.num_images):
                    image, _ = self._sample(
                        prompt, edit, seed, None, f"{prompt} (seed {seed})", progress, should_stop
                    )
                    settings = self._result_settings("generate", prompt, prompt, edit, seed, image.size)
                    results.append(EditResult(image, settings))
        return results

    def sweep(
        self,
        image: ImageInput,
        prompt: str,
        guidances: list[float],
        strengths: list[float],
        edit: EditSettings | None = None,
        tune: TuneSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> SweepResult:
        """Edit with every (guidance, strength) pair, one image each; returns them and a contact sheet.
        With `edit.auto`, the automatic dial scores every cell and marks its pick on the sheet (and in
        that result's settings, `auto_dial`)."""
        edit = edit or self.default_edit_settings()
        auto, edit = edit.auto, replace(edit, num_images=1, auto=False)
        cells = [replace(edit, guidance=g, strength=s) for g, s in grid(guidances, strengths)]
        if not cells:
            raise UnituneError("a sweep needs at least one guidance and one strength")
        tune, prompt = self.resolve_tune(tune), _prompts(prompt)[0]
        photo = load_image(image)
        base = fit(photo, self.work_size(photo.size))
        raws: list[Image.Image] = []
        with self._lock:
            tuned, tensors = self._tuned(base, tune, progress, should_stop, load=True)
            with self._applied(tensors, tuned.settings, tuned.key):
                results = [
                    self._edit_one(base, prompt, c, tuned, c.seed, progress, should_stop, raws) for c in cells
                ]
                picked = self._mark_pick(prompt, tuned, results, raws) if auto else None
        sheet = contact_sheet([r.image for r in results], list(guidances), list(strengths), picked)
        if edit.original_size:
            results = [restore_size(result, photo.size) for result in results]
        return SweepResult(results, list(guidances), list(strengths), sheet, picked)

    def _mark_pick(self, prompt: str, tuned: TuneResult, results: list[EditResult], raws) -> int:
        signals = score_candidates(self.pipe, raws, tuned.settings["rare_prompt"], prompt, self.runtime)
        index = pick(signals)
        for result, signal in zip(results, signals, strict=True):
            result.settings["auto_dial"] = {"picked": result is results[index], **signal.to_dict()}
        return index

    # --- sampling --------------------------------------------------------------------------------------

    def _sample(self, prompt, edit: EditSettings, seed, base, label, progress, should_stop):
        """One image: encode prompts, pick the timesteps, start latents, denoise, decode, interpolate.
        Returns (the image, the raw sample before interpolation)."""
        pipe, runtime = self.pipe, self.runtime
        generator = torch.Generator("cpu").manual_seed(seed)
        guided = edit.guidance > 1.0
        size = base.size if base is not None else self.sizing.generate_size(self.native_size, self.stride)
        embeds = encode_prompts(pipe, prompt, edit.negative_prompt, guided, runtime, size)
        timesteps = schedule(pipe, edit.steps, edit.strength, runtime.device)
        latents = initial_latents(pipe, base, timesteps, edit.strength, generator, runtime, size)
        steps = iter_denoise(
            pipe, latents, timesteps, embeds, edit.guidance, generator, runtime, edit.guidance_rescale
        )
        for index, current in steps:
            report(progress, Progress("sample", index + 1, len(timesteps), latents=current, label=label))
            check_stop(should_stop)
            latents = current
        raw = decode(pipe, latents, runtime)
        images = raw
        if base is not None and edit.interpolation > 0:
            base_pixels = torch.from_numpy(_as_array(base)).permute(2, 0, 1)[None].float() / 255.0
            images = interpolate_details(raw, base_pixels, edit.interpolation)
        return to_pil(images)[0], to_pil(raw)[0]

    def _result_settings(self, command, prompt, full_prompt, edit: EditSettings, seed, size) -> dict:
        settings = {"command": command, "model": self.model, "prompt": prompt, "full_prompt": full_prompt}
        settings.update(edit.to_dict(), seed=seed, num_images=1, scheduler=type(self.pipe.scheduler).__name__)
        settings.update(width=size[0], height=size[1])  # the working size the model sampled at
        settings.update(dtype=str(self.runtime.dtype).removeprefix("torch."), unitune_version=__version__)
        return settings


def _prompts(prompts: list[str] | str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise UnituneError("give at least one prompt")
    return prompts


def _losses(metadata: dict[str, str]) -> list[float]:
    return json.loads(metadata.get("losses", "[]"))


def _as_array(image: Image.Image):
    import numpy as np

    return np.array(image.convert("RGB"))
