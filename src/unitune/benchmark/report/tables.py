"""The report's tables: the setting chosen per method, the headline, per kind, per setting, binding."""

from __future__ import annotations

from ..binding import CEILING, summarise_binding
from ..selection import METHODS, Method, best_setting, by_kind, by_setting, oracle, summarise
from .cells import num, pct, rate

CEILING_TITLE = "(ceiling) autoencoder round trip of the base"


def choose(records: list[dict]) -> dict:
    """For each method: the setting chosen on validation and its validation and test summaries."""
    chosen = {}
    for method in METHODS:
        validation, test = method.records(records, "validation"), method.records(records, "test")
        label = best_setting(validation)
        if label is None:
            continue
        chosen[method.key] = {
            "method": method,
            "label": label,
            "validation": summarise(by_setting(validation)[label]),
            "test": summarise([r for r in test if r["label"] == label]),
            "test_records": [r for r in test if r["label"] == label],
        }
    return chosen


def oracles(records: list[dict]) -> dict[str, list[dict]]:
    return {
        family: oracle([r for r in records if r["family"] == family and r["split"] == "test"])
        for family in ("full", "lora")
        if any(r["family"] == family for r in records)
    }


def headline_rows(chosen: dict, oracle_rows: dict) -> list[str]:
    lines = [
        "| method | best fixed setting (validation) | val success | test expressive | test preserved | "
        "**test success** | PSNR target | SSIM target | PSNR base, untouched | SSIM base, untouched | "
        "edit s/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in chosen.values():
        title, label, validation = row["method"].title, f"`{row['label']}`", pct(row["validation"]["success"])
        lines.append(summary_row(title, label, validation, row["test"], num(row["test"]["seconds"], 2)))
    for family, rows in oracle_rows.items():
        title = f"(g) oracle: best of the {family} grid per edit (uses the ground truth)"
        lines.append(summary_row(title, "per edit", "-", summarise(rows), "-"))
    return lines


def summary_row(title: str, setting: str, validation: str, test: dict, seconds: str, method=True) -> str:
    """One row of the headline table: a method's (or an oracle's) test summary, its rates with their
    intervals and success in bold; with `method` False, a reference image's (plain rates)."""
    if method:
        expressive, preserved = rate(test, "expressive"), rate(test, "preserved")
        success = f"**{rate(test, 'success')}**"
    else:
        expressive, preserved, success = pct(test["expressive"]), pct(test["preserved"]), pct(test["success"])
    cells = [title, setting, validation, expressive, preserved, success]
    cells += [num(test["psnr_target"]), num(test["ssim_target"], 3)]
    cells += [num(test["psnr_base_untouched"]), num(test["ssim_base_untouched"], 3), seconds]
    return "| " + " | ".join(cells) + " |"


def reference_rows(config) -> list[str]:
    """The scores of the ideal target and of the unchanged base image: the analyzer's ceiling and the
    no-op floor (preserved, not expressive) on the same test edits."""
    from ...shapes.world import render
    from ..edits import edit_set
    from ..metrics import score

    edits = edit_set("test", config.test_scenes, config.kinds)
    lines = []
    for title, pick in (("ideal target image", "target"), ("no-op: the base image", "base")):
        rows = [score(render(getattr(e, pick)), e) for e in edits]
        rows = [{**r, "seconds": float("nan")} for r in rows]
        lines.append(summary_row(f"reference: {title}", "-", "-", summarise(rows), "-", method=False))
    return lines


def kind_rows(chosen: dict, oracle_rows: dict, kinds) -> list[str]:
    lines = ["| method (setting) | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]

    def cells(records: list[dict]) -> str:
        per = by_kind(records)
        return " | ".join(
            f"{rate(per[k], 'success')} (E {pct(per[k]['expressive'])}, P {pct(per[k]['preserved'])}; "
            f"n={per[k]['count']})"
            if k in per
            else "-"
            for k in kinds
        )

    for row in chosen.values():
        lines.append(f"| {row['method'].key} (`{row['label']}`) | {cells(row['test_records'])} |")
    for family, rows in oracle_rows.items():
        lines.append(f"| oracle {family} | {cells(rows)} |")
    return lines


def setting_table(method: Method, records: list[dict], chosen_label: str | None) -> list[str]:
    validation = by_setting(method.records(records, "validation"))
    test = by_setting(method.records(records, "test"))
    lines = [
        "| setting | val success | test expressive | test preserved | test success | PSNR target | "
        "PSNR base, untouched | SSIM base, untouched |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in sorted(test, key=_setting_order):
        v, t = summarise(validation.get(label, [])), summarise(test[label])
        mark = " **(chosen)**" if label == chosen_label else ""
        lines.append(
            f"| `{label}`{mark} | {pct(v['success'])} | {pct(t['expressive'])} | {pct(t['preserved'])} | "
            f"{rate(t, 'success')} | {num(t['psnr_target'])} | {num(t['psnr_base_untouched'])} | "
            f"{num(t['ssim_base_untouched'], 3)} |"
        )
    return lines


def _setting_order(label: str):
    """`g3 s0.8 i1` -> (3, 0.8, 1): numeric parts only (a `mask:user` part does not order)."""
    return tuple(float(part[1:]) for part in label.split() if ":" not in part)


def binding_rows(binding: list[dict]) -> list[str]:
    """Per tune method and guidance: R sampled alone from pure noise and from strength 0.8, read back as
    the base scene (analyzer) and its PSNR to the base (benchmark.binding)."""
    rows = [r for r in binding if r["split"] == "test"]
    if not rows:
        return ["(not measured in this run)"]
    lines = [
        "| tune | guidance | R from noise: same scene | PSNR median | same and >= 28 dB "
        "| R at 0.8: same scene | PSNR median | same and >= 28 dB |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def group(row):
        return row["family"], row.get("decoder", "tune"), row["guidance"]

    tunes = sorted(
        {group(r) for r in rows if r["family"] != CEILING}, key=lambda g: (g[0], g[1] != "tune", g[2])
    )
    for family, decoder, guidance in [*tunes, (CEILING, "tune", None)]:
        summary = summarise_binding([r for r in rows if group(r) == (family, decoder, guidance)])
        if not summary:
            continue
        name = family if decoder == "tune" else f"{family}, the model's decoder"
        cells = [name, f"{guidance:g}"] if guidance is not None else [CEILING_TITLE, "-"]
        for strength in (1.0, 0.8):
            part = summary.get(strength)
            cells += (
                [pct(part["same_scene"]), num(part["psnr_median"]), pct(part["bound"])] if part else ["-"] * 3
            )
        lines.append("| " + " | ".join(cells) + " |")
    scenes = len({r["scene"] for r in rows})
    lines += [
        "",
        f"{scenes} test scenes; the same tune as the edits below (targets: >= 90% same and >= 28 dB). "
        "The last row is the base encoded and decoded by the model's autoencoder, no tune and no sampling: "
        "no tune redraws a scene better than its own latent decodes, so it is the ceiling of the UNet's "
        "tune; a tune with a decoder fit (`decoder_steps`) also fits the decoder to the image, which can "
        "pass it. Rows marked \"the model's decoder\" decode the same samples with the model's own decoder: "
        "what the UNet's tune alone draws.",
    ]
    return lines
