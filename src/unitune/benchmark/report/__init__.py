"""The benchmark's markdown report and plots (docs/benchmark.md, docs/images/bench-*.png)."""

from .document import write_report

__all__ = ["write_report"]
