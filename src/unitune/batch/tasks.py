"""What a worker does with a loaded `Editor`: one tune, or one edit. Both runners call `perform`.

A task never raises for a bad image, bad settings or a failing model call: it returns a `Failure` with a
one-line reason, so one bad job never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UnituneError, first_line
from ..settings import EditSettings, TuneSettings


@dataclass(frozen=True)
class Task:
    """A tune of `image` (`prompt` None) or one edit of it; `image` is a PIL image or a Ray ObjectRef."""

    image: Any
    tune: TuneSettings
    prompt: str | None = None
    edit: EditSettings | None = None
    mask: Any = None  # a user's mask for the edit (a PIL image), or None
    item: Any = None  # the driver's own reference (its group or edit); never sent to a worker


@dataclass(frozen=True)
class Tuned:
    key: str
    trained: bool


@dataclass(frozen=True)
class Failure:
    reason: str


def perform(editor, image, tune: TuneSettings, prompt: str | None, edit: EditSettings | None, mask=None):
    """Tune (prompt None; the tune lands in the editor's cache) or make one edit (localised to `mask`
    when given), which loads the tune from the cache (or trains it, if the cache lost it). Returns Tuned,
    EditResult or Failure."""
    try:
        if prompt is None:
            result = editor.tune(image, tune)
            return Tuned(result.key, result.trained)
        (result,) = editor.edit(image, [prompt], edit, tune, mask=mask)
        return result
    except Exception as error:  # noqa: BLE001 (fault isolation: any error fails this task only)
        return Failure(one_line(error))


def one_line(error: BaseException) -> str:
    """`errors.first_line`, led by the error's type unless it is one of our own messages."""
    text = first_line(error)
    if isinstance(error, UnituneError) or text == type(error).__name__:
        return text
    return f"{type(error).__name__}: {text}"
