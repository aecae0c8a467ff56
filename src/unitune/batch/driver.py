"""`unitune batch`: run a jobs file, one tune per image and tune settings, its edits fanned out.

    from unitune.batch import run_batch
    summary = run_batch("jobs.jsonl", "out/batch", ray="auto")   # ray=None: in this process
    print(summary.line())                                        # "12 ran, 0 skipped, 0 failed"

1. check the options and every job: bad input raises UnituneError before anything runs or is written;
2. find the edits the ledger (`DIR/batch.jsonl`) does not mark done; none left: return at once;
3. start the runner: this process (`local.py`), or actors on Ray (`ray_runner.py`);
4. take the folder's lock, read each remaining job's image and group the edits by (pixel hash, tune
   settings): one tune per group; a bad image fails its edits here;
5. dispatch: a free worker takes an edit of a tuned group if there is one, else the next tune; each
   finished edit's PNG and ledger line are written at once, a failure with its one-line reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import locks
from ..cache import cache_dir as resolve_cache_dir
from ..cache import cache_max_bytes
from ..errors import UnituneError, UnituneWarning
from ..images import image_hash, load_image
from ..loading import load_model_defaults, pick_runtime, resolve_model
from ..outputs import EditResult
from ..settings import EditSettings, TuneSettings, settings_json
from .jobs import Edit, Job, read_jobs, unique_edits
from .ledger import LOCK, Ledger
from .tasks import Failure, Task, Tuned, one_line


@dataclass
class BatchSummary:
    """What a run did: edits ran (and succeeded), skipped (done before) and failed; tunes trained or
    found in the cache."""

    ran: int = 0
    skipped: int = 0
    failed: int = 0
    tunes_trained: int = 0
    tunes_cached: int = 0
    ledger: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def line(self) -> str:
        return f"{self.ran} ran, {self.skipped} skipped, {self.failed} failed"


@dataclass
class Group:
    """Edits that share one tune: the same pixels, the same tune settings."""

    image: Path
    label: str  # "line 3 (a.png)", for messages
    tune: TuneSettings
    edits: list[Edit] = field(default_factory=list)
    handle: object = None  # the image as sent to the workers, held while its edits run
    masks: dict[str, object] = field(default_factory=dict)  # job key -> its user mask (a PIL image)
    left: int = 0  # edits not finished yet


def run_batch(
    jobs: str | Path | list[dict],
    out: str | Path,
    edit_settings: EditSettings | None = None,
    tune_settings: TuneSettings | None = None,
    *,
    ray: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    allow_pickle: bool = False,
    cache_dir: str | Path | None = None,
    cache_max_size: str | int | None = None,
    **load_options,
) -> BatchSummary:
    """Run every job of `jobs` (a JSON Lines file, or a list of job dicts) into the folder `out`.

    `edit_settings` / `tune_settings`: every job's defaults (None: the model's recommended settings); a
    job's `edit` / `tune` fields override them. `ray`: None runs in this process, one task after another;
    "auto" connects to the running Ray cluster or starts one on this machine; "HOST:PORT" connects there
    (a process already connected by `ray.init` keeps its connection; without Ray installed, a warning
    and in-process). `workers`: at most this many Ray actors [default:
    one per GPU, else one per 1-2 CPUs]. `progress`: two bars (tunes, edits) and a line per failure on
    stderr. The model options are those of `Editor.load`
    (`load_options`: its size and checkpoint ones). Edits done by an earlier run into `out` are
    skipped; the summary counts them.
    """
    # 1. check everything cheap before any work
    resolved = resolve_model(model)
    defaults = load_model_defaults(resolved)
    pick_runtime(device, dtype, load_options.get("cuda_graphs"))  # checks the names
    limit = cache_max_bytes(cache_max_size)
    if workers is not None and workers < 1:
        raise UnituneError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UnituneError(f"{out}: not a folder")
    edit, tune = edit_settings or defaults.edit, tune_settings or defaults.tune
    edits = unique_edits(read_jobs(jobs, edit, tune, model or "embedded"))
    editor_options = {
        "model": resolved,
        "device": device,
        "dtype": dtype,
        "allow_pickle": allow_pickle,
        "cache_dir": str(resolve_cache_dir(cache_dir).resolve()),  # workers may start elsewhere
        "cache_max_size": "none" if limit is None else limit,
        **load_options,
    }
    ledger = Ledger(out)
    summary = BatchSummary(ledger=ledger.path)

    # 2. what is left
    left = _left(ledger, edits)
    if not left:
        summary.skipped = len(edits)
        return summary

    # 3. start the runner: a model that does not load, or an unreachable cluster, writes nothing
    runner = _runner(ray, editor_options, workers, len(left))
    try:
        out.mkdir(parents=True, exist_ok=True)
        with locks.exclusive(out / LOCK, wait=False) as held, _Bars(progress) as bars:
            if not held:
                raise UnituneError(f"{out}: another unitune batch is running into this folder")
            ledger.remove_strays()
            left = _left(ledger, edits)  # again, under the lock
            summary.skipped = len(edits) - len(left)
            # 4. group by image and tune; bad images fail here
            groups = _groups(left, ledger, summary, bars)
            # 5. dispatch
            _dispatch(runner, groups, ledger, summary, bars)
    finally:
        runner.close()
    return summary


def _left(ledger: Ledger, edits: list[Edit]) -> list[Edit]:
    records = ledger.latest()
    return [edit for edit in edits if not ledger.done(records, edit)]


def _groups(edits: list[Edit], ledger: Ledger, summary: BatchSummary, bars: _Bars) -> list[Group]:
    """The edits grouped by (image pixels, tune settings); a job whose image is unusable fails here."""
    by_job: dict[str, tuple[Job, list[Edit]]] = {}
    for edit in edits:
        by_job.setdefault(edit.job.key, (edit.job, []))[1].append(edit)
    hashes: dict[Path, str | Failure] = {}
    groups: dict[tuple[str, str], Group] = {}
    for job, job_edits in by_job.values():
        if job.image not in hashes:
            hashes[job.image] = _pixel_hash(job.image)
        pixels = hashes[job.image]
        label = f"line {job.line} ({job.image_text})"
        if isinstance(pixels, Failure):
            _fail(job_edits, pixels.reason, label, ledger, summary, bars)
            continue
        mask = _mask(job.mask)
        if isinstance(mask, Failure):
            _fail(job_edits, mask.reason, label, ledger, summary, bars)
            continue
        # as given: the worker's Editor fills in what is None (learning rate, ...) from its model, so equal
        # settings here mean one tune; settings that differ here but resolve alike share the cache entry
        key = (pixels, settings_json(asdict(job.tune)))
        group = groups.setdefault(key, Group(job.image, label, job.tune))
        group.edits.extend(job_edits)
        if mask is not None:
            group.masks[job.key] = mask
    bars.start(len(groups), len(edits))
    bars.edits.update(summary.failed)
    return list(groups.values())


def _pixel_hash(path: Path) -> str | Failure:
    try:
        return image_hash(load_image(path))
    except UnituneError as error:
        return Failure(one_line(error))


def _mask(path: Path | None):
    """The job's mask read now (None without one), or the Failure that fails its edits."""
    from ..localize import read_mask

    if path is None:
        return None
    try:
        return read_mask(path)
    except UnituneError as error:
        return Failure(one_line(error))


def _runner(ray: str | None, editor_options: dict, workers: int | None, tasks: int):
    from .local import InProcess

    if ray is None:
        return InProcess(editor_options)
    if importlib.util.find_spec("ray") is None:
        message = "Ray is not installed (pip install 'unitune[scale]'): running in this process instead"
        warnings.warn(message, UnituneWarning, stacklevel=3)
        return InProcess(editor_options)
    from .ray_runner import RayRunner

    return RayRunner(ray, editor_options, workers, tasks)


def _dispatch(runner, groups: list[Group], ledger: Ledger, summary: BatchSummary, bars: _Bars) -> None:
    """Keep every worker busy: edits of tuned groups first, else the next tune; record what finishes."""
    tunes, ready = deque(groups), deque()
    busy = 0
    while tunes or ready or busy:
        if runner.slots == 0 and busy == 0:  # every Ray worker died for good
            for group in tunes:
                _fail(group.edits, "no Ray worker left", group.label, ledger, summary, bars)
            _fail([edit for _, edit in ready], "no Ray worker left", "the rest", ledger, summary, bars)
            return
        while busy < runner.slots and (ready or tunes):
            if ready:
                group, edit = ready.popleft()
                mask = group.masks.get(edit.job.key)
                task = Task(
                    group.handle, group.tune, edit.prompt, edit.settings, mask, (group, edit, time.time())
                )
            else:
                group = tunes.popleft()
                try:
                    group.handle = runner.put_image(load_image(group.image))
                except UnituneError as error:  # the file changed since step 3
                    _fail(group.edits, one_line(error), group.label, ledger, summary, bars)
                    continue
                task = Task(group.handle, group.tune, item=(group, None, time.time()))
            runner.submit(task)
            busy += 1
        for task, outcome in runner.wait():
            busy -= 1
            group, edit, started = task.item
            if edit is None:
                _tuned(group, outcome, ready, ledger, summary, bars)
            else:
                _edited(group, edit, outcome, time.time() - started, ledger, summary, bars)


def _tuned(group: Group, outcome, ready: deque, ledger: Ledger, summary: BatchSummary, bars: _Bars) -> None:
    bars.tunes.update(1)
    if isinstance(outcome, Tuned):
        if outcome.trained:
            summary.tunes_trained += 1
        else:
            summary.tunes_cached += 1
        group.left = len(group.edits)
        ready.extend((group, edit) for edit in group.edits)
    else:
        group.handle = None
        _fail(group.edits, f"tune failed: {_reason(outcome)}", group.label, ledger, summary, bars)


def _edited(group, edit, outcome, seconds, ledger: Ledger, summary: BatchSummary, bars: _Bars) -> None:
    if isinstance(outcome, EditResult):
        outcome.settings["batch"] = {"edit": edit.id, "job": edit.job.key, "line": edit.job.line}
        ledger.record_ok(edit, outcome, seconds)
        summary.ran += 1
        bars.edits.update(1)
    else:
        _fail([edit], _reason(outcome), edit.describe(), ledger, summary, bars)
    group.left -= 1
    if group.left == 0:
        group.handle, group.masks = None, {}  # lets Ray free the image; the masks go too


def _reason(outcome) -> str:
    return outcome.reason if isinstance(outcome, Failure) else f"unexpected result {type(outcome).__name__}"


def _fail(edits, reason: str, label: str, ledger: Ledger, summary: BatchSummary, bars: _Bars) -> None:
    if not edits:
        return
    for edit in edits:
        ledger.record_failed(edit, reason)
    summary.failed += len(edits)
    bars.edits.update(len(edits))
    bars.note(f"{label}: {reason}" + (f" ({len(edits)} edits failed)" if len(edits) > 1 else ""))


class _Bars:
    """Two tqdm bars on stderr, tunes and edits (with rates and ETA), and failure lines above them."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tunes = self.edits = _NoBar()

    def start(self, tunes: int, edits: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        common = {"file": sys.stderr, "dynamic_ncols": True, "mininterval": 0.5}
        self.tunes = tqdm(total=tunes, desc="tunes", unit="tune", position=0, **common)
        self.edits = tqdm(total=edits, desc="edits", unit="edit", position=1, **common)

    def note(self, text: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(f"unitune: warning: {text}", file=sys.stderr)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in (self.edits, self.tunes):
            with contextlib.suppress(Exception):
                bar.close()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
