"""Lab (docs/lab/seeds.md): the untuned model's signals on the automatic mask's edits at three seeds, from
bench/localize.py --images runs/seeds/SPLIT-SEED runs. python bench/seed_pick.py validation 34 0,1,2"""

import json, sys
import numpy as np, torch
from PIL import Image
from unitune import Editor
from unitune.auto import timestep_errors
from unitune.pipelines import Conditioning
from unitune.tuning import encode_latent, encode_text
from unitune.benchmark.edits import edit_set

split, count = sys.argv[1], int(sys.argv[2])
seeds = [int(s) for s in sys.argv[3].split(",")]
torch.set_num_threads(2)
editor = Editor.load(device="cpu")
pipe, runtime = editor.pipe, editor.runtime
rows = {}
for s in seeds:
    for line in open(f"runs/seeds/{split}-{s}.jsonl"):
        r = json.loads(line)
        rows[(r["edit"], s)] = r
out = []
for edit in edit_set(split, count):
    if (edit.name, seeds[0]) not in rows:
        continue
    panels = [
        np.asarray(Image.open(f"runs/seeds/{split}-{s}/{edit.name}-auto.png").convert("RGB")) for s in seeds
    ]
    images = [Image.fromarray(p[:, 128:192]) for p in panels]
    masks = [p[:, 192:256, 0] > 127 for p in panels]
    words = edit.prompt
    latents = torch.cat([encode_latent(pipe, im, runtime) for im in images])
    embeds = Conditioning.cat([encode_text(pipe, words, runtime), encode_text(pipe, "", runtime)])
    err = timestep_errors(pipe, latents, embeds, runtime)  # (N, 2, T)
    pix = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    dist = [[float(np.abs(pix[i] - pix[j]).mean()) for j in range(len(seeds))] for i in range(len(seeds))]
    out.append(
        {
            "edit": edit.name,
            "kind": edit.kind,
            "words": words,
            "success": [rows[(edit.name, s)]["success"] for s in seeds],
            "expressive": [rows[(edit.name, s)]["expressive"] for s in seeds],
            "preserved": [rows[(edit.name, s)]["preserved"] for s in seeds],
            "read_edit": err[:, 0].tolist(),
            "read_none": err[:, 1].tolist(),
            "dist": dist,
            "coverage": [float(m.mean()) for m in masks],
        }
    )
json.dump(out, open(f"runs/seedpick-{split}.json", "w"))
print(len(out))
