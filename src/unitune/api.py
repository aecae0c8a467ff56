"""The public Python API: load a model once, tune on an image once, edit it many times.

    from unitune import Editor, EditSettings, TuneSettings
    editor = Editor.load()                                  # embedded model, automatic device
    results = editor.edit("cat.png", ["wearing a hat"], EditSettings(guidance=10), TuneSettings())
    results[0].image.save("hat.png")

The CLI and any UI call only this module.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from .auto import candidates, pick, score_candidates
from .cache import TuneCache, key_settings, tune_key
from .decoder_fit import decoder_tensors, fit_decoder
from .errors import UnituneError, out_of_memory
from .images import Sizing, fit, image_hash, load_image, restore_size
from .inversion import InversionCache
from .loading import (
    Runtime,
    align_weights,
    load_model_defaults,
    load_pipeline,
    model_identity,
    pick_runtime,
    resolve_model,
)
from .localize import load_mask, mask_record, read_mask
from .outputs import EditResult
from .pipelines import text_encoders
from .progress import ProgressFn, RunControl, StopFn
from .sample_batches import SampleRequest, SamplingModel, sample_requests
from .settings import EditSettings, ModelDefaults, TuneSettings, settings_json
from .sweep import SweepResult, contact_sheet, grid
from .tuning import TUNE_RECIPE_VERSION, encode_latent, encode_text, frozen_dtype, train
from .version import __version__
from .weights import UNetWeights

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
        self.weights = UNetWeights(pipe.unet, pipe.vae.decoder)  # the only code that swaps the UNet's weights
        self._lock = threading.RLock()
        # the last few DDPM inversions, reused by later edits of the same image and tune (`clear()` it to
        # time a first edit)
        self.inversions = InversionCache()

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
        cuda_graphs: str | None = None,
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
        `cuda_graphs` ("auto", "on", "off"): replay the UNet's calls as CUDA graphs (auto: on with CUDA).
        """
        sizing = Sizing(size, width, height)
        runtime = pick_runtime(device, dtype, cuda_graphs)
        cache = TuneCache(cache_dir, cache_max_size)
        resolved = resolve_model(model)
        defaults = load_model_defaults(resolved)
        pipe = load_pipeline(resolved, allow_pickle, prediction_type, native_size).to(runtime.device)
        align_weights(pipe)  # one memory layout, whatever the loading path: the same pixels
        for module in (pipe.unet, pipe.vae, *text_encoders(pipe)):
            module.requires_grad_(False).eval()
        return cls(pipe, resolved, runtime, cache, defaults, sizing)

    def default_edit_settings(self) -> EditSettings:
        """The model's recommended edit settings (its unitune.json over the dataclass defaults)."""
        return self.defaults.edit

    def default_tune_settings(self) -> TuneSettings:
        """The model's recommended tune settings (its unitune.json over the dataclass defaults)."""
        return self.defaults.tune

    def resolve_tune(self, tune_settings: TuneSettings | None) -> TuneSettings:
        """`tune_settings` (None: the model's recommended ones) with every default filled in: the step
        count, learning rate, schedule and noise weights from the model's per-method `tune_steps`,
        `learning_rates`, `lr_schedules` and `noise_weights` where none was given."""
        d = self.defaults
        settings = tune_settings or self.default_tune_settings()
        return settings.resolved(d.learning_rates, d.lr_schedules, d.tune_steps, d.noise_weights)

    @property
    def native_size(self) -> int:
        """Side in pixels of the square the model was trained at: unet sample_size x VAE scale factor."""
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    @property
    def stride(self) -> int:
        """Pixels per latent: every working side is a multiple of it."""
        return self.pipe.vae_scale_factor

    def resized(self, size: int | None = None, width: int | None = None, height: int | None = None) -> Editor:
        """This editor at another working size (`images.Sizing`; all None: the model's): a shallow copy
        sharing the model, the tune cache, the weights' owner and the lock, so that one loaded model can
        serve callers that each work at their own size (the web UI's sessions)."""
        view = copy.copy(self)
        view.sizing = Sizing(size, width, height)
        return view

    def sampling_model(self) -> SamplingModel:
        """What the sampler uses of this editor: the pipeline, the runtime, the weights' owner and the size
        to generate at."""
        size = self.sizing.generate_size(self.native_size, self.stride)
        return SamplingModel(self.pipe, self.runtime, self.weights, size, self.inversions)

    def work_size(self, photo_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) a photo of `photo_size` is edited at (see `images.Sizing`)."""
        return self.sizing.fit_size(photo_size, self.native_size, self.stride)

    def prepare_image(self, image: ImageInput) -> Image.Image:
        """Load (any mode, EXIF-rotated, first frame, sRGB) and resize to the working size at its aspect."""
        photo = load_image(image)
        return fit(photo, self.work_size(photo.size))

    # --- 1. tune -------------------------------------------------------------------------------------

    def tune_key(self, image: ImageInput, tune_settings: TuneSettings | None = None) -> str:
        base = self.prepare_image(image)
        settings = key_settings(self.resolve_tune(tune_settings))
        identity = f"{model_identity(self.model, self.pipe)}|compute={self.runtime.dtype}"
        return tune_key(identity, image_hash(base), settings, TUNE_RECIPE_VERSION)

    def tune(
        self,
        image: ImageInput,
        tune_settings: TuneSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> TuneResult:
        """Fine-tune on (image, R) unless the cache already holds this (model, image, settings) tune."""
        base = self.prepare_image(image)
        run = RunControl(progress, should_stop)
        tuned, _ = self._tuned(base, self.resolve_tune(tune_settings), run=run, load=False)
        return tuned

    def train(
        self,
        image: ImageInput,
        tune_settings: TuneSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> tuple[dict[str, torch.Tensor], list[float]]:
        """Tune without the cache (nothing read or written): (the tuned weights, CPU copies, as the cache
        would store them, the fitted decoder's too; the UNet's step losses). The UNet and the decoder hold
        their base weights again afterwards."""
        base, settings = self.prepare_image(image), self.resolve_tune(tune_settings)
        with self._lock:
            tensors, losses, _ = self._train(base, settings, run=RunControl(progress, should_stop))
            return tensors, losses

    def _tuned(self, base, settings: TuneSettings, *, run: RunControl, load: bool):
        """(TuneResult, its weights when `load`): a sound cached entry's, else trained and saved now.

        All under the key's lock, so another process wanting the same tune waits and then reuses it,
        and no one evicts the entry while it is read. A bad entry is reported and trained again.
        """
        key = self.tune_key(base, settings)
        with self._lock, self.cache.locked(key):
            # the applied tune's weights are in the UNet already: checked, not read again
            cached = self.cache.read(key, tensors=load and key != self.weights.applied_key)
            if cached is not None:
                tensors, metadata = cached
                result = TuneResult(
                    key, self.cache.path(key), False, key_settings(settings), _losses(metadata)
                )
                return result, tensors
            tensors, losses, decoder_losses = self._train(base, settings, run=run)
            path = self.cache.save(key, tensors, self._metadata(base, settings, losses, decoder_losses))
            self.cache.enforce_limit()  # under the key's lock: the new entry is never the one evicted
        return TuneResult(key, path, True, key_settings(settings), losses), tensors

    def _train(self, base, settings: TuneSettings, *, run: RunControl):
        what = f"a {settings.method} tune at {base.width}x{base.height} px, batch {settings.batch_size}"
        hint = "try --gradient-checkpointing on, a smaller --batch-size or --size" + (
            ", --method lora or --optimizer adamw8bit" if settings.method == "full" else ""
        )
        with out_of_memory(self.runtime.device.type, what, hint):
            latent = encode_latent(self.pipe, base, self.runtime)
            text = encode_text(self.pipe, settings.rare_prompt, self.runtime, base.size)
            with self.weights.training(settings, frozen_dtype(settings, self.runtime)):
                losses = train(self.pipe, latent, text, settings, self.runtime, run.progress, run.should_stop)
                tensors = self.weights.tuned_tensors(settings.method)
            decoder_losses = []
            if settings.decoder_steps:
                pixels = self.pipe.image_processor.preprocess(base)
                with self.weights.fitting_decoder():
                    decoder_losses = fit_decoder(
                        self.pipe, latent, pixels, settings, self.runtime, run.progress, run.should_stop
                    )
                    tensors |= decoder_tensors(self.pipe)
            return tensors, losses, decoder_losses

    def _metadata(self, base, settings: TuneSettings, losses, decoder_losses=()) -> dict[str, str]:
        fit = {"decoder_losses": json.dumps(decoder_losses)} if decoder_losses else {}
        return fit | {  # the cache adds "format" and "key"
            "model": self.model,
            "model_identity": model_identity(self.model, self.pipe),
            "compute_dtype": str(self.runtime.dtype),
            "recipe_version": str(TUNE_RECIPE_VERSION),
            "image_hash": image_hash(base),
            "settings": settings_json(key_settings(settings)),
            "seed": str(settings.seed),
            "versions": settings_json(library_versions()),
            "losses": json.dumps(losses),
        }

    def restore_base(self) -> None:
        """Put the UNet's base weights back now. An edit leaves its tune applied, so the next edit with
        the same tune neither reads its file nor copies weights; training a tune, `generate`, an edit with
        another tune, `applied` and this call put the base weights back first."""
        with self._lock:
            self.weights.restore_base()

    @contextlib.contextmanager
    def applied(self, tune: TuneResult):
        """The UNet with the tune's weights inside the block, its base weights again after it.

        UnituneError if the tune is no longer in the cache (removed, evicted) or its file is damaged.
        """
        with self.cache.locked(tune.key):
            tensors, metadata = self.cache.load(tune.key)
        with self._lock:
            self.weights.restore_base()
            with self.weights.applied(tensors, json.loads(metadata["settings"])):
                yield

    # --- 2. edit ---------------------------------------------------------------------------------------

    def edit(
        self,
        image: ImageInput,
        prompts: list[str] | str,
        edit_settings: EditSettings | None = None,
        tune_settings: TuneSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        mask: ImageInput | list[ImageInput | None] | None = None,
    ) -> list[EditResult]:
        """Edit `image` once per prompt and seed; tunes first unless a cached tune exists. `mask` (a path
        or image; white = may change, resized to the image) localises every edit to it, whatever
        `edit_settings.localize` says; a list gives each prompt its own (None: that prompt unmasked). Each
        result carries the mask it used (`EditResult.mask`)."""
        edit_settings = edit_settings or self.default_edit_settings()
        tune_settings, prompts = self.resolve_tune(tune_settings), _prompts(prompts)
        run = RunControl(progress, should_stop)
        masks = _masks_per_prompt(mask, len(prompts))  # a bad file fails before the tune
        with self._tuned_and_applied(image, tune_settings, run) as (photo, base, tuned):
            user_masks = [
                load_mask(m, base.size, edit_settings.mask_grow) if m is not None else None for m in masks
            ]
            seeds = range(edit_settings.seed, edit_settings.seed + edit_settings.num_images)
            edits = [(p, s, m) for p, m in zip(prompts, user_masks, strict=True) for s in seeds]
            if edit_settings.auto:
                results = [
                    self._auto_dial(base, p, edit_settings, tuned, s, run=run, mask=m) for p, s, m in edits
                ]
            else:
                cells = [(prompt, edit_settings, seed, m) for prompt, seed, m in edits]
                samples = self._edit_cells(base, cells, tuned, run=run)
                results = [result for result, _ in samples]
        return _at_size(results, photo, edit_settings)

    @contextlib.contextmanager
    def _tuned_and_applied(self, image: ImageInput, tune_settings: TuneSettings, run: RunControl):
        """The shared first half of `edit` and `sweep`: load and fit the image, read or train its tune, and
        hold the tune's weights in the UNet inside the block, under the editor's lock (no other call
        changes the UNet between reading the tune and sampling). Yields (photo, working image, tune)."""
        photo = load_image(image)
        base = fit(photo, self.work_size(photo.size))
        with self._lock:
            tuned, tensors = self._tuned(base, tune_settings, run=run, load=True)
            with self.weights.applied(tensors, tuned.settings, tuned.key, keep=True):
                yield photo, base, tuned

    def _edit_cells(
        self, base, cells, tuned: TuneResult, *, run, label: str | None = None
    ) -> list[tuple[EditResult, Image.Image]]:
        """One edited image per (edit words, settings, seed, mask) with its settings, sampled together where
        they can share a batch; each with its raw sample before interpolation (for the automatic dial).
        `label` names them all in progress reports (default: each its words and seed); a cell's mask: a
        user's (1, 1, H, W) at the working size, or None."""
        rare = tuned.settings["rare_prompt"]
        requests = [
            SampleRequest(
                f"{rare} {words}".strip(),
                settings,
                seed,
                label or f"{words} (seed {seed})",
                words,
                rare,
                mask,
            )
            for words, settings, seed, mask in cells
        ]
        samples = sample_requests(self.sampling_model(), requests, base, run=run)
        results = []
        for request, sample in zip(requests, samples, strict=True):
            words = request.edit_words
            settings = self._result_settings(
                "edit", words, request.prompt, request.settings, request.seed, base.size
            )
            settings.update(tune_key=tuned.key, tune=tuned.settings, image_hash=image_hash(base))
            settings.update(mask_record(request, sample.mask))
            results.append((EditResult(sample.image, settings, sample.mask), sample.raw))
        return results

    def _auto_dial(
        self, base, prompt: str, edit_settings: EditSettings, tuned, seed, *, run, mask=None
    ) -> EditResult:
        """Sample each candidate (same seed, one batch), score the raw samples with the untuned model
        (unitune.auto), and keep the pick, its settings recording the choice (`auto_dial`)."""
        options = candidates(edit_settings)
        label = f"{prompt} (seed {seed}), {len(options)} candidates"
        cells = [(prompt, c, seed, mask) for c in options]
        samples = self._edit_cells(base, cells, tuned, run=run, label=label)
        index, signals = self._score_dial(prompt, tuned, [raw for _, raw in samples])
        result = samples[index][0]
        result.settings["auto_dial"] = {
            "picked_strength": options[index].strength,
            "picked_model_guidance": options[index].model_guidance,
            "candidates": [
                {"strength": c.strength, "model_guidance": c.model_guidance, **s.to_dict()}
                for c, s in zip(options, signals, strict=True)
            ],
        }
        return result

    def generate(
        self,
        prompts: list[str] | str,
        edit_settings: EditSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> list[EditResult]:
        """Plain text-to-image with the base model (strength is ignored: always from pure noise)."""
        edit_settings = replace(
            edit_settings or self.default_edit_settings(), strength=1.0, interpolation=0.0
        )
        prompts, run = _prompts(prompts), RunControl(progress, should_stop)
        seeds = range(edit_settings.seed, edit_settings.seed + edit_settings.num_images)
        with self._lock:
            self.weights.restore_base()
            requests = [
                SampleRequest(prompt, edit_settings, seed, f"{prompt} (seed {seed})")
                for prompt in prompts
                for seed in seeds
            ]
            samples = sample_requests(self.sampling_model(), requests, None, run=run)
        return [
            EditResult(
                sample.image,
                self._result_settings(
                    "generate", r.prompt, r.prompt, edit_settings, r.seed, sample.image.size
                ),
            )
            for r, sample in zip(requests, samples, strict=True)
        ]

    def sweep(
        self,
        image: ImageInput,
        prompt: str,
        guidances: list[float],
        strengths: list[float],
        edit_settings: EditSettings | None = None,
        tune_settings: TuneSettings | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> SweepResult:
        """Edit with every (guidance, strength) pair, one image each; returns them and a contact sheet.
        With `edit_settings.auto`, the automatic dial scores every cell and marks its pick on the sheet
        (and in that result's settings, `auto_dial`)."""
        edit_settings = edit_settings or self.default_edit_settings()
        auto, edit_settings = edit_settings.auto, replace(edit_settings, num_images=1, auto=False)
        # a cell samples at its own guidance, localised or not (no mask guidance over the sweep's axis)
        cells = [
            replace(edit_settings, guidance=g, strength=s, mask_guidance=None, auto_mask_guidance=None)
            for g, s in grid(guidances, strengths)
        ]
        if not cells:
            raise UnituneError("a sweep needs at least one guidance and one strength")
        tune_settings, prompt = self.resolve_tune(tune_settings), _prompts(prompt)[0]
        run = RunControl(progress, should_stop)
        with self._tuned_and_applied(image, tune_settings, run) as (photo, base, tuned):
            samples = self._edit_cells(base, [(prompt, c, c.seed, None) for c in cells], tuned, run=run)
            results, raws = [result for result, _ in samples], [raw for _, raw in samples]
            picked = self._mark_pick(prompt, tuned, results, raws) if auto else None
        sheet = contact_sheet([r.image for r in results], list(guidances), list(strengths), picked)
        results = _at_size(results, photo, edit_settings)
        return SweepResult(results, list(guidances), list(strengths), sheet, picked)

    def _mark_pick(self, prompt: str, tuned: TuneResult, results: list[EditResult], raws) -> int:
        index, signals = self._score_dial(prompt, tuned, raws)
        for result, signal in zip(results, signals, strict=True):
            result.settings["auto_dial"] = {"picked": result is results[index], **signal.to_dict()}
        return index

    def _score_dial(self, prompt: str, tuned: TuneResult, raws) -> tuple[int, list]:
        """The automatic dial on raw samples of one edit: (the index it picks, every candidate's signals)."""
        rare = tuned.settings["rare_prompt"]
        signals = score_candidates(self.pipe, raws, rare, prompt, self.runtime, self.weights)
        return pick(signals), signals

    def _result_settings(self, command, prompt, full_prompt, edit_settings: EditSettings, seed, size) -> dict:
        settings = {"command": command, "model": self.model, "prompt": prompt, "full_prompt": full_prompt}
        settings.update(
            edit_settings.to_dict(), seed=seed, num_images=1, scheduler=type(self.pipe.scheduler).__name__
        )
        settings.update(width=size[0], height=size[1])  # the working size the model sampled at
        settings.update(dtype=str(self.runtime.dtype).removeprefix("torch."), unitune_version=__version__)
        return settings


def _at_size(results: list[EditResult], photo: Image.Image, settings: EditSettings) -> list[EditResult]:
    """The results at the photo's own size when the settings ask for it (`original_size`)."""
    return [restore_size(r, photo.size) for r in results] if settings.original_size else results


def _prompts(prompts: list[str] | str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise UnituneError("give at least one prompt")
    return prompts


def _masks_per_prompt(mask, count: int) -> list:
    """`Editor.edit`'s mask argument as one entry per prompt (a path read now, so that a bad file fails
    before any work; None: that prompt unmasked)."""
    masks = list(mask) if isinstance(mask, list | tuple) else [mask] * count
    if len(masks) != count:
        raise UnituneError(f"got {len(masks)} masks for {count} prompts: give one mask, or one per prompt")
    return [m if m is None or isinstance(m, Image.Image) else read_mask(m) for m in masks]


def _losses(metadata: dict[str, str]) -> list[float]:
    return json.loads(metadata.get("losses", "[]"))
