"""Lab (docs/lab/seeds.md, section 4): bench/localize.py's run_scenes on validation scenes FIRST..COUNT-1 only
(scenes the benchmark does not use). python bench/extra_validation.py 34 68 SEED OUT.jsonl CONFIG..."""
import json, sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
sys.path.insert(0, 'bench')
from localize import run_scenes

if __name__ == '__main__':
    first, count, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    configs = sys.argv[5:]
    scenes = list(range(first, count))
    shares = [scenes[k::2] for k in range(2)]
    with ProcessPoolExecutor(2, mp_context=get_context('spawn')) as pool:
        futures = [pool.submit(run_scenes, 'validation', share, count, configs, seed) for share in shares]
        rows = [row for f in futures for row in f.result()]
    open(out, 'w').write(''.join(json.dumps(r) + '\n' for r in rows))
    print(out, len(rows), {c: sum(r['success'] for r in rows if r['config'] == c) for c in configs})
