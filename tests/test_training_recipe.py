"""The embedded model's training recipe runs end to end, resumes, and exports a loadable pipeline."""

import json
import subprocess
import sys

import torch
from diffusers import AutoencoderTiny, StableDiffusionPipeline

from unitune.training.architecture import LATENT_STRIDE
from unitune.training.autoencoder import random_crops


def train(work, export, minutes, *extra):
    command = [
        sys.executable,
        "-m",
        "unitune.training",
        "--work",
        str(work),
        "--export",
        str(export),
        "--pool",
        "64",
        "--ae-minutes",
        str(minutes),
        "--unet-minutes",
        str(minutes),
        "--eval-every",
        "100",
        *extra,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def test_recipe_trains_resumes_and_exports(tmp_path):
    work, export = tmp_path / "work", tmp_path / "model"
    train(work, export, 0.05)
    first = json.loads((work / "denoiser.json").read_text())
    named = ("--named-scenes", "3", "--named-edits", "2")  # the named scenes' path runs too
    train(work, export, 0.1, *named)  # same folder, larger budget: continues from the checkpoint
    second = json.loads((work / "denoiser.json").read_text())
    assert first["step"] > 0 and second["step"] > first["step"]
    pipe = StableDiffusionPipeline.from_pretrained(export, safety_checker=None)
    assert isinstance(pipe.vae, AutoencoderTiny) and pipe.scheduler.config.prediction_type == "v_prediction"


def test_training_continues_from_an_exported_model(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(tmp_path / "work", first, 0.05)
    train(tmp_path / "again", second, 0, "--init-from", str(first))  # no training: a pure carry-over
    one, two = (StableDiffusionPipeline.from_pretrained(f, safety_checker=None) for f in (first, second))
    for name in ("vae", "unet", "text_encoder"):
        a, b = getattr(one, name).state_dict(), getattr(two, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert one.vae.config.scaling_factor == two.vae.config.scaling_factor
    runs = json.loads((second / "training-record.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0] == json.loads((first / "training-record.json").read_text())["runs"][0]
    assert "--init-from" in runs[1]["command"] and runs[1]["device"].startswith("cpu")
    assert runs[0]["unet_steps"] > 0 and runs[0]["unet_samples"] == runs[0]["unet_steps"] * 64


def test_caption_bank_holds_training_captions_of_each_scene():
    import random

    from transformers import CLIPTokenizer

    from unitune.shapes.world import caption, sample_scene, vocabulary
    from unitune.training.__main__ import TOKENIZER_ASSET
    from unitune.training.data import CaptionBank

    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(20)]
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_ASSET, model_max_length=32)
    bank = CaptionBank(scenes, tokenizer, variants=4, seed=3)
    assert bank.ids.shape == (20, 4, 32)
    assert torch.equal(bank.ids, CaptionBank(scenes, tokenizer, variants=4, seed=3).ids)  # seeded
    for scene, rows in zip(scenes, bank.ids, strict=True):
        for text in tokenizer.batch_decode(rows.long(), skip_special_tokens=True):
            words = set(text.split())
            assert words <= vocabulary()
            assert words & {scene.background, *(o.colour for o in scene.objects)} or not words
    amended = CaptionBank(scenes, tokenizer, variants=8, seed=3, amend_probability=0.5).ids
    longer = [  # only an amended caption is longer than the scene's full caption
        len(text.split()) > len(caption(scene).split())
        for scene, rows in zip(scenes, amended, strict=True)
        for text in tokenizer.batch_decode(rows.long(), skip_special_tokens=True)
    ]
    assert 0.3 < sum(longer) / len(longer) < 0.7


def test_init_from_a_folder_that_is_not_a_model_is_one_line(tmp_path):
    command = [sys.executable, "-m", "unitune.training", "--work", str(tmp_path / "w"), "--pool", "8"]
    result = subprocess.run(
        [*command, "--init-from", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not an exported pipeline folder" in result.stderr


def test_autoencoder_crops_lie_on_the_latent_grid():
    images = torch.arange(4 * 3 * 64 * 64, dtype=torch.float32).reshape(4, 3, 64, 64)
    crops = random_crops(images, 32, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 3, 32, 32)
    for image, crop in zip(images, crops, strict=True):
        offset = int((crop[0, 0, 0] - image[0, 0, 0]).item())  # the corner pixel tells where it came from
        y, x = divmod(offset, 64)
        assert y % LATENT_STRIDE == 0 and x % LATENT_STRIDE == 0
        assert torch.equal(crop, image[:, y : y + 32, x : x + 32])


def test_pool_is_the_same_for_any_number_of_rendering_processes():
    from unitune.training.data import render_pool

    one, two = render_pool(1000, seed=5), render_pool(1000, seed=5, workers=2)
    assert one.scenes == two.scenes and torch.equal(one.images, two.images)


def test_rare_prefix_puts_fillers_before_the_unchanged_caption():
    from transformers import CLIPTokenizer

    from unitune.shapes.world import vocabulary
    from unitune.training.__main__ import TOKENIZER_ASSET
    from unitune.training.data import RarePrefix, filler_token_ids

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_ASSET, model_max_length=24)
    fillers = filler_token_ids(tokenizer)
    words = set(tokenizer(sorted(vocabulary()), add_special_tokens=False).input_ids[0])
    assert not words & set(fillers.tolist()) and tokenizer.bos_token_id not in fillers
    texts = ["a red circle on a blue background", "", "a small green square"] * 20
    ids = tokenizer(texts, padding="max_length", max_length=24, return_tensors="pt").input_ids
    prefix = RarePrefix(fillers, probability=0.5, max_tokens=3)
    out = prefix.apply(ids, torch.Generator().manual_seed(0))
    assert torch.equal(out, prefix.apply(ids, torch.Generator().manual_seed(0)))  # seeded
    shifts = []
    for before, after in zip(ids, out, strict=True):
        shift = int(torch.isin(after, fillers).sum())  # captions hold only world words
        assert after[0] == tokenizer.bos_token_id and 0 <= shift <= 3
        assert torch.equal(after[1 + shift :], before[1 : len(before) - shift])  # caption intact, shifted
        shifts.append(shift)
    assert 0 in shifts and max(shifts) > 0  # some captions prefixed, some not
    assert torch.equal(RarePrefix(fillers, probability=0.0).apply(ids, torch.Generator()), ids)


def test_named_scenes_pair_a_name_with_a_scene_and_its_edits():
    from transformers import CLIPTokenizer

    from unitune.benchmark.edits import base_scenes
    from unitune.shapes.world import render
    from unitune.training.__main__ import TOKENIZER_ASSET
    from unitune.training.data import NamedScenes, filler_token_ids

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_ASSET, model_max_length=24)
    reserved = set(tokenizer("olis httr", add_special_tokens=False).input_ids)
    named = NamedScenes(6, 3, tokenizer, filler_token_ids(tokenizer), reserved=reserved, probability=0.5)
    assert len(named) == 6 * 4 and named.images.shape == (24, 3, 64, 64)
    benchmark = {repr(scene) for split in ("validation", "test") for scene in base_scenes(split, 100)}
    assert not {repr(scene) for scene in named.scenes} & benchmark  # its own seed, no benchmark scene
    for k, scene in enumerate(named.scenes):
        rows = named.ids[k * 4 : (k + 1) * 4]
        name = rows[0, 1:3]
        assert not set(name.tolist()) & reserved and rows[0, 3] == tokenizer.eos_token_id  # "NAME" alone
        assert all(torch.equal(row[1:3], name) for row in rows)  # each edit starts with the same name
        assert torch.equal(named.images[k * 4], torch.from_numpy(render(scene)).permute(2, 0, 1))
        assert all(not torch.equal(named.images[k * 4 + e], named.images[k * 4]) for e in (1, 2, 3))
    named.latents = torch.arange(24.0)[:, None, None, None].expand(24, 1, 2, 2)
    latents, ids = torch.full((64, 1, 2, 2), -1.0), torch.zeros(64, 24, dtype=torch.long)
    mixed, mixed_ids = named.mix(latents, ids, torch.Generator().manual_seed(0))
    swapped = mixed[:, 0, 0, 0] >= 0
    assert 0 < int(swapped.sum()) < 64 and not mixed_ids[~swapped].any()  # a share, not all
    for value, row in zip(mixed[swapped, 0, 0, 0].long(), mixed_ids[swapped], strict=True):
        assert torch.equal(row, named.ids[value])  # each swapped row keeps its own caption
