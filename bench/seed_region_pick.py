"""Lab (docs/lab/seeds.md): pick among the three seeds by how many regions the edit has against the base.
python bench/seed_region_pick.py validation 34 (after bench/seed_pick.py)"""
import json, sys, numpy as np
from PIL import Image
from unitune.regions import segments, background_label
from unitune.benchmark.edits import edit_set
split, count = sys.argv[1], int(sys.argv[2])
data = {d['edit']: d for d in json.load(open(f'runs/seedpick-{split}.json'))}
def nparts(px):
    lab = segments(px)
    sizes = np.bincount(lab.ravel())
    return int((sizes >= 12).sum())
res = []
for e in edit_set(split, count):
    d = data[e.name]
    panels = [np.asarray(Image.open(f'runs/seeds/{split}-{s}/{e.name}-auto.png').convert('RGB')) for s in (0,1,2)]
    base = panels[0][:, :64]
    nb = nparts(base)
    want = nb + (1 if e.kind == 'add' else 0)
    n = [nparts(p[:, 128:192]) for p in panels]
    d['nparts'] = n; d['want'] = want
    res.append(d)
def pick(d, rule):
    ev = np.array(d['read_none']).mean(1) - np.array(d['read_edit']).mean(1)
    off = np.abs(np.array(d['nparts']) - d['want'])
    if rule == 'parts': return int(np.lexsort((np.arange(3), off))[0])
    if rule == 'parts+ev': return int(np.lexsort((-ev, off))[0])
    if rule == 'parts+re': return int(np.lexsort((np.array(d['read_edit']).mean(1), off))[0])
    return 0
for rule in ['seed0', 'parts', 'parts+ev', 'parts+re']:
    ps = [pick(d, rule) for d in res]
    print(rule, sum(d['success'][p] for d, p in zip(res, ps)))
# how well does part count match success
ok = [(abs(n - d['want']) == 0, s) for d in res for n, s in zip(d['nparts'], d['success'])]
a = np.array(ok, dtype=float)
print('match rate', a[:,0].mean(), 'succ|match', a[a[:,0]==1,1].mean(), 'succ|mismatch', a[a[:,0]==0,1].mean())
