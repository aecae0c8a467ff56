"""The one exception users see, and the warning category for input we fixed up."""


class UnituneError(Exception):
    """Bad input or an unusable model: the CLI prints `unitune: error: <message>` and exits with code 2."""


class Cancelled(UnituneError):
    """A `should_stop` callable or event asked a running tune or edit to stop."""


class UnituneWarning(UserWarning):
    """Input that was accepted after a change the user should know about (e.g. a truncated prompt)."""
