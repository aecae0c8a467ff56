"""How many timesteps and noises should the automatic dial's untuned reading use?

`unitune.auto` reads each candidate with the untuned weights at SCORE_TIMESTEPS (four timesteps, one
fixed noise each): `evidence = read_none - read_edit`. A noisier estimate picks worse between candidates
that are close. Here every candidate of `bench/auto_candidates.py` (same sweep, seeds, scoring and ground
truth; the product is untouched) also gets the untuned error difference (no words minus the edit's words)
at each of DENSE_TIMESTEPS with NOISES fixed noises, kept per (timestep, noise) as `reading`, so that
`--rules` can replay any subset: the shipped four, more timesteps, more noises, other ranges. A
benchmark, not a test.

Usage: HF_HUB_OFFLINE=1 python bench/auto_reading.py --tune full:128:1e-4 --scenes 0:16 --threads 1 \\
           --out a.json                      # defaults: guidance 3, strengths 0.6,0.8,1, tail 0.2
       python bench/auto_reading.py --rules a.json b.json
"""

from __future__ import annotations

import collections
import json

import auto_candidates
import numpy as np
import torch

import unitune.api
from unitune.auto import SCORE_TIMESTEPS, Signals, score_candidates, timestep_errors
from unitune.pipelines import Conditioning
from unitune.tuning import encode_latent, encode_text

DENSE_TIMESTEPS = tuple(range(50, 1000, 50))  # 19 timesteps; the shipped four are among them
NOISES = 2
DENSE_SEED = 0  # its own noises: the dial's (SCORE_SEED, one per shipped timestep) are drawn differently


class ReadSignals(Signals):
    """The dial's signals plus the dense reading (kept in `to_dict`)."""

    def __init__(self, signals: Signals, reading: list[float]):
        super().__init__(signals.fit_edit, signals.fit_base, signals.read_edit, signals.read_none)
        object.__setattr__(self, "reading", reading)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "reading": self.reading}


def dense_reading(pipe, latents: torch.Tensor, edit_prompt: str, runtime, size) -> torch.Tensor:
    """(N, T, K): the untuned error under no words minus under the edit's words, per candidate,
    timestep and noise (the UNet must already hold the untuned weights)."""
    embeds = Conditioning.cat([encode_text(pipe, prompt, runtime, size) for prompt in ("", edit_prompt)])
    steps = [t for t in DENSE_TIMESTEPS for _ in range(NOISES)]
    errors = timestep_errors(pipe, latents, embeds, runtime, timesteps=steps, seed=DENSE_SEED)
    return (errors[:, 0] - errors[:, 1]).view(len(latents), len(DENSE_TIMESTEPS), NOISES)


def reading_scores(pipe, images, rare_prompt: str, edit_prompt: str, runtime, weights) -> list[Signals]:
    signals = score_candidates(pipe, images, rare_prompt, edit_prompt, runtime, weights, tuned=True)
    latents = encode_latent(pipe, images, runtime)
    with weights.untuned():
        reading = dense_reading(pipe, latents, edit_prompt, runtime, images[0].size)
    return [ReadSignals(s, reading[i].tolist()) for i, s in enumerate(signals)]


def measure(args, first: int, last: int) -> list[dict]:
    unitune.api.score_candidates = reading_scores
    return auto_candidates.measure(args, first, last)


def subset_evidence(row: dict, timesteps, noises) -> float:
    reading = np.array(row["reading"])  # (T, K)
    index = [DENSE_TIMESTEPS.index(t) for t in timesteps]
    return float(reading[index][:, :noises].mean())


READINGS = {
    "shipped (4 t, its own noise)": None,
    "same 4 t, 1 noise": (SCORE_TIMESTEPS, 1),
    "same 4 t, 2 noises": (SCORE_TIMESTEPS, 2),
    "8 t (100-800), 1 noise": (tuple(range(100, 900, 100)), 1),
    "8 t (250-950), 1 noise": ((250, 350, 450, 550, 650, 750, 850, 950), 1),
    "10 t (50-950), 1 noise": (tuple(range(50, 1000, 100)), 1),
    "19 t, 1 noise": (DENSE_TIMESTEPS, 1),
    "19 t, 2 noises": (DENSE_TIMESTEPS, 2),
    "low 4 t (50-200)": ((50, 100, 150, 200), 2),
    "mid 4 t (400-550)": ((400, 450, 500, 550), 2),
    "high 4 t (800-950)": ((800, 850, 900, 950), 2),
}


def replay(rows: list[dict]) -> None:
    edits = collections.defaultdict(list)
    for row in rows:
        edits[(row["scene"], row["edit"], row.get("seed_offset", 0))].append(row)
    groups = list(edits.values())
    oracle = sum(any(r["success"] for r in g) for g in groups)
    print(f"{len(groups)} edits (x seeds), oracle {oracle}")
    for name, choice in READINGS.items():

        def score(row, choice=choice):
            return row["evidence"] if choice is None else subset_evidence(row, *choice)

        hits = sum(max(g, key=score)["success"] for g in groups)
        right = total = 0
        for g in groups:
            for a in g:
                for b in g:
                    if a["success"] and not b["success"]:
                        total, right = total + 1, right + (score(a) > score(b))
        print(f"{name}: {hits} successes, pairwise {right / max(total, 1):.0%} of {total}")


def main() -> None:
    parser = auto_candidates.measuring_parser(guidances="3", strengths="0.6,0.8,1", tails="0.2")
    args = parser.parse_args()
    if args.rules:
        replay([row for path in args.rules for row in json.load(open(path))])
        return
    auto_candidates.measure_and_save(args, measure)


if __name__ == "__main__":
    main()
