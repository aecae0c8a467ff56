"""The gradio Blocks: components and wiring only. The actions live in `session.py` (no diffusion here)."""

from __future__ import annotations

import functools
import inspect
import os
import socket
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home; must precede the import

import gradio as gr  # noqa: E402

from ..api import Editor  # noqa: E402
from ..errors import Cancelled, UnituneError  # noqa: E402
from ..settings import METHODS, EditSettings, TuneSettings  # noqa: E402
from .session import (  # noqa: E402
    EXAMPLES_DIR,
    HISTORY_COLUMNS,
    MAX_SEED,
    SessionState,
    Studio,
    example_images,
    history_rows,
    pick_seed,
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


def build_app(studio: Studio, tune: TuneSettings | None = None, edit: EditSettings | None = None):
    """The Blocks for one Studio; `tune` and `edit` are the controls' starting values."""
    tune, edit = tune or TuneSettings(), edit or EditSettings()
    examples = [str(p) for p in example_images()]
    has_slider = hasattr(gr, "ImageSlider")

    with gr.Blocks(title="unitune", **_blocks_style()) as demo:
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
                with gr.Accordion("Tune settings", open=False):
                    method = gr.Radio(list(METHODS), value=tune.method, label="method")
                    tune_steps = gr.Number(
                        tune.steps, label="tune steps", precision=0, minimum=0, elem_id="tune-steps"
                    )
                    batch_size = gr.Number(tune.batch_size, label="batch size", precision=0, minimum=1)
                    tune_seed = gr.Number(tune.seed, label="tune seed", precision=0)
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
                            interpolation = gr.Slider(
                                0, 1, edit.interpolation, step=0.05, label="interpolation"
                            )
                        with gr.Row():
                            steps = gr.Slider(
                                1, max(150, edit.steps), edit.steps, step=1, label="sampling steps"
                            )
                            num_images = gr.Slider(
                                1, max(8, edit.num_images), edit.num_images, step=1, label="images per prompt"
                            )
                            seed = gr.Number(
                                edit.seed, label="seed", precision=0, minimum=0, maximum=MAX_SEED
                            )
                            randomize = gr.Checkbox(False, label="random seed")
                            auto = gr.Checkbox(
                                edit.auto,
                                label="auto dial (picks the strength; ~4x the time)",
                                elem_id="auto",
                            )
                        edit_btn = gr.Button("Edit", variant="primary", elem_id="edit-btn")
                        with gr.Row():
                            if has_slider:
                                compare = gr.ImageSlider(
                                    label="Before / after",
                                    type="filepath",
                                    height=320,
                                    elem_id="compare",
                                    elem_classes="pixelated",
                                )
                            else:
                                compare = gr.Gallery(
                                    label="Before / after",
                                    columns=2,
                                    elem_id="compare",
                                    elem_classes="pixelated",
                                )
                            results = gr.Gallery(
                                label="Edits (select one to compare)",
                                columns=4,
                                height=320,
                                elem_id="results",
                                elem_classes="pixelated",
                            )
                        settings_view = gr.JSON(label="Settings of the selected edit", elem_id="settings")
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

        tune_inputs = [method, tune_steps, batch_size, tune_seed]

        def tune_settings(method_, steps_, batch_, seed_) -> TuneSettings:
            return replace(tune, method=method_, steps=int(steps_), batch_size=int(batch_), seed=int(seed_))

        # --- the base image: uploaded or picked ---------------------------------------------------

        @friendly
        def load(state_, path, m, ts, tb, tsd, request: gr.Request):
            if path:
                state_ = studio.load(state_, path, request.session_hash)
            status_ = studio.tune_status(state_, tune_settings(m, ts, tb, tsd))
            return state_, state_.base, status_, None, [], None, None  # the old image's edits go

        def pick(state_, m, ts, tb, tsd, evt: gr.SelectData, request: gr.Request):
            return load(state_, examples[evt.index], m, ts, tb, tsd, request)

        load_outputs = [state, base, tune_status, compare, results, settings_view, downloads]
        upload.upload(load, [state, upload, *tune_inputs], load_outputs, concurrency_limit=None)
        picker.select(pick, [state, *tune_inputs], load_outputs, concurrency_limit=None)

        @friendly
        def status(state_, m, ts, tb, tsd):
            return studio.tune_status(state_, tune_settings(m, ts, tb, tsd))

        for control in tune_inputs:
            control.change(status, [state, *tune_inputs], tune_status, concurrency_limit=None)

        # --- tune, edit, sweep: one at a time on the shared model ----------------------------------

        @friendly
        def run_tune(state_, m, ts, tb, tsd, request: gr.Request, progress=gr.Progress()):
            return studio.tune(state_, tune_settings(m, ts, tb, tsd), request.session_hash, progress)

        busy = {"concurrency_id": "model", "concurrency_limit": 1}
        tune_btn.click(run_tune, [state, *tune_inputs], [state, tune_status], **busy)

        @friendly
        def run_edit(
            state_, prompts_, negative_, g, s, i, n, k, seed_, random_, auto_, m, ts, tb, tsd,
            request: gr.Request, progress=gr.Progress(),
        ):  # fmt: skip
            used_seed = pick_seed(seed_, random_)
            dials = dict(
                guidance=g, strength=s, interpolation=i, steps=int(n), num_images=int(k), seed=used_seed,
                negative_prompt=(negative_ or "").strip(), auto=bool(auto_),
            )  # fmt: skip
            tuning, session = tune_settings(m, ts, tb, tsd), request.session_hash
            state_, paths, message = studio.edit(
                state_, prompts_, replace(edit, **dials), tuning, session, progress
            )
            gallery = [(str(p), _caption(e["settings"])) for p, e in zip(paths, state_.last, strict=True)]
            files = [str(p) for p in paths] + [str(Path(paths[0]).parent / "manifest.json")]
            before_after = _pair(state_.base, paths[0], has_slider)
            first = state_.last[0]["settings"]
            return state_, before_after, gallery, first, files, message, *_history(state_), used_seed

        edit_inputs = [
            state, prompts, negative, guidance, strength, interpolation, steps, num_images, seed, randomize,
            auto,
        ]  # fmt: skip
        history_outputs = [history_table, history_gallery]
        edit_outputs = [
            state,
            compare,
            results,
            settings_view,
            downloads,
            tune_status,
            *history_outputs,
            seed,
        ]
        edit_btn.click(run_edit, [*edit_inputs, *tune_inputs], edit_outputs, **busy)

        def select_result(state_, evt: gr.SelectData):
            if evt.index >= len(state_.last):
                return gr.skip(), gr.skip()
            entry = state_.last[evt.index]
            return _pair(state_.base, entry["file"], has_slider), entry["settings"]

        results.select(select_result, state, [compare, settings_view], concurrency_limit=None)

        @friendly
        def run_sweep(
            state_, prompt_, guidances_, strengths_, i, n, seed_, random_, auto_, m, ts, tb, tsd,
            request: gr.Request, progress=gr.Progress(),
        ):  # fmt: skip
            seed_ = pick_seed(seed_, random_)
            dials = replace(edit, interpolation=i, steps=int(n), seed=seed_, auto=bool(auto_))
            tuning, session = tune_settings(m, ts, tb, tsd), request.session_hash
            state_, sheet_, files = studio.sweep(
                state_, prompt_, guidances_, strengths_, dials, tuning, session, progress
            )
            return state_, str(sheet_), [str(f) for f in files], studio.tune_status(state_, tuning)

        sweep_inputs = [
            state, sweep_prompt, guidances, strengths, interpolation, steps, seed, randomize, auto
        ]  # fmt: skip
        sweep_outputs = [state, sheet, sweep_files, tune_status]
        sweep_btn.click(run_sweep, [*sweep_inputs, *tune_inputs], sweep_outputs, **busy)

        def select_history(state_, evt: gr.SelectData):
            return list(reversed(state_.history))[evt.index]["settings"]

        history_gallery.select(select_history, state, history_settings, concurrency_limit=None)

        # --- interrupt: the running call stops after its current step -----------------------------

        def stop(request: gr.Request):
            studio.stop(request.session_hash)
            gr.Info("Stopping after the current step…")

        stop_btn.click(stop, None, None, concurrency_limit=None, queue=False)

    return demo


def _caption(s: dict) -> str:
    return f"{s['prompt']} · g {s['guidance']:g} · s {s['strength']:g} · seed {s['seed']}"


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
    tune: TuneSettings | None = None,
    edit: EditSettings | None = None,
    work_dir: str | Path | None = None,
    block: bool = True,
):
    """Serve the UI on host:port (loopback unless told otherwise); uploads over max_file_size are refused."""
    studio = Studio(editor, work_dir)
    demo = build_app(studio, tune, edit)
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
