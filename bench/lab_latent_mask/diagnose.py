"""Why localised edits fail: read each failed edit's saved panel and name what went wrong."""

import collections
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from unitune.benchmark.edits import edit_set
from unitune.benchmark.metrics import ATTRIBUTES, REQUESTED, match_by_position
from unitune.shapes.analyzer import analyze

run, folder, config = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
edits = {e.name: e for e in edit_set("validation", 34)}
slug = config.replace(" ", "_").replace("=", "")
modes = collections.Counter()
for line in open(run):
    r = json.loads(line)
    if r["config"] != config or r["success"]:
        continue
    e = edits[r["edit"]]
    panel = Image.open(folder / f"{e.name}-{slug}.png").convert("RGB")
    w = panel.width // 4
    out = np.asarray(panel.crop((2 * w, 0, 3 * w, panel.height)))
    read = analyze(out)
    t = e.target
    kept = [o for i, o in enumerate(t.objects) if e.kind != "add" or i != e.index]
    matches, left = match_by_position(read, kept)
    why = []
    if read.background != t.background:
        why.append(f"bg {read.background}!={t.background}")
    extra = len(left) - (1 if e.kind == "add" else 0)
    if extra > 0:
        why.append(f"extra {extra}: " + ",".join(f"{o.size} {o.colour} {o.shape}" for o in left))
    for i, (o, m) in enumerate(zip(kept, matches)):
        if m is None:
            why.append(f"obj{i} missing")
            continue
        for a in ATTRIBUTES:
            if getattr(m, a) != getattr(o, a):
                req = e.kind in REQUESTED and i == e.index and a == REQUESTED[e.kind]
                why.append(f"obj{i} {a} {getattr(m, a)}!={getattr(o, a)}" + (" (asked)" if req else ""))
    for w_ in why:
        modes[(e.kind, w_.split(" ")[0] if not w_.startswith("obj") else "obj " + w_.split(" ")[1])] += 1
    print(e.kind, e.name, e.prompt, "|", "; ".join(why))
print()
for k, v in sorted(modes.items()):
    print(k, v)
