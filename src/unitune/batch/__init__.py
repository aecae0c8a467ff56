"""Batch editing: a JSON Lines jobs file, one tune per image, edits fanned out, in this process or on Ray.

    from unitune.batch import run_batch
    summary = run_batch("jobs.jsonl", "out/batch", ray="auto")

| module | concept |
|---|---|
| `jobs.py` | the jobs file: parse, check, expand into edits with stable ids |
| `ledger.py` | `DIR/batch.jsonl`: durable outputs and one line per finished edit; what is done |
| `tasks.py` | what a worker does with a loaded Editor: one tune or one edit, failures as values |
| `local.py` | the in-process runner |
| `ray_runner.py` | the Ray runner: an actor per device, each loading the model once |
| `driver.py` | `run_batch`: check, group by image and tune, dispatch, record, summarise |
"""

from .driver import BatchSummary, run_batch
from .jobs import Edit, Job, read_jobs

__all__ = ["BatchSummary", "Edit", "Job", "read_jobs", "run_batch"]
