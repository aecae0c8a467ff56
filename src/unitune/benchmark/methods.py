"""The methods compared, all on one loaded `Editor` (same model, same seeds):

prompt  the untuned model on the full target caption (text-to-image, `Editor.generate`);
sdedit  diffusers' StableDiffusionImg2ImgPipeline on the same components, full target caption;
sdedit-words  the same on the edit's words alone, the fragment UniTune gets (the same input as UniTune);
diffedit  DiffEdit's recipe on the untuned model: its mask from the target caption against the source
        caption, then the target caption sampled with the base kept outside the mask (unitune.localize);
full    UniTune (`Editor.edit`, full tune) on the fragment, guidance x strength x interpolation grid;
lora    the same with a LoRA tune;
localized  UniTune at the model's own edit defaults (what `unitune edit` does; the full tune, the grid's
        sampler steps) three ways on the same edits: without a mask, with the automatic mask
        (`--localize auto`) and with a user's mask, the edit's true changed region (what a user would
        paint; the model grows it by its `mask_grow`).

Every method gets the same guidances, strengths and interpolation weights. Base-detail interpolation is
a post-process of the decoded sample (unitune.interpolation) that any method can use, so each (guidance,
strength) sample is scored at every interpolation weight with the operator `Editor.edit` applies,
instead of sampling it again per weight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from ..auto import AUTO_STRENGTHS, score_candidates
from ..interpolation import interpolate_details
from ..sampling import to_tensor
from ..settings import EditSettings
from ..shapes.world import IMAGE_SIZE
from .binding import measure_binding
from .edits import Edit

FAMILIES = ("prompt", "sdedit", "sdedit-words", "diffedit", "full", "lora", "localized")
LOCALIZED_TUNE = "full"  # the localized family's tune: the full family's, cached by `run_unitune`
MASKS = ("none", "auto", "user")  # the localized family's three ways: no mask, the automatic one, a user's
SEED_OFFSETS = (1, 2)  # the automatic mask again on the test split at the seed + these: a seed's spread


@dataclass(frozen=True)
class Setting:
    family: str
    guidance: float
    strength: float = 1.0
    interpolation: float = 0.0
    model_guidance: float = 0.0  # > 0 only for the automatic dial's extra candidate (not a grid setting)
    mask: str = ""  # the localized family's: one of MASKS
    seed_offset: int = 0  # the localized family's automatic mask drawn again at the seed + this (test)

    @property
    def label(self) -> str:
        text = f"g{self.guidance:g}"
        if self.family != "prompt":
            text += f" s{self.strength:g}"
        text += f" i{self.interpolation:g}"
        text += f" m{self.model_guidance:g}" if self.model_guidance else ""
        text += f" mask:{self.mask}" if self.mask else ""
        return text + (f" seed+{self.seed_offset}" if self.seed_offset else "")

    @property
    def dial_only(self) -> bool:
        """A sample only the automatic dial draws (strength 1 with its model guidance), outside the grid."""
        return self.model_guidance > 0


@dataclass(frozen=True)
class Grid:
    """The settings every method runs: the same guidances, strengths and base-detail interpolation weights
    for all (prompt-only has no strength: it starts from noise), and the sampler steps they share."""

    steps: int
    guidances: tuple[float, ...]
    strengths: tuple[float, ...]
    interpolations: tuple[float, ...]
    families: tuple[str, ...] = FAMILIES

    def settings(self, family: str) -> list[Setting]:
        """The grid's settings for `family` (none for the localized family: it runs the model's defaults)."""
        if family == "localized":
            return []
        strengths = (1.0,) if family == "prompt" else self.strengths
        return [
            Setting(family, g, s, w) for g in self.guidances for s in strengths for w in self.interpolations
        ]


@dataclass
class Output:
    """One edited image with the setting that made it and the seconds per image it took to sample."""

    edit: Edit
    setting: Setting
    image: np.ndarray  # (64, 64, 3) uint8
    seconds: float


@dataclass
class TuneCost:
    family: str
    scene: str
    seconds: float
    final_loss: float
    settings: dict | None = None  # the resolved tune settings


def to_array(image: Image.Image) -> np.ndarray:
    """(64, 64, 3) uint8 at the shapes world's size (a model with another native size is resized)."""
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def run_prompt_only(editor, edits: list[Edit], base: Image.Image, grid: Grid, seed: int) -> Iterator[Output]:
    base_pixels = to_tensor(editor.prepare_image(base))
    batch = editor.default_edit_settings().sample_batch  # the edits sampled together, as SDEdit's
    for guidance in grid.guidances:
        started = time.perf_counter()
        settings = EditSettings(guidance=guidance, steps=grid.steps, seed=seed, sample_batch=batch)
        results = editor.generate([e.caption for e in edits], settings)
        seconds = (time.perf_counter() - started) / len(edits)
        for edit, result in zip(edits, results, strict=True):
            yield from _interpolated(
                edit, Setting("prompt", guidance), result.image, base_pixels, grid, seconds
            )


def run_sdedit(
    editor, edits: list[Edit], base: Image.Image, grid: Grid, seed: int, family: str = "sdedit"
) -> Iterator[Output]:
    """SDEdit (Meng et al., arXiv 2108.01073) as diffusers implements it: img2img at `strength`, on the
    full target caption (`sdedit`) or on the edit's words alone (`sdedit-words`)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    editor.weights.restore_base()  # the untuned UNet, as the other baselines
    pipe = StableDiffusionImg2ImgPipeline(**editor.pipe.components)
    base = editor.prepare_image(base)
    base_pixels = to_tensor(base)
    pipe.set_progress_bar_config(disable=True)
    prompts = [e.prompt if family == "sdedit-words" else e.caption for e in edits]
    for guidance, strength in sorted({(s.guidance, s.strength) for s in grid.settings(family)}):
        setting = Setting(family, guidance, strength)
        started = time.perf_counter()
        with torch.no_grad():
            images = pipe(
                prompt=prompts,
                image=[base] * len(edits),
                strength=setting.strength,
                guidance_scale=setting.guidance,
                num_inference_steps=grid.steps,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="np",
            ).images
        seconds = (time.perf_counter() - started) / len(edits)
        for edit, image in zip(edits, images, strict=True):
            pixels = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
            yield from _interpolated(edit, setting, pixels, base_pixels, grid, seconds)


def run_diffedit(editor, edits: list[Edit], base: Image.Image, grid: Grid, seed: int) -> Iterator[Output]:
    """DiffEdit (Couairon et al., arXiv 2210.11427) at every (guidance, strength) of the grid."""
    base = editor.prepare_image(base)
    base_pixels = to_tensor(base)
    batch = editor.default_edit_settings().sample_batch
    for guidance, strength in sorted({(s.guidance, s.strength) for s in grid.settings("diffedit")}):
        setting = Setting("diffedit", guidance, strength)
        settings = EditSettings(
            guidance=guidance, strength=strength, steps=grid.steps, seed=seed, sample_batch=batch
        )
        started = time.perf_counter()
        samples = diffedit_samples(editor, base, edits, replace(settings, localize="auto"))
        seconds = (time.perf_counter() - started) / len(edits)
        for edit, sample in zip(edits, samples, strict=True):
            yield from _interpolated(edit, setting, sample.image, base_pixels, grid, seconds)


def diffedit_samples(editor, working: Image.Image, edits: list[Edit], settings: EditSettings) -> list:
    """DiffEdit's recipe on the untuned model with UniTune's localisation operator: the mask from the
    target caption against the source caption (the base scene's), then the target caption sampled from
    the base noised to `strength` (img2img's start; DiffEdit itself starts from a DDIM inversion) with the
    base kept outside the mask after every step. `working`: the base at the model's working size."""
    from ..progress import RunControl
    from ..sample_batches import SampleRequest, sample_requests
    from ..shapes.world import caption

    editor.restore_base()  # the untuned model, as the other baselines
    source = caption(edits[0].base)
    requests = [SampleRequest(e.caption, settings, settings.seed, e.name, e.caption, source) for e in edits]
    return sample_requests(editor.sampling_model(), requests, working, run=RunControl(None, None))


def run_unitune(
    editor,
    family: str,
    edits: list[Edit],
    base: Image.Image,
    grid: Grid,
    seed: int,
    costs: list[TuneCost],
    tune_steps: int | None = None,
    tune_batch: int = 4,
    on_binding: Callable[[dict], None] | None = None,
    on_signals: Callable[[dict], None] | None = None,
) -> Iterator[Output]:
    """Tune once on the base image (timed; appended to `costs`), measure the binding (R alone, handed to
    `on_binding`), edit on the whole grid, then hand the automatic dial's signals of every raw sample
    (unitune.auto, before interpolation) to `on_signals`."""
    # the model's recommended tune (its unitune.json: steps, learning rates, LoRA targets); steps None:
    # the model's step count for the method
    tune = replace(editor.default_tune_settings(), method=family, steps=tune_steps, batch_size=tune_batch)
    started = time.perf_counter()
    tuned = editor.tune(base, tune)
    costs.append(
        TuneCost(
            family,
            edits[0].name.rsplit("-", 1)[0],
            time.perf_counter() - started,
            _last(tuned),
            tuned.settings,
        )
    )
    defaults = editor.default_edit_settings()  # the model's (its unitune.json), as `edit` uses
    if on_binding is not None:  # the tune alone: R sampled with the tuned weights at every step
        for guidance in grid.guidances:
            edit = EditSettings(
                guidance=guidance,
                steps=grid.steps,
                seed=seed,
                untuned_tail=0.0,
                decoder_gate=defaults.decoder_gate,
            )
            for row in measure_binding(editor, base, tune, edit):
                on_binding({"family": family, "guidance": guidance, **row})
            if tuned.settings.get("decoder_steps"):  # the same samples decoded by the model's decoder
                with editor.weights.model_decoder():
                    for row in measure_binding(editor, base, tune, edit):
                        on_binding({"family": family, "guidance": guidance, "decoder": "model", **row})
    base_pixels = to_tensor(editor.prepare_image(base))
    cells = [
        Setting(family, g, s) for g, s in sorted({(s.guidance, s.strength) for s in grid.settings(family)})
    ]
    if defaults.auto_model_guidance > 0:  # the dial's extra candidate, at each guidance the dial may run at
        cells += [
            Setting(family, g, 1.0, model_guidance=defaults.auto_model_guidance) for g in grid.guidances
        ]
    raw: dict[str, list[tuple[Setting, Image.Image]]] = {e.name: [] for e in edits}
    for cell in cells:
        settings = EditSettings(
            guidance=cell.guidance,
            strength=cell.strength,
            steps=grid.steps,
            seed=seed,
            untuned_tail=defaults.untuned_tail,
            model_guidance=cell.model_guidance or defaults.model_guidance,
            sample_batch=defaults.sample_batch,
            decoder_gate=defaults.decoder_gate,
            inversion=defaults.inversion,
            inversion_guidance=defaults.inversion_guidance,
        )
        started = time.perf_counter()
        results = editor.edit(base, [e.prompt for e in edits], settings, tune)
        seconds = (time.perf_counter() - started) / len(edits)
        for edit, result in zip(edits, results, strict=True):
            raw[edit.name].append((cell, result.image))
            yield from _interpolated(edit, cell, result.image, base_pixels, grid, seconds)
    if on_signals is not None:
        _auto_signals(editor, tuned, edits, raw, family, on_signals)


def run_localized(
    editor,
    edits: list[Edit],
    base: Image.Image,
    grid: Grid,
    seed: int,
    tune_steps: int | None = None,
    tune_batch: int = 4,
) -> Iterator[Output]:
    """The localized family: the model's default edit (the full tune, which `run_unitune` has cached;
    the grid's sampler steps) without a mask, with the automatic mask and with each edit's true changed
    region as the user's mask, every edit of the scene in one call each, each call timed as a first edit
    (it loads the tune and inverts the image); on the test split, the automatic mask again at the seed +
    each of SEED_OFFSETS (records with `seed_offset`: how much a seed moves its success)."""
    from .metrics import true_region

    tune = replace(
        editor.default_tune_settings(), method=LOCALIZED_TUNE, steps=tune_steps, batch_size=tune_batch
    )
    defaults = replace(editor.default_edit_settings(), steps=grid.steps, seed=seed, num_images=1, auto=False)
    truths = [Image.fromarray(true_region(e).astype(np.uint8) * 255) for e in edits]
    ways = [("none", "off", None, 0), ("auto", "auto", None, 0), ("user", "off", truths, 0)]  # MASKS
    if edits[0].split == "test":  # the automatic mask's spread over seeds: maps and samples drawn again
        ways += [("auto", "auto", None, offset) for offset in SEED_OFFSETS]
    for mask, localize, masks, offset in ways:
        settings = replace(defaults, localize=localize, seed=seed + offset)
        setting = Setting(
            "localized",
            settings.guidance,
            settings.strength,
            settings.interpolation,
            mask=mask,
            seed_offset=offset,
        )
        editor.weights.restore_base()  # each way timed alike: it loads the tune and inverts the image
        editor.inversions.clear()
        started = time.perf_counter()
        results = editor.edit(base, [e.prompt for e in edits], settings, tune, mask=masks)
        seconds = (time.perf_counter() - started) / len(edits)
        for edit, result in zip(edits, results, strict=True):
            yield Output(edit, setting, to_array(result.image), seconds)


def _auto_signals(editor, tuned, edits: list[Edit], raw: dict, family: str, on_signals) -> None:
    """unitune.auto's signals for each raw sample of an edit that the dial could pick (its strengths, its
    extra candidate), under that edit's tune."""
    rare = tuned.settings["rare_prompt"]
    with editor.applied(tuned):
        for edit in edits:
            candidates = [
                (cell, image)
                for cell, image in raw[edit.name]
                if cell.strength in AUTO_STRENGTHS or cell.model_guidance
            ]
            images = [image for _, image in candidates]
            signals = score_candidates(
                editor.pipe, images, rare, edit.prompt, editor.runtime, editor.weights, tuned=True
            )
            for (cell, _), signal in zip(candidates, signals, strict=True):
                row = {
                    "family": family,
                    "edit": edit.name,
                    "guidance": cell.guidance,
                    "strength": cell.strength,
                }
                row["model_guidance"] = cell.model_guidance
                on_signals({**row, **signal.to_dict()})


def run_scene(
    editor,
    edits: list[Edit],
    base: Image.Image,
    grid: Grid,
    seed: int,
    costs: list[TuneCost],
    tune_steps: int | None = None,
    tune_batch: int = 4,
    families: tuple[str, ...] | None = None,
    on_output: Callable[[Output], None] | None = None,
    on_binding: Callable[[dict], None] | None = None,
    on_signals: Callable[[dict], None] | None = None,
) -> list[Output]:
    """Every family's outputs for the edits of one base scene."""
    outputs = []
    for family in families or grid.families:
        if family == "prompt":
            produced = run_prompt_only(editor, edits, base, grid, seed)
        elif family in ("sdedit", "sdedit-words"):
            produced = run_sdedit(editor, edits, base, grid, seed, family)
        elif family == "diffedit":
            produced = run_diffedit(editor, edits, base, grid, seed)
        elif family == "localized":
            produced = run_localized(editor, edits, base, grid, seed, tune_steps, tune_batch)
        else:
            produced = run_unitune(
                editor, family, edits, base, grid, seed, costs, tune_steps, tune_batch, on_binding, on_signals
            )
        for output in produced:
            outputs.append(output)
            if on_output is not None:
                on_output(output)
    return outputs


def _interpolated(edit, setting: Setting, image, base_pixels, grid: Grid, seconds) -> Iterator[Output]:
    """The sample at every interpolation weight of the grid (weight 0: the sample itself)."""
    pixels = to_tensor(image)
    for weight in grid.interpolations:
        mixed = interpolate_details(pixels, base_pixels, weight)
        out = Image.fromarray((mixed[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        yield Output(edit, replace(setting, interpolation=weight), to_array(out), seconds)


def _last(tuned) -> float:
    return float(tuned.losses[-1]) if tuned.losses else float("nan")
