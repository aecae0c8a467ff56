"""Formatting of the report's table cells: rates with their intervals, verdicts, numbers."""

from __future__ import annotations

import math

from ..selection import wilson_interval


def pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.0f}%"


def rate(summary: dict, key: str) -> str:
    """A rate with its Wilson 95% interval, e.g. `35% [22-50]`."""
    value, count = summary[key], summary["count"]
    if not math.isfinite(value) or not count:
        return "n/a"
    low, high = wilson_interval(value * count, count)
    return f"{100 * value:.0f}% [{100 * low:.0f}-{100 * high:.0f}]"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def num(value: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
