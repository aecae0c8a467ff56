"""What the web UI does, without gradio: per-browser-session state and the tune / edit / sweep actions.

Every action calls the public API (`unitune.Editor`) and nothing else; `app.py` wires these methods to
gradio components and turns `UnituneError` into a visible message. Files the UI shows or offers for
download are written with `unitune.outputs`, so each PNG carries its settings in the `unitune` chunk.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..api import Editor, TuneResult
from ..auto import AUTO_STRENGTHS
from ..errors import UnituneError
from ..images import image_hash
from ..outputs import mask_path, save_png, save_results, slug
from ..progress import Progress
from ..settings import EditSettings, TuneSettings
from ..sweep import parse_floats

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
HISTORY_COLUMNS = ["#", "prompt", "guidance", "strength", "interpolation", "steps", "seed", "tune"]
MAX_SEED = 2**31 - 1

# gradio's gr.Progress: called with ((step, total), desc=...)
BarFn = Callable[..., None]


def example_images() -> list[Path]:
    """The bundled shapes examples, README demo input (shapes.png) first (not the demo's mask)."""
    images = [p for p in EXAMPLES_DIR.glob("*.png") if not p.stem.endswith("-mask")]
    return sorted(images, key=lambda p: (p.name != "shapes.png", p.name))


@dataclass
class SessionState:
    """One browser session: the prepared base image, its tune and the edits made so far."""

    base: str | None = None  # the base image at the working size, as a PNG in the session folder
    name: str = ""  # what the user uploaded or picked, for labels and manifests
    source: str | None = None  # that file, to fit again when the working size changes
    size: int | None = None  # this session's working size (about size x size pixels); None: the model's
    tune_key: str | None = None
    last: list[dict] = field(default_factory=list)  # the latest edit's results: {"file", "settings"}
    history: list[dict] = field(default_factory=list)  # every edit of this session, oldest first
    runs: int = 0


def working_size(value: float | int | None) -> int | None:
    """The UI's working-size box as `Sizing.size`: 0 or empty means the model's (None)."""
    return int(value) if value else None


def painted_mask(editor_value) -> Image.Image | None:
    """The brush strokes of gradio's ImageEditor (its value: background, layers, composite; numpy RGBA)
    as a mask image (white = painted, may change); None when nothing is painted."""
    layers = [np.asarray(layer) for layer in (editor_value or {}).get("layers") or [] if layer is not None]
    alphas = [layer[..., 3] for layer in layers if layer.ndim == 3 and layer.shape[-1] == 4]
    if not alphas or not any(alpha.any() for alpha in alphas):
        return None
    painted = np.maximum.reduce(alphas)
    return Image.fromarray(np.where(painted > 0, 255, 0).astype(np.uint8), mode="L")


def mask_overlay(image_path: str | Path) -> np.ndarray | None:
    """A localised edit with the part it had to keep dimmed (from its NAME-mask.png beside it), RGB
    uint8; None when the edit was not localised."""
    image_path = Path(image_path)
    mask_file = mask_path(image_path)
    if not mask_file.exists():
        return None
    with Image.open(image_path) as image, Image.open(mask_file) as mask:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        may_change = np.asarray(mask.convert("L").resize(image.size), dtype=np.float32)[..., None] / 255
    return (pixels * (0.3 + 0.7 * may_change)).round().astype(np.uint8)


def parse_prompts(text: str) -> list[str]:
    """One prompt per non-empty line."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise UnituneError("write at least one edit prompt (one per line)")
    return prompts


class ProgressBar:
    """Turns the API's step reports into one bar per tune or image, with the loss while tuning."""

    def __init__(self, bar: BarFn | None, images: int = 1):
        self.bar, self.images, self.image = bar, images, 0

    def __call__(self, event: Progress) -> None:
        if self.bar is None:
            return
        if event.stage in ("tune", "decoder"):
            loss = f" · loss {event.loss:.4f}" if event.loss is not None else ""
            what = "Tuning on the image" if event.stage == "tune" else "Fitting the decoder to the image"
            desc = f"{what}{loss}"
        else:
            self.image += event.step == 1
            desc = f"Editing {self.image}/{self.images}: {event.label}"
        self.bar((event.step, event.total), desc=desc)


class Studio:
    """The UI's actions on one loaded Editor (the model is loaded once and shared by all sessions)."""

    def __init__(self, editor: Editor, work_dir: str | Path | None = None):
        self.editor = editor
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="unitune-ui-"))
        self._stops: dict[str, threading.Event] = {}

    def tune_steps_for(self, tune: TuneSettings, method: str) -> int:
        """The "tune steps" box's value for `method`: the count given at launch, else the model's for
        that method (its `unitune.json` `tune_steps`), else the built-in one."""
        return self.editor.resolve_tune(replace(tune, method=method)).steps

    # --- interrupting ----------------------------------------------------------------------------

    def stop_event(self, session: str) -> threading.Event:
        return self._stops.setdefault(session, threading.Event())

    def stop(self, session: str) -> None:
        """Ask this session's running tune, edit or sweep to stop after its current step."""
        self.stop_event(session).set()

    def _start(self, session: str) -> threading.Event:
        event = self.stop_event(session)
        event.clear()
        return event

    def _folder(self, session: str, *parts: str) -> Path:
        folder = self.work_dir.joinpath(slug(session, 64), *parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # --- 1. the base image -----------------------------------------------------------------------

    def load(
        self, state: SessionState, path: str | Path, session: str, size: int | None = None
    ) -> SessionState:
        """Read an uploaded or example image, fit it to the working size (`size`: about size x size pixels
        at its aspect; None or 0: the model's native size, or what `unitune ui --size` said) and keep it as
        this session's base."""
        path, size = Path(path), working_size(size)
        try:
            base = self._editor(size).prepare_image(path)
        except UnituneError as error:  # name the file as the user knows it, not gradio's temp path
            raise UnituneError(str(error).replace(str(path), path.name)) from None
        file = self._folder(session) / f"base-{image_hash(base)[:12]}.png"
        base.save(file)
        return SessionState(
            base=str(file),
            name=path.name,
            source=str(path),
            size=size,
            history=state.history,
            runs=state.runs,
        )

    def resize(self, state: SessionState, size: int | None, session: str) -> SessionState:
        """Fit this session's image again at another working size (its tune is then another one)."""
        if state.source is None:
            return replace(state, size=working_size(size))
        return self.load(state, state.source, session, size)

    def tune_status(self, state: SessionState, tune: TuneSettings) -> str:
        """Whether the current image already has a tune with these settings."""
        if state.base is None:
            return "Upload an image or pick an example."
        key = self._editor(state.size).tune_key(state.base, tune)
        if self.editor.cache.has(key):
            return (
                f"**Tuned** (cached tune `{key[:12]}` for this image and settings): edits start right away."
            )
        return (
            f"**Not tuned yet** for these settings ({tune.method}, {tune.steps} steps): "
            "press Tune, or Edit tunes first. It happens once per image."
        )

    # --- 2. tune ---------------------------------------------------------------------------------

    def tune(
        self, state: SessionState, tune: TuneSettings, session: str, bar: BarFn | None = None
    ) -> tuple[SessionState, str]:
        base = self._base(state)
        started = time.monotonic()
        editor = self._editor(state.size)
        result = editor.tune(base, tune, progress=ProgressBar(bar), should_stop=self._start(session))
        state.tune_key = result.key
        return state, self._tune_message(result, time.monotonic() - started)

    def _tune_message(self, result: TuneResult, seconds: float) -> str:
        key = result.key[:12]
        if not result.trained:
            return f"**Tuned** · reused the cached tune `{key}` for this image (no tuning needed)."
        loss = f", final loss {result.losses[-1]:.4f}" if result.losses else ""
        settings = result.settings
        return (
            f"**Tuned** in {seconds:.1f} s ({settings['method']}, {settings['steps']} steps{loss}) · "
            f"cached as `{key}`; every edit of this image reuses it."
        )

    # --- 3. edit ---------------------------------------------------------------------------------

    def edit(
        self,
        state: SessionState,
        prompts_text: str,
        edit: EditSettings,
        tune: TuneSettings,
        session: str,
        bar: BarFn | None = None,
        mask=None,
    ) -> tuple[SessionState, list[Path], str]:
        """Edit the base image once per prompt line and seed; returns the saved PNGs and the tune message.
        `mask`: a painted mask (`painted_mask`), else None (the edit's own `localize` setting decides)."""
        base, prompts = self._base(state), parse_prompts(prompts_text)
        samples = len(prompts) * edit.num_images * (len(AUTO_STRENGTHS) if edit.auto else 1)
        stop, progress = self._start(session), ProgressBar(bar, samples)
        started = time.monotonic()
        editor = self._editor(state.size)
        tuned = editor.tune(base, tune, progress=progress, should_stop=stop)
        message = self._tune_message(tuned, time.monotonic() - started)
        results = editor.edit(base, prompts, edit, tune, progress=progress, should_stop=stop, mask=mask)
        state.runs += 1
        folder = self._folder(session, f"edit-{state.runs:03d}")
        paths = save_results(results, folder, "edit", {"image": state.name})
        state.tune_key = tuned.key
        state.last = [{"file": str(p), "settings": r.settings} for p, r in zip(paths, results, strict=True)]
        for entry in state.last:
            state.history.append({**entry, "run": state.runs})
        return state, paths, message

    # --- 4. sweep --------------------------------------------------------------------------------

    def sweep(
        self,
        state: SessionState,
        prompt: str,
        guidances_text: str,
        strengths_text: str,
        edit: EditSettings,
        tune: TuneSettings,
        session: str,
        bar: BarFn | None = None,
    ) -> tuple[SessionState, Path, list[Path]]:
        """Edit on the guidance x strength grid; returns the labelled contact sheet and all PNGs."""
        base, prompt = self._base(state), parse_prompts(prompt)[0]
        guidances = parse_floats(guidances_text, "guidances")
        strengths = parse_floats(strengths_text, "strengths")
        for g in guidances:  # check every cell before any work
            for s in strengths:
                EditSettings(**{**edit.to_dict(), "guidance": g, "strength": s})
        progress = ProgressBar(bar, len(guidances) * len(strengths))
        result = self._editor(state.size).sweep(
            base,
            prompt,
            guidances,
            strengths,
            edit,
            tune,
            progress=progress,
            should_stop=self._start(session),
        )
        state.runs += 1
        folder = self._folder(session, f"sweep-{state.runs:03d}")
        extra = {"image": state.name, "guidances": guidances, "strengths": strengths, "sheet": "sheet.png"}
        paths = save_results(result.results, folder, "sweep", extra)
        sheet = folder / "sheet.png"
        save_png(result.sheet, sheet, extra)
        state.tune_key = result.results[0].settings["tune_key"]
        return state, sheet, [sheet, *paths, folder / "manifest.json"]

    # --- helpers ---------------------------------------------------------------------------------

    def _editor(self, size: int | None) -> Editor:
        """The shared editor, at this session's working size when it chose one."""
        return self.editor if size is None else self.editor.resized(size=size)

    def _base(self, state: SessionState) -> str:
        if state.base is None:
            raise UnituneError("upload an image or pick an example first")
        return state.base


def pick_seed(seed: float | int | None, randomize: bool) -> int:
    if randomize or seed is None:
        return random.randrange(MAX_SEED)
    return int(seed)


def history_rows(history: list[dict]) -> list[list]:
    """The history table, newest first."""
    rows = []
    for entry in reversed(history):
        s = entry["settings"]
        rows.append(
            [
                entry["run"],
                s["prompt"],
                s["guidance"],
                s["strength"],
                s["interpolation"],
                s["steps"],
                s["seed"],
                s["tune_key"][:12],
            ]
        )
    return rows
