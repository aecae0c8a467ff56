"""The gradio Blocks: the controls (`build_controls`) and their wiring (`wire`). The actions live in
`session.py` (no diffusion here)."""

from __future__ import annotations

import functools
import inspect
import os
import socket
from dataclasses import dataclass, fields, replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home; must precede the import

import gradio as gr  # noqa: E402

from ..api import Editor  # noqa: E402
from ..errors import Cancelled, UnituneError  # noqa: E402
from ..outputs import mask_path  # noqa: E402
from ..settings import MAX_BATCH_SIZE, MAX_DECODER_STEPS, METHODS, EditSettings, TuneSettings  # noqa: E402
from .session import (  # noqa: E402
    EXAMPLES_DIR,
    HISTORY_COLUMNS,
    MAX_SEED,
    SessionState,
    Studio,
    example_images,
    history_rows,
    mask_overlay,
    painted_mask,
    pick_seed,
    working_size,
)

# the shapes model works at 64x64: show its pixels, not a blur
CSS = """
.pixelated img { image-rendering: pixelated; }
#base img, #sheet img { width: 100%; height: 100%; object-fit: contain; }
#tune-status p { margin: 0; }
#examples .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
#examples .gallery-item { width: auto !important; height: auto !important; aspect-ratio: 1; }
"""
DEFAULT_MAX_FILE_SIZE = "20mb"
EXAMPLE_PROMPTS = [
    ["on a green background"],
    ["a yellow circle"],
    ["a small red circle"],
    ["on a white background\na purple circle"],
]


def friendly(fn):
    """Show UnituneError (bad file, bad setting) as a message in the page, not a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Cancelled:
            raise gr.Error("Stopped on request; nothing was saved.", title="Stopped") from None
        except UnituneError as error:
            raise gr.Error(str(error), title="unitune", print_exception=False) from None

    return wrapper


@dataclass
class TuneControls:
    """The tune settings' controls, one group: handlers read them together into a `TuneSettings`."""

    method: gr.Radio
    steps: gr.Number
    batch_size: gr.Number
    seed: gr.Number
    decoder_steps: gr.Number

    @property
    def components(self) -> list:
        return [getattr(self, field.name) for field in fields(self)]

    def read(self, values: dict, start: TuneSettings) -> TuneSettings:
        """The tune settings these controls show in `values` (a handler's inputs by component), over
        `start`'s other fields."""
        numbers = {name: int(values[getattr(self, name)]) for name in ("steps", "batch_size", "seed")}
        return replace(
            start, method=values[self.method], decoder_steps=int(values[self.decoder_steps]), **numbers
        )


@dataclass
class Controls:
    """Every component of the page, by name: what the handlers read and write."""

    state: gr.State
    # the base image and its tune (left column)
    upload: gr.File
    picker: gr.Gallery
    base: gr.Image
    work_size: gr.Number
    tuning: TuneControls
    tune_status: gr.Markdown
    tune_btn: gr.Button
    stop_btn: gr.Button
    # the Edit tab
    prompts: gr.Textbox
    negative: gr.Textbox
    guidance: gr.Slider
    strength: gr.Slider
    interpolation: gr.Slider
    untuned_tail: gr.Slider
    model_guidance: gr.Slider
    decoder_gate: gr.Slider
    steps: gr.Slider
    num_images: gr.Slider
    seed: gr.Number
    randomize: gr.Checkbox
    auto: gr.Checkbox
    inversion: gr.Checkbox
    localize: gr.Radio
    mask_regions: gr.Checkbox
    mask_ratio: gr.Slider
    mask_dilation: gr.Slider
    mask_composite: gr.Checkbox
    mask_guidance: gr.Slider
    auto_mask_guidance: gr.Slider
    mask_grow: gr.Slider
    brush: gr.ImageEditor
    edit_btn: gr.Button
    compare: gr.Component  # an ImageSlider where gradio has one, else a two-image Gallery
    results: gr.Gallery
    settings_view: gr.JSON
    masks: gr.Gallery
    downloads: gr.File
    # the Sweep tab
    sweep_prompt: gr.Textbox
    guidances: gr.Textbox
    strengths: gr.Textbox
    sweep_btn: gr.Button
    sheet: gr.Image
    sweep_files: gr.File
    # the History tab
    history_table: gr.Dataframe
    history_gallery: gr.Gallery
    history_settings: gr.JSON


def build_app(
    studio: Studio, tune_settings: TuneSettings | None = None, edit_settings: EditSettings | None = None
):
    """The Blocks for one Studio; `tune_settings` and `edit_settings` are the controls' starting values."""
    tune_settings, edit_settings = tune_settings or TuneSettings(), edit_settings or EditSettings()
    examples = [str(p) for p in example_images()]
    shown = replace(tune_settings, steps=studio.tune_steps_for(tune_settings, tune_settings.method))
    with gr.Blocks(title="unitune", **_blocks_style()) as demo:
        controls = build_controls(examples, shown, edit_settings)
        wire(controls, studio, examples, tune_settings, edit_settings)
    return demo


def build_controls(examples: list[str], tune: TuneSettings, edit: EditSettings) -> Controls:
    """The page's components, laid out, with `tune` and `edit` as their starting values."""
    state = gr.State(SessionState())
    gr.Markdown(
        "## unitune: tune once on your image, then edit it with words\n"
        "Upload an image (or pick an example), tune the model on it once, then write edits."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            upload = gr.File(
                label="Image", file_types=["image"], type="filepath", height=130, elem_id="upload"
            )
            picker = gr.Gallery(
                examples,
                label="…or pick an example",
                columns=4,
                rows=1,
                height=130,
                object_fit="contain",
                allow_preview=False,
                elem_id="examples",
                elem_classes="pixelated",
            )
            base = gr.Image(
                label="Base image (as the model sees it)",
                type="filepath",
                interactive=False,
                height=180,
                elem_id="base",
                elem_classes="pixelated",
            )
            work_size = gr.Number(
                0,
                label="working size: about N x N pixels at the image's aspect (0: the model's)",
                precision=0,
                minimum=0,
                elem_id="work-size",
            )
            with gr.Accordion("Tune settings", open=False):
                method = gr.Radio(list(METHODS), value=tune.method, label="method")
                tune_steps = gr.Number(
                    tune.steps, label="tune steps", precision=0, minimum=0, elem_id="tune-steps"
                )
                batch_size = gr.Number(
                    tune.batch_size, label="batch size", precision=0, minimum=1, maximum=MAX_BATCH_SIZE
                )
                tune_seed = gr.Number(tune.seed, label="tune seed", precision=0)
                decoder_steps = gr.Number(
                    tune.decoder_steps,
                    label="decoder fit steps (0: off)",
                    precision=0,
                    minimum=0,
                    maximum=MAX_DECODER_STEPS,
                    elem_id="decoder-steps",
                )
                tuning = TuneControls(method, tune_steps, batch_size, tune_seed, decoder_steps)
            tune_status = gr.Markdown("Upload an image or pick an example.", elem_id="tune-status")
            with gr.Row():
                tune_btn = gr.Button("Tune", variant="primary", elem_id="tune-btn")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")

        with gr.Column(scale=2):
            with gr.Tabs():
                with gr.Tab("Edit", id="edit"):
                    prompts = gr.Textbox(
                        label="Edit prompts (one per line)",
                        lines=3,
                        placeholder="on a green background\na yellow circle",
                        elem_id="prompts",
                    )
                    gr.Examples(EXAMPLE_PROMPTS, inputs=prompts, label="Example prompts (shapes world)")
                    negative = gr.Textbox(
                        edit.negative_prompt,
                        label="Negative prompt (optional; guided against)",
                        elem_id="negative",
                    )
                    with gr.Row():
                        guidance = gr.Slider(
                            0, max(50, edit.guidance), edit.guidance, step=0.5, label="guidance"
                        )
                        strength = gr.Slider(0.05, 1, edit.strength, step=0.01, label="strength")
                        interpolation = gr.Slider(0, 1, edit.interpolation, step=0.05, label="interpolation")
                        untuned_tail = gr.Slider(
                            0,
                            0.95,
                            edit.untuned_tail,
                            step=0.05,
                            label="untuned tail",
                            elem_id="untuned-tail",
                        )
                        model_guidance = gr.Slider(
                            0,
                            max(4, edit.model_guidance),
                            edit.model_guidance,
                            step=0.25,
                            label="model guidance",
                            elem_id="model-guidance",
                        )
                        decoder_gate = gr.Slider(
                            0,
                            max(1, edit.decoder_gate),
                            edit.decoder_gate,
                            step=0.05,
                            label="decoder gate (with a decoder fit)",
                            elem_id="decoder-gate",
                        )
                    with gr.Row():
                        steps = gr.Slider(1, max(150, edit.steps), edit.steps, step=1, label="sampling steps")
                        num_images = gr.Slider(
                            1, max(8, edit.num_images), edit.num_images, step=1, label="images per prompt"
                        )
                        seed = gr.Number(edit.seed, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
                        randomize = gr.Checkbox(False, label="random seed")
                        auto = gr.Checkbox(
                            edit.auto, label="auto dial (picks a candidate; ~3.5x the time)", elem_id="auto"
                        )
                        inversion = gr.Checkbox(
                            edit.inversion,
                            label="from the image's inversion",
                            elem_id="inversion",
                        )
                    masked_guidance = edit.guidance if edit.mask_guidance is None else edit.mask_guidance
                    auto_masked_guidance = (
                        masked_guidance if edit.auto_mask_guidance is None else edit.auto_mask_guidance
                    )
                    with gr.Accordion("Localise: change only part of the image", open=False):
                        with gr.Row():
                            localize = gr.Radio(
                                ["off", "auto"],
                                value=edit.localize,
                                label="automatic mask (from the tune: where 'R edit' and 'R' disagree)",
                                elem_id="localize",
                            )
                            mask_regions = gr.Checkbox(
                                edit.mask_regions,
                                label="snap it to the image's regions (the background, or whole objects)",
                                elem_id="mask-regions",
                            )
                            mask_ratio = gr.Slider(
                                0.5, 6, edit.mask_ratio, step=0.25, label="mask ratio (lower: larger mask)"
                            )
                            mask_dilation = gr.Slider(
                                0, 4, edit.mask_dilation, step=1, label="mask dilation (latent cells)"
                            )
                            mask_composite = gr.Checkbox(
                                edit.mask_composite,
                                label="exact base pixels outside the mask",
                                elem_id="mask-composite",
                            )
                            mask_guidance = _guidance_slider(
                                masked_guidance, "guidance inside a painted mask", "mask-guidance"
                            )
                            auto_mask_guidance = _guidance_slider(
                                auto_masked_guidance,
                                "guidance inside the automatic mask",
                                "auto-mask-guidance",
                            )
                            mask_grow = gr.Slider(
                                0,
                                max(16, edit.mask_grow),
                                edit.mask_grow,
                                step=1,
                                label="grow a painted mask (pixels)",
                                elem_id="mask-grow",
                            )
                        brush = gr.ImageEditor(
                            label="Or paint where the edit may change (replaces the automatic mask)",
                            type="numpy",
                            image_mode="RGBA",
                            sources=(),
                            transforms=(),
                            layers=False,
                            brush=gr.Brush(colors=["#00e5ff"], color_mode="fixed", default_size=6),
                            format="png",
                            height=320,
                            elem_id="brush",
                            elem_classes="pixelated",
                        )
                    edit_btn = gr.Button("Edit", variant="primary", elem_id="edit-btn")
                    with gr.Row():
                        if _has_slider():
                            compare = gr.ImageSlider(
                                label="Before / after",
                                type="filepath",
                                height=320,
                                elem_id="compare",
                                elem_classes="pixelated",
                            )
                        else:
                            compare = gr.Gallery(
                                label="Before / after", columns=2, elem_id="compare", elem_classes="pixelated"
                            )
                        results = _gallery("Edits (select one to compare)", "results", height=320)
                    settings_view = gr.JSON(label="Settings of the selected edit", elem_id="settings")
                    masks = _gallery(
                        "Masks of localised edits (the part each had to keep, dimmed)", "masks", height=200
                    )
                    downloads = gr.File(
                        label="Download (PNGs carry their settings)",
                        file_count="multiple",
                        interactive=False,
                        elem_id="downloads",
                    )
                with gr.Tab("Sweep", id="sweep"):
                    gr.Markdown(
                        "One edit per guidance x strength pair (other dials from the Edit tab; with "
                        "auto dial on, its pick is framed in red)."
                    )
                    sweep_prompt = gr.Textbox(label="Edit prompt", elem_id="sweep-prompt")
                    with gr.Row():
                        guidances = gr.Textbox("5, 10, 20", label="guidances", elem_id="guidances")
                        strengths = gr.Textbox("0.7, 0.85, 1.0", label="strengths", elem_id="strengths")
                    sweep_btn = gr.Button("Sweep", variant="primary", elem_id="sweep-btn")
                    sheet = gr.Image(
                        label="Columns: guidance, rows: strength",
                        type="filepath",
                        height=440,
                        interactive=False,
                        elem_id="sheet",
                        elem_classes="pixelated",
                    )
                    sweep_files = gr.File(
                        label="Download", file_count="multiple", interactive=False, elem_id="sweep-files"
                    )
                with gr.Tab("History", id="history"):
                    history_table = gr.Dataframe(
                        headers=HISTORY_COLUMNS, interactive=False, elem_id="history"
                    )
                    history_gallery = gr.Gallery(
                        label="This session's edits, newest first",
                        columns=6,
                        elem_id="history-gallery",
                        elem_classes="pixelated",
                    )
                    history_settings = gr.JSON(label="Settings")
    # every component above, by its variable's name (one left out of Controls fails here, loudly)
    return Controls(**{name: value for name, value in locals().items() if name in _CONTROL_NAMES})


_CONTROL_NAMES = {field.name for field in fields(Controls)}


def wire(c: Controls, studio: Studio, examples: list[str], tune: TuneSettings, edit: EditSettings) -> None:
    """The handlers: what each button, upload and selection does to the session and the page. Tune,
    edit and sweep share the model, so they run one at a time; everything else at once. A handler with
    many inputs takes them as one dict by component (gradio's set of inputs)."""
    has_slider = _has_slider()
    tuning = c.tuning.components

    # --- the base image: uploaded or picked -------------------------------------------------------

    def loaded(state: SessionState, values: dict):
        status = studio.tune_status(state, c.tuning.read(values, tune))
        return state, state.base, status, None, [], None, None, _canvas(state.base)  # old edits go

    @friendly
    def load(values: dict, request: gr.Request):
        state, path = values[c.state], values[c.upload]
        if path:
            state = studio.load(state, path, request.session_hash, values[c.work_size])
        return loaded(state, values)

    @friendly
    def pick(values: dict, evt: gr.SelectData, request: gr.Request):
        state = studio.load(values[c.state], examples[evt.index], request.session_hash, values[c.work_size])
        return loaded(state, values)

    @friendly
    def resize(values: dict, request: gr.Request):
        state, size = values[c.state], values[c.work_size]
        if working_size(size) == state.size:  # Enter, then leaving the box: once is enough
            return (gr.skip(),) * len(load_outputs)
        return loaded(studio.resize(state, size, request.session_hash), values)

    load_outputs = [c.state, c.base, c.tune_status, c.compare, c.results, c.settings_view, c.downloads]
    load_outputs += [c.brush]
    sized = {c.state, c.work_size, *tuning}
    c.upload.upload(load, {c.upload, *sized}, load_outputs, concurrency_limit=None)
    c.picker.select(pick, sized, load_outputs, concurrency_limit=None)
    c.work_size.submit(resize, sized, load_outputs, concurrency_limit=None)
    c.work_size.blur(resize, sized, load_outputs, concurrency_limit=None)

    @friendly
    def status(values: dict):
        return studio.tune_status(values[c.state], c.tuning.read(values, tune))

    for control in tuning:
        control.change(status, {c.state, *tuning}, c.tune_status, concurrency_limit=None)

    def method_steps(method: str) -> int:
        return studio.tune_steps_for(tune, method)

    c.tuning.method.change(method_steps, c.tuning.method, c.tuning.steps, concurrency_limit=None)

    # --- tune, edit, sweep: one at a time on the shared model ----------------------------------------

    busy = {"concurrency_id": "model", "concurrency_limit": 1}

    @friendly
    def run_tune(values: dict, request: gr.Request, progress=gr.Progress()):
        settings = c.tuning.read(values, tune)
        return studio.tune(values[c.state], settings, request.session_hash, progress)

    c.tune_btn.click(run_tune, {c.state, *tuning}, [c.state, c.tune_status], **busy)

    def common_dials(values: dict, seed: int) -> EditSettings:
        """The dials the Edit and Sweep tabs share, over the starting settings."""
        return replace(
            edit,
            interpolation=values[c.interpolation],
            untuned_tail=values[c.untuned_tail],
            model_guidance=values[c.model_guidance],
            decoder_gate=values[c.decoder_gate],
            steps=int(values[c.steps]),
            seed=seed,
            auto=bool(values[c.auto]),
            inversion=bool(values[c.inversion]),
        )

    @friendly
    def run_edit(values: dict, request: gr.Request, progress=gr.Progress()):
        used_seed = pick_seed(values[c.seed], values[c.randomize])
        dials = replace(
            common_dials(values, used_seed),
            guidance=values[c.guidance],
            strength=values[c.strength],
            num_images=int(values[c.num_images]),
            negative_prompt=(values[c.negative] or "").strip(),
            localize=values[c.localize],
            mask_regions=bool(values[c.mask_regions]),
            mask_ratio=float(values[c.mask_ratio]),
            mask_dilation=int(values[c.mask_dilation]),
            mask_composite=bool(values[c.mask_composite]),
            mask_guidance=float(values[c.mask_guidance]),
            auto_mask_guidance=float(values[c.auto_mask_guidance]),
            mask_grow=int(values[c.mask_grow]),
        )
        state, paths, message = studio.edit(
            values[c.state],
            values[c.prompts],
            dials,
            c.tuning.read(values, tune),
            request.session_hash,
            progress,
            mask=painted_mask(values[c.brush]),
        )
        gallery = [(str(p), _caption(e["settings"])) for p, e in zip(paths, state.last, strict=True)]
        files = [str(p) for p in paths] + [str(Path(paths[0]).parent / "manifest.json")]
        before_after = _pair(state.base, paths[0], has_slider)
        first = state.last[0]["settings"]
        files += [str(mask_path(p)) for p in paths if mask_path(p).exists()]
        overlays = [
            (o, _caption(e["settings"]))
            for o, e in zip(map(mask_overlay, paths), state.last, strict=True)
            if o is not None
        ]
        history = _history(state)
        return state, before_after, gallery, first, files, message, *history, used_seed, overlays

    shared_dials = {c.interpolation, c.untuned_tail, c.model_guidance, c.decoder_gate, c.steps, c.seed}
    shared_dials |= {c.randomize, c.auto, c.inversion}
    edit_inputs = {c.state, c.prompts, c.negative, c.guidance, c.strength, c.num_images, *shared_dials}
    edit_inputs |= {c.localize, c.mask_ratio, c.mask_dilation, c.mask_composite, c.mask_guidance, c.brush}
    edit_inputs |= {c.mask_grow, c.mask_regions, c.auto_mask_guidance}
    edit_inputs |= set(tuning)
    edit_outputs = [c.state, c.compare, c.results, c.settings_view, c.downloads, c.tune_status]
    edit_outputs += [c.history_table, c.history_gallery, c.seed, c.masks]
    c.edit_btn.click(run_edit, edit_inputs, edit_outputs, **busy)

    def select_result(state, evt: gr.SelectData):
        if evt.index >= len(state.last):
            return gr.skip(), gr.skip()
        entry = state.last[evt.index]
        return _pair(state.base, entry["file"], has_slider), entry["settings"]

    c.results.select(select_result, c.state, [c.compare, c.settings_view], concurrency_limit=None)

    @friendly
    def run_sweep(values: dict, request: gr.Request, progress=gr.Progress()):
        dials = common_dials(values, pick_seed(values[c.seed], values[c.randomize]))
        settings = c.tuning.read(values, tune)
        state, sheet, files = studio.sweep(
            values[c.state],
            values[c.sweep_prompt],
            values[c.guidances],
            values[c.strengths],
            dials,
            settings,
            request.session_hash,
            progress,
        )
        return state, str(sheet), [str(f) for f in files], studio.tune_status(state, settings)

    sweep_inputs = {c.state, c.sweep_prompt, c.guidances, c.strengths, *shared_dials, *tuning}
    sweep_outputs = [c.state, c.sheet, c.sweep_files, c.tune_status]
    c.sweep_btn.click(run_sweep, sweep_inputs, sweep_outputs, **busy)

    def select_history(state, evt: gr.SelectData):
        return list(reversed(state.history))[evt.index]["settings"]

    c.history_gallery.select(select_history, c.state, c.history_settings, concurrency_limit=None)

    # --- interrupt: the running call stops after its current step -------------------------------------

    def stop(request: gr.Request):
        studio.stop(request.session_hash)
        gr.Info("Stopping after the current step…")

    c.stop_btn.click(stop, None, None, concurrency_limit=None, queue=False)


def _guidance_slider(value: float, label: str, elem_id: str) -> gr.Slider:
    """A guidance slider from 0 to 30 (or past `value`, where a model's default is higher)."""
    return gr.Slider(0, max(30, value), value, step=0.5, label=label, elem_id=elem_id)


def _gallery(label: str, elem_id: str, height: int) -> gr.Gallery:
    """Four images a row, shown at their own pixels (the shapes model works at 64 x 64)."""
    return gr.Gallery(label=label, columns=4, height=height, elem_id=elem_id, elem_classes="pixelated")


def _canvas(base: str | None):
    """The brush's value for a newly loaded base image: the image to paint over, no strokes yet."""
    if base is None:
        return None
    return {"background": base, "layers": [], "composite": base}


def _has_slider() -> bool:
    return hasattr(gr, "ImageSlider")


def _caption(s: dict) -> str:
    guided = f" · mg {s['model_guidance']:g}" if s.get("model_guidance") else ""
    picked = " (auto)" if s.get("auto") else ""
    return f"{s['prompt']} · g {s['guidance']:g} · s {s['strength']:g}{guided}{picked} · seed {s['seed']}"


def _pair(before: str, after: str | Path, has_slider: bool):
    if has_slider:
        return (before, str(after))
    return [(before, "before"), (str(after), "after")]


def _history(state: SessionState):
    gallery = [(e["file"], _caption(e["settings"])) for e in reversed(state.history)]
    return history_rows(state.history), gallery


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _blocks_style() -> dict:
    """gradio 6 takes css in launch(), older versions in Blocks()."""
    return {} if _css_in_launch() else {"css": CSS}


def _css_in_launch() -> bool:
    return "css" in inspect.signature(gr.Blocks.launch).parameters


def launch(
    editor: Editor,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    tune_settings: TuneSettings | None = None,
    edit_settings: EditSettings | None = None,
    work_dir: str | Path | None = None,
    block: bool = True,
):
    """Serve the UI on host:port (loopback unless told otherwise); uploads over max_file_size are refused.
    `tune_settings` and `edit_settings` are the controls' starting values."""
    studio = Studio(editor, work_dir)
    demo = build_app(studio, tune_settings, edit_settings)
    demo.queue(default_concurrency_limit=1)
    style = {"css": CSS} if _css_in_launch() else {}
    if port is not None and not _port_free(host, port):
        raise UnituneError(f"cannot listen on {host}:{port}: the port is in use (choose another with --port)")
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=max_file_size,
        allowed_paths=[str(EXAMPLES_DIR), str(studio.work_dir)],
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        **style,
    )
    return demo
