"""Training data for the embedded model: a seeded pool of rendered scenes held as tensors, and a bank of
caption variants per scene, drawn and tokenized once up front so that a training step does no Python
per sample (see `world.training_caption` for how parts of a caption are dropped).

`RarePrefix` puts a few random filler tokens (any token no caption uses) in front of some captions, so the
text encoder reads a caption the same way whatever precedes it: UniTune samples "R edit", R being rare
tokens, and a text encoder that had only seen captions start at position 1 misreads the edit after R
(model v2 drew "olis httr a red circle on a green background" as green shapes on red).

`NamedScenes` gives a few scenes a name of two filler tokens and trains "NAME" on the scene and "NAME
fragment" on the scene edited as the fragment says (the edit benchmark's five kinds, drawn from their own
seed): the grammar UniTune asks of the model after its tune, with the name standing where R stands."""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..benchmark.edits import EDIT_KINDS, MAKERS
from ..shapes.world import Scene, amended_caption, render, sample_scene, training_caption, vocabulary

NAMED_SEED = 5  # named scenes' own stream (the benchmark's splits use 4101 and 4202)
TRAIN_SEED = 1  # held-out evaluation scenes use other seeds (see unitune.shapes.quality)


@dataclass
class ScenePool:
    scenes: list[Scene]
    images: torch.Tensor  # (N, 3, 64, 64) uint8

    def __len__(self) -> int:
        return len(self.scenes)

    def image_batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], float32, (B, 3, 64, 64), on the pool's device."""
        return self.images[indices.to(self.images.device)].float().div(127.5).sub(1.0)


def render_pool(count: int, seed: int = TRAIN_SEED, workers: int = 1) -> ScenePool:
    """`count` scenes drawn in order from `seed` (the same scenes for any `workers`), rendered in
    `workers` processes."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(count)]
    if workers > 1 and count >= 1000:
        with ProcessPoolExecutor(workers) as executor:
            images = list(executor.map(render, scenes, chunksize=256))
    else:
        images = [render(scene) for scene in scenes]
    return ScenePool(scenes, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous())


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (N, model_max_length), padded and truncated to the tokenizer's length."""
    return tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


class CaptionBank:
    """`variants` training captions per scene, tokenized once: (N, variants, max_tokens) token ids. With
    `amend_probability`, a variant is an amended caption (`world.amended_caption`) instead."""

    def __init__(
        self, scenes: list[Scene], tokenizer, variants: int = 8, seed: int = 0, amend_probability: float = 0.0
    ):
        rng = random.Random(seed)
        captions = [
            amended_caption(scene, rng)
            if amend_probability and rng.random() < amend_probability  # no draw at 0: older runs' captions
            else training_caption(scene, rng)
            for scene in scenes
            for _ in range(variants)
        ]
        distinct = sorted(set(captions))  # a small vocabulary: far fewer distinct captions than draws
        ids = tokenize(tokenizer, distinct).to(torch.int32)
        position = {text: index for index, text in enumerate(distinct)}
        rows = torch.tensor([position[text] for text in captions])
        self.ids = ids[rows].view(len(scenes), variants, -1)

    @property
    def variants(self) -> int:
        return self.ids.shape[1]

    def to(self, device) -> CaptionBank:
        self.ids = self.ids.to(device)
        return self

    def batch(self, scene_indices: torch.Tensor, variant_indices: torch.Tensor) -> torch.Tensor:
        """Token ids (B, max_tokens) of the chosen variant of each scene, as int64 on the bank's device."""
        device = self.ids.device
        return self.ids[scene_indices.to(device), variant_indices.to(device)].long()


def filler_token_ids(tokenizer) -> torch.Tensor:
    """Every token id except the special tokens and the tokens of the world's caption words."""
    used = set(tokenizer.all_special_ids)
    for word in vocabulary():
        used.update(tokenizer(word, add_special_tokens=False).input_ids)
    return torch.tensor(sorted(set(range(len(tokenizer))) - used))


@dataclass
class RarePrefix:
    """With `probability`, 1..`max_tokens` filler tokens inserted after the start token (the caption shifts
    right; the padding at the end absorbs it)."""

    fillers: torch.Tensor  # candidate token ids, (F,)
    probability: float = 0.3
    max_tokens: int = 3

    def apply(self, ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`ids` (B, T) with prefixes, drawn from the CPU `generator` (the same on any device)."""
        rows, length = ids.shape
        lengths = torch.randint(1, self.max_tokens + 1, (rows,), generator=generator)
        lengths = lengths * (torch.rand(rows, generator=generator) < self.probability)
        picks = self.fillers[torch.randint(len(self.fillers), (rows, self.max_tokens), generator=generator)]
        lengths, picks = lengths.to(ids.device), picks.to(ids.device, ids.dtype)
        positions = torch.arange(length, device=ids.device).expand(rows, -1)
        source = (positions - lengths[:, None]).clamp(min=0)
        shifted = ids.gather(1, source)
        in_prefix = (positions >= 1) & (positions <= lengths[:, None])
        filler = picks.gather(1, (positions - 1).clamp(0, self.max_tokens - 1))
        return torch.where(in_prefix, filler, shifted)


def render_images(scenes: list[Scene]) -> torch.Tensor:
    """(N, 3, 64, 64) uint8."""
    return torch.from_numpy(np.stack([render(scene) for scene in scenes])).permute(0, 3, 1, 2).contiguous()


def random_edit(base: Scene, rng: random.Random) -> tuple[Scene, str]:
    """One edit of `base` of a random kind that applies to it: (target scene, fragment)."""
    while True:
        made = MAKERS[rng.choice(EDIT_KINDS)](base, rng)
        if made is not None:
            return made[0], made[1]


def with_name(ids: torch.Tensor, name: torch.Tensor) -> torch.Tensor:
    """Token ids (B, T) with the name's tokens (B, K) inserted after the start token (the padding at the
    end absorbs the shift)."""
    return torch.cat([ids[:, :1], name, ids[:, 1:]], dim=1)[:, : ids.shape[1]]


class NamedScenes:
    """`count` scenes, each named by two filler tokens (none of `reserved`, i.e. R's), with `edits` edited
    versions: row k * (1 + edits) is scene k ("NAME"), the next `edits` rows its edits ("NAME fragment").
    `mix` swaps a share of a training batch for these rows."""

    def __init__(
        self,
        count: int,
        edits: int,
        tokenizer,
        fillers: torch.Tensor,
        reserved: set[int] = frozenset(),
        probability: float = 0.3,
        base_share: float = 0.4,
        seed: int = NAMED_SEED,
    ):
        rng = random.Random(seed)
        self.count, self.edits = count, edits
        self.probability, self.base_share = probability, base_share
        self.scenes = [sample_scene(rng, num_objects=1 + index % 2) for index in range(count)]
        targets, fragments = [], []
        for base in self.scenes:
            targets.append(base)
            fragments.append("")
            for _ in range(edits):
                target, fragment = random_edit(base, rng)
                targets.append(target)
                fragments.append(fragment)
        self.images = render_images(targets)
        choices = [int(token) for token in fillers if int(token) not in reserved]
        names = torch.tensor([rng.sample(choices, 2) for _ in range(count)])
        self.ids = with_name(tokenize(tokenizer, fragments), names.repeat_interleave(1 + edits, dim=0))
        self.latents: torch.Tensor | None = None  # (rows, C, h, w), scaled, set once the pool is encoded

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device) -> NamedScenes:
        self.ids = self.ids.to(device)
        if self.latents is not None:
            self.latents = self.latents.to(device)
        return self

    def mix(
        self, latents: torch.Tensor, ids: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch with a `probability` share of its rows replaced by named rows: a random scene, itself
        with `base_share`, else one of its edits (drawn from the CPU `generator`)."""
        rows = len(latents)
        chosen = torch.rand(rows, generator=generator) < self.probability
        scene = torch.randint(self.count, (rows,), generator=generator)
        edit = torch.randint(1, self.edits + 1, (rows,), generator=generator)
        edit = edit * (torch.rand(rows, generator=generator) >= self.base_share)
        named = (scene * (1 + self.edits) + edit).to(self.ids.device)
        chosen = chosen.to(latents.device)
        latents = torch.where(chosen[:, None, None, None], self.latents[named], latents)
        ids = torch.where(chosen[:, None], self.ids[named], ids)
        return latents, ids
