"""Lab (docs/lab/outline.md, section 3): base | target | edit | mask rows for named edits under kind_dials configs.
python bench/kind_panel.py validation NAME,NAME ";plate=2,plate_invert=1" out.png"""

import sys

sys.path.insert(0, "bench")
import kind_dials as K, numpy as np
from dataclasses import replace
from PIL import Image
from unitune import Editor
from unitune.benchmark.edits import edit_set
from unitune.shapes.world import render_pil

split, names, cfgs, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(";"), sys.argv[4]
editor = Editor.load(device="cpu", cache_dir=f"runs/localize-cache-{split}")
d = editor.default_edit_settings()
edits = {e.name: e for e in edit_set(split, K.SCENES[split])}
rows = []
for n in names:
    e = edits[n]
    tiles = [render_pil(e.base), render_pil(e.target)]
    for cfg in cfgs:
        c, v, s = K.parse(cfg)
        for name, value in {**K.ORIGINAL, **c}.items():
            setattr(K.regions, name, value)
        K.patch(v)
        [r] = editor.edit(render_pil(e.base), [e.prompt], replace(d, seed=e.scene, **s))
        tiles += [r.image, r.mask.convert("RGB") if r.mask else Image.new("RGB", (64, 64))]
    print(n, e.prompt)
    rows.append(
        np.concatenate([np.asarray(t.convert("RGB").resize((128, 128), Image.NEAREST)) for t in tiles], 1)
    )
Image.fromarray(np.concatenate(rows, 0)).save(out)
