"""Paired comparison of a lab run against saved baselines (per edit success)."""

import collections
import json
import sys
from math import comb


def load(path, config=None, offset=None):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if config and r.get("config") != config:
            continue
        if offset is not None and r.get("seed_offset", 0) != offset:
            continue
        if r.get("split") != "validation":
            continue
        if r.get("part") not in (None, "validation 0-33"):
            continue
        out[r["edit"]] = r
    return out


def sign_p(w, l):
    n = w + l
    if n == 0:
        return 1.0
    k = min(w, l)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


def report(name, new, base):
    common = sorted(set(new) & set(base))
    won = sum(new[e]["success"] > base[e]["success"] for e in common)
    lost = sum(new[e]["success"] < base[e]["success"] for e in common)
    kinds = collections.defaultdict(lambda: [0, 0, 0])
    for e in common:
        k = kinds[new[e]["kind"]]
        k[0] += new[e]["success"]
        k[1] += base[e]["success"]
        k[2] += 1
    ks = ", ".join(f"{k} {int(a)}/{int(b)} of {n}" for k, (a, b, n) in sorted(kinds.items()))
    ps = lambda d: int(sum(d[e]["preserved"] for e in common))
    es = lambda d: int(sum(d[e]["expressive"] for e in common))
    print(
        f"{name}: {int(sum(new[e]['success'] for e in common))} vs {int(sum(base[e]['success'] for e in common))} of {len(common)}; "
        f"won {won} lost {lost} p={sign_p(won, lost):.2f}; expr {es(new)} vs {es(base)}, pres {ps(new)} vs {ps(base)}; [{ks}]"
    )


if __name__ == "__main__":
    run, offset = sys.argv[1], int(sys.argv[2])
    D = "docs/lab/data/"
    report(
        "auto", load(run, "auto", None), load(D + "seeds-mask-guidance.jsonl", "auto mask_guidance=7", offset)
    )
    report(
        "oracle",
        load(run, "oracle", None),
        load(D + "seeds-mask-guidance-user.jsonl", "oracle mask_guidance=10", offset),
    )
