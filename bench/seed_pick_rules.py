"""Lab (docs/lab/seeds.md): the pick rules over the three seeds of the automatic mask, from seed_pick.py's
runs/seedpick-SPLIT.json. python bench/seed_pick_rules.py validation"""

import json, sys, numpy as np

split = sys.argv[1]
data = json.load(open(f"runs/seedpick-{split}.json"))
for d in data:
    d["re_t"] = np.array(d["read_edit"])
    d["rn_t"] = np.array(d["read_none"])
    d["read_edit"] = d["re_t"].mean(1).tolist()
    d["read_none"] = d["rn_t"].mean(1).tolist()


def ev(d):
    return np.array(d["read_none"]) - np.array(d["read_edit"])


rules = {
    "seed0": lambda d: 0,
    "evidence": lambda d: int(np.argmax(ev(d))),
    "min_read_edit": lambda d: int(np.argmin(d["read_edit"])),
    "medoid": lambda d: int(np.argmin(np.sum(d["dist"], 1))),
    "max_outlier": lambda d: int(np.argmax(np.sum(d["dist"], 1))),
    "ev_low_t": lambda d: int(np.argmax((d["rn_t"] - d["re_t"])[:, :2].mean(1))),
    "ev_high_t": lambda d: int(np.argmax((d["rn_t"] - d["re_t"])[:, 2:].mean(1))),
    "ev_rel": lambda d: int(np.argmax(((d["rn_t"] - d["re_t"]) / d["rn_t"]).mean(1))),
    "min_read_none": lambda d: int(np.argmin(d["read_none"])),
}
n = len(data)
print(
    split,
    n,
    "per seed",
    [sum(d["success"][i] for d in data) for i in range(3)],
    "oracle",
    sum(max(d["success"]) for d in data),
)
for name, rule in rules.items():
    picks = [rule(d) for d in data]
    s = sum(d["success"][p] for d, p in zip(data, picks))
    kinds = {}
    for d, p in zip(data, picks):
        kinds.setdefault(d["kind"], []).append(d["success"][p])
    print(f"{name:15s} {s:5.0f} ", {k: f"{int(sum(v))}/{len(v)}" for k, v in kinds.items()})
# pairwise: among edits with mixed success, how often does each signal mark the successful one
mixed = [d for d in data if 0 < sum(d["success"]) < 3]
print("mixed", len(mixed))


def pair_acc(signal):
    right = total = 0
    for d in mixed:
        v = signal(d)
        for i in range(3):
            for j in range(3):
                if d["success"][i] > d["success"][j]:
                    total += 1
                    right += v[i] > v[j]
    return right, total


print("pairs evidence", pair_acc(ev), "neg read_edit", pair_acc(lambda d: -np.array(d["read_edit"])))
