"""The jobs file: JSON Lines, one job per line, checked whole before anything runs.

    {"image": "a.png", "prompts": ["at sunset", "pixel art"], "edit": {"guidance": 8}}
    {"image": "b.png", "prompts": ["a red hat"], "mask": "b-hat.png"}

`edit` and `tune` are optional: any of the fields of `EditSettings` / `TuneSettings`, over the run's
defaults (the flags of `unitune batch`, else the model's recommended settings). `mask`, optional, is a
user's mask for every edit of the job (white = may change), as `unitune edit --mask`. A relative image
or mask path is relative to the jobs file. A job expands into edits, one per prompt and image index
(image k of a prompt has seed `edit.seed + k`, as in `unitune edit`). An edit is identified by the job's
key (a hash of the line's JSON and the settings it resolves to), the prompt index and the image index, so
a changed line or a changed default flag makes new edits, and an unchanged one is recognised wherever the
line moves.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import UnituneError, UnituneWarning
from ..outputs import slug
from ..settings import EditSettings, TuneSettings, settings_from_dict, settings_json

JOB_KEYS = ("image", "prompts", "mask", "edit", "tune")


@dataclass(frozen=True)
class Job:
    """One line of the jobs file, its settings over the run's defaults."""

    line: int  # 1-based line number in the jobs file
    image: Path  # resolved against the jobs file's folder
    image_text: str  # as written in the line
    prompts: tuple[str, ...]
    edit: EditSettings
    tune: TuneSettings  # None fields (learning rate...) are left for the worker's model to fill in
    key: str  # hash of the line's JSON, its settings over the defaults and the model
    mask: Path | None = None  # resolved against the jobs file's folder; None: no user mask

    def edits(self) -> list[Edit]:
        return [Edit(self, p, k) for p in range(len(self.prompts)) for k in range(self.edit.num_images)]


@dataclass(frozen=True)
class Edit:
    """One output image: prompt `prompt_index` of `job`, image `image_index` of that prompt."""

    job: Job
    prompt_index: int
    image_index: int

    @property
    def id(self) -> str:
        return f"{self.job.key}:{self.prompt_index}:{self.image_index}"

    @property
    def prompt(self) -> str:
        return self.job.prompts[self.prompt_index]

    @property
    def settings(self) -> EditSettings:
        """The job's edit settings for this one image: its own seed, one image."""
        return replace(self.job.edit, seed=self.job.edit.seed + self.image_index, num_images=1)

    def file_name(self) -> str:
        stem = slug(Path(self.job.image_text).stem, 24)
        prompt = slug(self.prompt, 32)
        seed = self.settings.seed
        return f"{self.job.line:04d}-{stem}-p{self.prompt_index}-{prompt}-seed{seed}-{self.job.key[:8]}.png"

    def describe(self) -> str:
        return f"line {self.job.line} ({self.job.image_text}) {self.prompt!r} seed {self.settings.seed}"


def read_jobs(
    jobs: str | Path | list[dict],
    edit: EditSettings,
    tune: TuneSettings,
    model: str = "",
) -> list[Job]:
    """Parse and check every job (a JSON Lines file, or a list of dicts with paths relative to the
    working folder) over the run's `edit` / `tune` settings; the first bad line raises UnituneError
    naming it. `model` goes into every job's key."""
    if isinstance(jobs, list):
        source, folder = "jobs", Path.cwd()
        lines = [(number, job) for number, job in enumerate(jobs, 1)]
    else:
        path = Path(jobs)
        source, folder = str(path), path.resolve().parent
        lines = [(number, _json(text, f"{source} line {number}")) for number, text in _lines(path)]
    if not lines:
        raise UnituneError(f"{source}: no jobs (one JSON object per line)")
    parsed = [
        _job(data, number, folder, edit, tune, model, f"{source} line {number}") for number, data in lines
    ]
    _warn_repeats(parsed, source)
    return parsed


def unique_edits(jobs: list[Job]) -> list[Edit]:
    """Every job's edits in file order; a repeated job (same key) contributes its edits once."""
    edits: dict[str, Edit] = {}
    for job in jobs:
        for edit in job.edits():
            edits.setdefault(edit.id, edit)
    return list(edits.values())


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnituneError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UnituneError(f"{path}: is a folder, not a jobs file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UnituneError(f"{path}: unreadable jobs file ({type(error).__name__})") from None
    return [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UnituneError(f"{where}: not valid JSON ({error.msg}, column {error.colno})") from None


def _job(data, number, folder, edit, tune, model, where) -> Job:
    if not isinstance(data, dict):
        raise UnituneError(f"{where}: expected a JSON object with {', '.join(JOB_KEYS)}")
    unknown = [key for key in data if key not in JOB_KEYS]
    if unknown:
        raise UnituneError(f"{where}: unknown key {unknown[0]!r}; a job has {', '.join(JOB_KEYS)}")
    image = data.get("image")
    if not isinstance(image, str) or not image.strip():
        raise UnituneError(f"{where}: 'image' must be an image path, got {image!r}")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise UnituneError(f"{where}: 'prompts' must be a non-empty list of strings, got {prompts!r}")
    mask = data.get("mask")
    if mask is not None and (not isinstance(mask, str) or not mask.strip()):
        raise UnituneError(f"{where}: 'mask' must be a mask image path, got {mask!r}")
    edit = settings_from_dict(EditSettings, data.get("edit", {}), f"{where}: edit", base=edit)
    tune = settings_from_dict(TuneSettings, data.get("tune", {}), f"{where}: tune", base=tune)
    identity = {"job": data, "edit": asdict(edit), "tune": asdict(tune), "model": model}
    key = hashlib.sha256(settings_json(identity).encode()).hexdigest()[:16]
    image_path, mask_path = (_resolved(text, folder) if text else None for text in (image, mask))
    return Job(number, image_path, image, tuple(prompts), edit, tune, key, mask_path)


def _resolved(text: str, folder: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path


def _warn_repeats(jobs: list[Job], source: str) -> None:
    first: dict[str, int] = {}
    for job in jobs:
        if job.key in first:
            message = f"{source} line {job.line} repeats line {first[job.key]}: its edits run once"
            warnings.warn(message, UnituneWarning, stacklevel=3)
        first.setdefault(job.key, job.line)
