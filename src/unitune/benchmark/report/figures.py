"""The report's figures: the fidelity-expressiveness trade-off and example edits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..selection import METHODS, by_setting, pareto_front, summarise


def plot_tradeoff(records: list[dict], chosen: dict, oracle_rows: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    for axis, x_key, x_title in (
        (axes[0], "preserved", "preservation rate (test)"),
        (axes[1], "psnr_base_untouched", "PSNR to base on the untouched region, dB (test)"),
    ):
        for index, method in enumerate(m for m in METHODS if m.key not in ("full-noise", "lora-noise")):
            groups = by_setting(method.records(records, "test"))
            if not groups:
                continue
            points = [(summarise(g)[x_key], summarise(g)["expressive"]) for g in groups.values()]
            colour = f"C{index}"
            axis.scatter(*zip(*points, strict=True), s=14, alpha=0.35, color=colour)
            front = pareto_front([p for p in points if all(map(math.isfinite, p))])
            axis.plot(*zip(*front, strict=True), "-o", ms=4, color=colour, label=method.key)
            if method.key in chosen:
                best = chosen[method.key]["test"]
                axis.scatter(
                    [best[x_key]], [best["expressive"]], marker="*", s=180, color=colour, edgecolor="k"
                )
        for index, (family, rows) in enumerate(oracle_rows.items()):
            s = summarise(rows)
            axis.scatter(
                [s[x_key]],
                [s["expressive"]],
                marker="X",
                s=120,
                color=f"C{6 + index}",
                label=f"oracle {family}",
            )
        axis.set_ylim(-0.03, 1.03)
        if x_key == "preserved":
            axis.set_xlim(-0.03, 1.03)
        axis.set_xlabel(x_title)
        axis.set_ylabel("expressiveness rate (test)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    figure.suptitle(
        "fidelity vs expressiveness: each point a setting; line = Pareto front; star = chosen on validation"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_examples(results, chosen: dict, path: Path) -> Path | None:
    """Base, ideal target and each method's chosen setting, for the example test edits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...shapes.world import render
    from ..edits import edit_set

    names = sorted({name for name, _, _ in results.examples})
    if not names:
        return None
    columns = [(key, row["method"].family, row["label"]) for key, row in chosen.items()]
    edits = {e.name: e for e in edit_set("test", 1, results.config.kinds)}
    figure, axes = plt.subplots(
        len(names), 2 + len(columns), figsize=(1.6 * (2 + len(columns)), 1.7 * len(names))
    )
    axes = np.atleast_2d(axes)
    for row, name in enumerate(names):
        edit = edits[name]
        panels = [("base", render(edit.base)), (f"target: {edit.prompt}", render(edit.target))]
        panels += [
            (f"{key} {label}", results.examples.get((name, family, label))) for key, family, label in columns
        ]
        for column, (title, image) in enumerate(panels):
            axis = axes[row, column]
            axis.axis("off")
            if image is not None:
                axis.imshow(image, interpolation="nearest")
            axis.set_title(title, fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
