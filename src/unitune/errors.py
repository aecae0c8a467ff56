"""The one exception users see, the warning category for input we fixed up, a library error in one line."""

import contextlib


class UnituneError(Exception):
    """Bad input or an unusable model: the CLI prints `unitune: error: <message>` and exits with code 2."""


class Cancelled(UnituneError):
    """A `should_stop` callable or event asked a running tune or edit to stop."""


class UnituneWarning(UserWarning):
    """Input that was accepted after a change the user should know about (e.g. a truncated prompt)."""


def first_line(error: Exception, limit: int = 300) -> str:
    """The first line of an error's message (at most `limit` characters; the type's name when empty), for
    a one-line UnituneError that names what a library raised."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:limit]


@contextlib.contextmanager
def out_of_memory(device_type: str, what: str, hint: str):
    """An accelerator (or the CPU) running out of memory inside the block becomes one UnituneError line
    naming what ran out and what to try (`hint`); the cached blocks are freed for the next try."""
    import torch

    try:
        yield
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        if not isinstance(error, torch.cuda.OutOfMemoryError) and "out of memory" not in str(error):
            raise
        del error
        if device_type == "cuda":
            torch.cuda.empty_cache()
        raise UnituneError(f"out of {device_type} memory during {what}: {hint}") from None
