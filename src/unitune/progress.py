"""Step reports for progress bars and streaming UIs, and cooperative cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import Cancelled

if TYPE_CHECKING:
    import torch


@dataclass
class Progress:
    """One finished step of a stage ("tune" or "sample")."""

    stage: str
    step: int  # 1-based
    total: int
    loss: float | None = None  # tune: the step's loss
    latents: torch.Tensor | None = None  # sample: the current latents, (B, 4, h, w)
    label: str = ""  # sample: which prompt / image


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool] | threading.Event


@dataclass(frozen=True)
class RunControl:
    """How a caller follows and stops a running call: `progress` receives a `Progress` after every tune
    and sampling step; `should_stop` (a callable or a `threading.Event`) stops the call with `Cancelled`
    at the next step. Both optional."""

    progress: ProgressFn | None = None
    should_stop: StopFn | None = None

    def report(self, event: Progress) -> None:
        report(self.progress, event)

    def check_stop(self) -> None:
        check_stop(self.should_stop)


def report(progress: ProgressFn | None, event: Progress) -> None:
    if progress is not None:
        progress(event)


def check_stop(should_stop: StopFn | None) -> None:
    """Raise Cancelled if the caller asked to stop (an Event that is set or a callable returning True)."""
    if should_stop is None:
        return
    stop = should_stop.is_set() if isinstance(should_stop, threading.Event) else should_stop()
    if stop:
        raise Cancelled("stopped on request")
