"""unitune: edit an image from a text description (UniTune: tune once on the image, edit many times).

Examples:

\b
    unitune edit photo.png "wearing a hat" "at sunset" --out out/
    unitune sweep photo.png "pixel art" --guidances 5,10,20 --strengths 0.7,0.9,1 --out out/sweep
    unitune tune photo.png --method lora
    unitune generate "a red square" --out out/gen
    unitune batch jobs.jsonl --out out/batch --ray auto   # many images, resumable; Ray: unitune[scale]
    unitune ui                 # web UI on http://127.0.0.1:7860 (pip install 'unitune[ui]')
    unitune cache ls           # cached tunes; `unitune cache prune --max-size 5GB` evicts the oldest

The CLI only parses flags and calls the Python API (`unitune.Editor`); tune and edit flags are
generated from the fields of `TuneSettings` and `EditSettings`. A flag left out takes the model's
recommended value (`unitune.json` in its folder), else the default shown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import sys
import time
import typing
import warnings
from pathlib import Path

import typer

from .errors import UnituneError
from .settings import EditSettings, LoadOptions, ModelDefaults, TuneSettings, over_defaults

app = typer.Typer(
    help=__doc__,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
)

_CACHE_DIR_HELP = LoadOptions.__dataclass_fields__["cache_dir"].metadata["help"]

# (name, type, default, help) of the options every command has: how to load the model (LoadOptions)
_MODEL_OPTIONS = [
    (f.name, typing.get_type_hints(LoadOptions)[f.name], f.default, f.metadata["help"])
    for f in dataclasses.fields(LoadOptions)
]


def _option(name: str, annotation, default, flag: str, help_text: str) -> inspect.Parameter:
    option = typer.Option(default, flag, help=help_text, show_default=default is not None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _flag_name(field: dataclasses.Field) -> str:
    return field.metadata["flag"].lstrip("-").replace("-", "_")


def _settings_options(cls) -> list[inspect.Parameter]:
    """One option per field of a settings dataclass, with the field's --flag and help.

    Every option defaults to None (not given), so only the flags the user passed override the model's
    recommended settings; `--help` shows the dataclass default.
    """
    hints = typing.get_type_hints(cls)
    return [
        _option(_flag_name(f), hints[f.name] | None, None, _switch(f, hints[f.name]), _help(f))
        for f in dataclasses.fields(cls)
    ]


def _switch(field: dataclasses.Field, kind) -> str:
    """A yes/no field's flag pair (`--inversion/--no-inversion`), so that either answer can override a
    model's default; other fields' one flag."""
    flag = field.metadata["flag"]
    return f"{flag}/--no-{flag[2:]}" if kind is bool else flag


def _help(field: dataclasses.Field) -> str:
    if field.default is None:
        return field.metadata["help"]  # it says what None means
    default = repr(field.default) if isinstance(field.default, str) else field.default
    return f"{field.metadata['help']}  [default: {default} or the model's]"


def _given(cls, values: dict) -> dict:
    """The settings flags the user passed, by field name (removing all of them from `values`)."""
    given = {f.name: values.pop(_flag_name(f)) for f in dataclasses.fields(cls)}
    return {name: value for name, value in given.items() if value is not None}


def _model_defaults(model: str | None) -> ModelDefaults:
    """The model's recommended settings, read before the slow model load so bad flags fail first.

    A model that does not resolve gets the dataclass defaults here: `Editor.load` reports it, after the
    command's own cheaper checks (image file, gradio).
    """
    from .loading import load_model_defaults, resolve_model

    try:
        resolved = resolve_model(model)
    except UnituneError:
        return ModelDefaults()
    return load_model_defaults(resolved)


def command(*settings_classes):
    """Register a command whose signature gains the model options and the settings classes' flags.

    The function receives `editor_options` (a `LoadOptions` as keyword arguments for `Editor.load`) and one
    settings object per class
    (`tune_settings`, `edit_settings`): the flags given, over the model's recommended settings (see
    `Editor.default_edit_settings`). UnituneError becomes `unitune: error: ...` and exit code 2.
    """

    def decorate(func):
        own = [p for p in inspect.signature(func).parameters.values() if p.name not in _INJECTED]
        extra = [
            _option(name, kind, default, "--" + name.replace("_", "-"), text)
            for name, kind, default, text in _MODEL_OPTIONS
        ]
        for cls in settings_classes:
            extra += _settings_options(cls)

        @functools.wraps(func)
        def wrapper(**values):
            with _clean_exit():
                given = {cls: _given(cls, values) for cls in settings_classes}
                load = LoadOptions(**{name: values.pop(name) for name, *_ in _MODEL_OPTIONS})
                built = {"editor_options": load.to_dict()}
                defaults = _model_defaults(built["editor_options"]["model"])
                for cls, flags in given.items():
                    model_settings = defaults.edit if cls is EditSettings else defaults.tune
                    built[_SETTINGS_ARG[cls]] = over_defaults(model_settings, flags)
                return func(**values, **built)

        wrapper.__signature__ = inspect.Signature(own + extra)
        return app.command()(wrapper)

    return decorate


@contextlib.contextmanager
def _clean_exit():
    """UnituneError becomes `unitune: error: ...` and exit code 2; Ctrl-C exit code 130."""
    try:
        yield
    except UnituneError as error:
        typer.echo(f"unitune: error: {error}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("unitune: interrupted", err=True)
        raise typer.Exit(130) from None


_SETTINGS_ARG = {TuneSettings: "tune_settings", EditSettings: "edit_settings"}
_INJECTED = {"editor_options", "tune_settings", "edit_settings"}


# --- progress and loading ------------------------------------------------------------------------------


class TqdmProgress:
    """A progress callback drawing one tqdm bar per stage run, with the loss while tuning."""

    def __init__(self, verb: str = "edit"):
        self.verb = verb  # what the sampling bars say they do: edit or generate
        self.bar = None
        self.key = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        key = (event.stage, event.label, event.total)
        if self.bar is None or key != self.key or event.step == 1:
            self.close()
            stages = {"tune": "tune", "decoder": "fit decoder"}
            desc = stages.get(event.stage) or f"{self.verb} {event.label}"[:50]
            self.bar, self.key = tqdm(total=event.total, desc=desc, leave=False, file=sys.stderr), key
        if event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
        self.bar.update(1)
        if event.step == event.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"unitune: warning: {message}", file=sys.stderr)


def _load(image: Path | None, options: dict):
    """Check the image file before loading the model (cheap failures first), then load the model."""
    from .api import Editor
    from .images import load_image
    from .loading import quiet_libraries

    loaded = load_image(image) if image is not None else None
    quiet_libraries()
    return Editor.load(**options), loaded


# --- commands ------------------------------------------------------------------------------------------


@command(TuneSettings)
def tune(image: Path = typer.Argument(..., help="image to tune on"), editor_options=None, tune_settings=None):
    """Fine-tune the model on IMAGE (cached; a second call with the same settings does nothing)."""
    editor, loaded = _load(image, editor_options)
    progress = TqdmProgress()
    result = editor.tune(loaded, tune_settings, progress=progress)
    progress.close()
    state = "tuned" if result.trained else "cached"
    typer.echo(json.dumps({"status": state, "key": result.key, "path": str(result.path)}))


@command(TuneSettings, EditSettings)
def edit(
    image: Path = typer.Argument(..., help="image to edit"),
    prompts: list[str] = typer.Argument(..., help="one or more edit prompts (they share one tune)"),
    out: Path = typer.Option(Path("out"), "--out", help="output folder"),
    mask: Path | None = typer.Option(
        None,
        "--mask",
        help="your own mask (white = may change, black = kept; resized to the image): every edit changes "
        "only there (skips --localize auto's estimate); NAME-mask.png is written beside each edit",
    ),
    editor_options=None,
    tune_settings=None,
    edit_settings=None,
):
    """Edit IMAGE once per PROMPT (tunes first unless a cached tune exists)."""
    from .localize import read_mask
    from .outputs import save_results

    user_mask = read_mask(mask) if mask is not None else None  # a bad file fails before any work
    editor, loaded = _load(image, editor_options)
    progress = TqdmProgress()
    results = editor.edit(loaded, prompts, edit_settings, tune_settings, progress=progress, mask=user_mask)
    progress.close()
    _print_paths(save_results(results, out, "edit", {"image": str(image)}))


@command(TuneSettings, EditSettings)
def sweep(
    image: Path = typer.Argument(..., help="image to edit"),
    prompt: str = typer.Argument(..., help="edit prompt"),
    guidances: str = typer.Option("5,10,20", "--guidances", help="comma-separated guidance weights"),
    strengths: str = typer.Option("0.7,0.85,1.0", "--strengths", help="comma-separated strengths"),
    out: Path = typer.Option(Path("out"), "--out", help="output folder"),
    editor_options=None,
    tune_settings=None,
    edit_settings=None,
):
    """Edit IMAGE on a guidance x strength grid; writes the images and a labelled contact sheet."""
    from .outputs import save_png, save_results
    from .sweep import parse_floats

    grid_g, grid_s = parse_floats(guidances, "--guidances"), parse_floats(strengths, "--strengths")
    for g in grid_g:
        for s in grid_s:
            dataclasses.replace(edit_settings, guidance=g, strength=s)  # validate before any work
    editor, loaded = _load(image, editor_options)
    progress = TqdmProgress()
    result = editor.sweep(loaded, prompt, grid_g, grid_s, edit_settings, tune_settings, progress=progress)
    progress.close()
    extra = {"image": str(image), "guidances": grid_g, "strengths": grid_s, "sheet": "sheet.png"}
    paths = save_results(result.results, out, "sweep", extra)
    save_png(result.sheet, Path(out) / "sheet.png", extra)
    _print_paths([*paths, Path(out) / "sheet.png"])


@command(TuneSettings, EditSettings)
def batch(
    jobs: Path = typer.Argument(
        ..., help='JSON Lines, one job a line: {"image": "a.png", "prompts": ["..."], "edit": {}, "tune": {}}'
    ),
    out: Path = typer.Option(
        Path("out"), "--out", help="output folder; its batch.jsonl ledger lets a re-run resume"
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="run on Ray: auto (the running cluster, else a local one) or HOST:PORT [default: in-process]",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="at most this many Ray workers [default: one per GPU, else one per 1-2 CPUs]"
    ),
    editor_options=None,
    tune_settings=None,
    edit_settings=None,
):
    """Run a jobs file: one tune per image, its edits fanned out; resumable (docs/batch.md).

    The tune and edit flags are every job's defaults; a job's "edit" / "tune" fields override them.
    Exit code 0 when every edit succeeded, 1 when some failed (see DIR/batch.jsonl), 2 on bad input.
    """
    from .batch import run_batch

    summary = run_batch(jobs, out, edit_settings, tune_settings, ray=ray, workers=workers, **editor_options)
    tunes = f"tunes: {summary.tunes_trained} trained, {summary.tunes_cached} cached"
    typer.echo(f"{summary.line()} ({tunes}; ledger {summary.ledger})")
    if not summary.ok:
        raise typer.Exit(1)


@command(EditSettings)
def generate(
    prompts: list[str] = typer.Argument(..., help="one or more prompts"),
    out: Path = typer.Option(Path("out"), "--out", help="output folder"),
    editor_options=None,
    edit_settings=None,
):
    """Plain text-to-image with the same model (no tuning; --strength and --interpolation are ignored)."""
    from .outputs import save_results

    editor, _ = _load(None, editor_options)
    progress = TqdmProgress("generate")
    results = editor.generate(prompts, edit_settings, progress=progress)
    progress.close()
    _print_paths(save_results(results, out, "generate"))


@command(TuneSettings, EditSettings)
def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: the whole network)"),
    port: int = typer.Option(7860, "--port", help="port to listen on"),
    max_file_size: str = typer.Option("20mb", "--max-file-size", help="largest upload accepted"),
    editor_options=None,
    tune_settings=None,
    edit_settings=None,
):
    """Serve the web UI: upload an image, tune once, edit it interactively (needs unitune[ui]).

    The model is loaded once; the tune and edit flags set the controls' starting values.
    """
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UnituneError("the web UI needs gradio: pip install 'unitune[ui]'") from None
    from .ui.app import launch

    editor, _ = _load(None, editor_options)
    launch(editor, host, port, max_file_size, tune_settings, edit_settings)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="a handful of scenes and a tiny grid (minutes)"),
    model: str | None = typer.Option(None, "--model", help="diffusers folder [default: embedded]"),
    scenes: int | None = typer.Option(None, "--scenes", help="scenes per split [default: by mode]"),
    report: Path = typer.Option(Path("docs/benchmark.md"), "--report", help="markdown report to write"),
    images: Path = typer.Option(Path("docs/images"), "--images", help="folder for the bench-*.png plots"),
    out: Path = typer.Option(Path("runs/bench"), "--out", help="folder for the raw scored records"),
    costs: bool | None = typer.Option(
        None, "--costs/--no-costs", help="measure tune/edit costs and memory [default: full mode only]"
    ),
):
    """Edit benchmark on the shapes world: prompt only, SDEdit and UniTune (full, LoRA) side by side."""
    from .benchmark.run import benchmark, configure
    from .loading import quiet_libraries

    command = "unitune bench" + (" --quick" if quick else "") + (f" --scenes {scenes}" if scenes else "")
    command += "" if costs is None else (" --costs" if costs else " --no-costs")
    try:
        quiet_libraries()
        benchmark(configure(quick, scenes, costs), model, report, images, out, command)
    except UnituneError as error:
        typer.echo(f"unitune: error: {error}", err=True)
        raise typer.Exit(2) from None


# --- the tune cache ------------------------------------------------------------------------------------

cache_app = typer.Typer(
    help="List, remove and prune cached tunes (least recently used first); no model is loaded.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


def cache_command(func):
    """Register a `unitune cache` command; UnituneError becomes `unitune: error: ...` and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with _clean_exit():
            return func(*args, **kwargs)

    return cache_app.command()(wrapper)


@cache_command
def ls(cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP)):
    """List the cached tunes, most recently used first: key, size, last use, method, image hash, model."""
    from .cache import TuneCache, format_size

    cache = TuneCache(cache_dir)
    entries = cache.entries()
    for line in _entry_table(entries) if entries else []:
        typer.echo(line)
    limit = "no limit" if cache.max_bytes is None else f"limit {format_size(cache.max_bytes)}"
    total = format_size(sum(entry.size for entry in entries))
    typer.echo(f"{len(entries)} tune(s), {total} in {cache.folder} ({limit})")
    strays = [path for path in cache.stray_files() if path.suffix != ".lock"]
    if strays:
        size = format_size(sum(_size(path) for path in strays))
        typer.echo(
            f"{len(strays)} stray file(s), {size}, from interrupted or damaged writes: prune removes them"
        )


@cache_command
def rm(
    keys: list[str] = typer.Argument(..., help="keys, or unique key beginnings, as `unitune cache ls` shows"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
):
    """Remove tunes from the cache (every key is checked before any is removed)."""
    from .cache import TuneCache, format_size

    cache = TuneCache(cache_dir)
    for key in dict.fromkeys([cache.resolve(key) for key in keys]):
        typer.echo(f"removed {key} ({format_size(cache.remove(key).size)})")


@cache_command
def prune(
    max_size: str | None = typer.Option(
        None, "--max-size", help="evict least recently used tunes beyond this, e.g. 20GB [default: the limit]"
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=_CACHE_DIR_HELP),
):
    """Remove stray files, then evict least recently used tunes (never one in use) down to --max-size."""
    from .cache import TuneCache, format_size

    cache = TuneCache(cache_dir, max_size)
    strays = len([path for path in cache.stray_files() if path.suffix != ".lock"])
    evicted = cache.prune()
    for entry in evicted:
        typer.echo(f"evicted {entry.key} ({format_size(entry.size)}, last used {_when(entry.last_used)})")
    left = strays - len([path for path in cache.stray_files() if path.suffix != ".lock"])
    kept = cache.entries()
    total = format_size(sum(entry.size for entry in kept))
    typer.echo(f"removed {left} stray file(s); kept {len(kept)} tune(s), {total} in {cache.folder}")


def _entry_table(entries) -> list[str]:
    from .cache import format_size

    rows = [("KEY", "SIZE", "LAST USED", "METHOD", "IMAGE")]
    rows += [(e.key, format_size(e.size), _when(e.last_used), e.method, e.image_hash[:12]) for e in entries]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    models = ["MODEL", *(entry.model for entry in entries)]
    return [
        "  ".join(map(str.ljust, row, widths)) + "  " + model for row, model in zip(rows, models, strict=True)
    ]


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --- helpers -------------------------------------------------------------------------------------------


def _print_paths(paths) -> None:
    for path in paths:
        typer.echo(str(path))


def main() -> None:
    warnings.showwarning = _show_warning
    app()


if __name__ == "__main__":
    main()
