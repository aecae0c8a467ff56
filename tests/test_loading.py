"""Loading like users load: hub ids with revisions, diffusers folders, checkpoint files with the configs the
package ships (offline), overrides of prediction type and size, one-line errors for what cannot load."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from unitune import Editor, TuneSettings, UnituneError
from unitune.loading import (
    _CROSS_ATTENTION,
    _UNET_INPUT,
    _XL_BASE,
    _XL_REFINER,
    checkpoint_family,
    config_dir,
    load_pipeline,
    model_identity,
)

# published parameter counts: UNet, VAE, text encoder(s)
PUBLISHED = {
    "sd1": (859_520_964, 83_653_863, [123_060_480]),
    "sd2": (865_910_724, 83_653_863, [340_387_840]),
    "sdxl": (2_567_463_684, 83_653_863, [123_060_480, 694_659_840]),
}


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_shipped_configs_build_the_published_models(family):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = config_dir(family)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        encoders = [CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))]
        if family == "sdxl":
            config = CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
            encoders.append(CLIPTextModelWithProjection(config))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert (count(unet), count(vae), [count(e) for e in encoders]) == PUBLISHED[family]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == (
        "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline"
    )


def fake_checkpoint(path, shapes: dict[str, tuple]) -> str:
    """A .safetensors file with the given keys (tiny tensors of those shapes' ranks and telling sizes)."""
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path))
    return str(path)


@pytest.mark.parametrize(
    ("shapes", "family"),
    [
        ({_UNET_INPUT: (1, 4, 1, 1), _CROSS_ATTENTION: (1, 768)}, "sd1"),
        ({_UNET_INPUT: (1, 4, 1, 1), _CROSS_ATTENTION: (1, 1024)}, "sd2"),
        ({_UNET_INPUT: (1, 4, 1, 1), _CROSS_ATTENTION: (1, 2048), _XL_BASE: (1,)}, "sdxl"),
    ],
)
def test_checkpoint_files_are_told_apart_by_their_keys(tmp_path, shapes, family):
    from pathlib import Path

    assert checkpoint_family(Path(fake_checkpoint(tmp_path / "model.safetensors", shapes))) == family


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"some.other.weight": (2, 2)}, "not a Stable Diffusion checkpoint"),
        ({_UNET_INPUT: (1, 9, 1, 1), _CROSS_ATTENTION: (1, 768)}, "9 input channels"),
        ({_UNET_INPUT: (1, 4, 1, 1), _XL_REFINER: (1,)}, "an SDXL refiner"),
    ],
)
def test_what_cannot_load_is_one_line(tmp_path, shapes, message):
    file = fake_checkpoint(tmp_path / "model.safetensors", shapes)
    with pytest.raises(UnituneError, match=message) as error:
        Editor.load(file, device="cpu", cache_dir=tmp_path / "cache")
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_safetensors_is_one_line(tmp_path):
    file = tmp_path / "broken.safetensors"
    file.write_bytes(b"\xff" * 100)
    with pytest.raises(UnituneError, match="not a readable safetensors file"):
        load_pipeline(str(file))


@pytest.mark.parametrize(
    ("family", "prediction_type", "pad_token"),
    [("sd1", None, "<|endoftext|>"), ("sd2", None, "!"), ("sd2", "epsilon", "!"), ("sdxl", None, None)],
)
def test_a_checkpoint_file_loads_with_the_shipped_configs_offline(
    tiny_model, tmp_path, monkeypatch, family, prediction_type, pad_token
):
    """What unitune hands diffusers' from_single_file: the shipped config folder, local files only, the
    packaged tokenizers, the scheduler with any override. (diffusers' conversion of real SD weights is not
    run here: that needs a real checkpoint.)"""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from tiny import tiny_xl_pipeline

    cross = {"sd1": 768, "sd2": 1024, "sdxl": 2048}[family]
    shapes = {_UNET_INPUT: (1, 4, 1, 1), _CROSS_ATTENTION: (1, cross)}
    file = fake_checkpoint(
        tmp_path / "model.safetensors", {**shapes, **({_XL_BASE: (1,)} if family == "sdxl" else {})}
    )
    seen = {}

    def from_single_file(cls, path, **kwargs):
        seen.update(kwargs, path=path, cls=cls)
        if cls is StableDiffusionXLPipeline:
            return tiny_xl_pipeline()
        return StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)

    for cls in (StableDiffusionPipeline, StableDiffusionXLPipeline):
        monkeypatch.setattr(cls, "from_single_file", classmethod(from_single_file))
    pipe = load_pipeline(file, prediction_type=prediction_type)
    assert seen["path"] == file and seen["local_files_only"] is True
    assert seen["config"] == str(config_dir(family))
    expected = prediction_type or {"sd1": "epsilon", "sd2": "v_prediction", "sdxl": "epsilon"}[family]
    assert seen["scheduler"].config.prediction_type == expected
    if family == "sdxl":
        assert seen["cls"] is StableDiffusionXLPipeline and seen["tokenizer_2"].pad_token == "!"
        assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    else:
        assert seen["tokenizer"].pad_token == pad_token and seen["safety_checker"] is None
        assert type(pipe).__name__ == "StableDiffusionImg2ImgPipeline"


def test_prediction_type_and_native_size_overrides(tiny_model, tmp_path, base_image):
    plain = Editor.load(tiny_model, device="cpu", cache_dir=tmp_path)
    other = Editor.load(
        tiny_model, device="cpu", cache_dir=tmp_path, prediction_type="v_prediction", native_size=48
    )
    assert other.pipe.scheduler.config.prediction_type == "v_prediction" and other.native_size == 48
    assert other.prepare_image(base_image).size == (48, 48)
    tune = TuneSettings(steps=1)
    assert other.tune_key(base_image, tune) != plain.tune_key(base_image, tune)
    with pytest.raises(UnituneError, match="unknown prediction type"):
        Editor.load(tiny_model, device="cpu", cache_dir=tmp_path, prediction_type="sample")


def test_a_hub_id_with_a_revision_loads_that_revision_offline(tiny_model, tmp_path, monkeypatch):
    import huggingface_hub

    repo = tmp_path / "hub" / "models--org--tiny"
    for revision in ("1" * 40, "2" * 40):
        shutil.copytree(tiny_model, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    main = model_identity("org/tiny", load_pipeline("org/tiny"))
    pinned = model_identity(f"org/tiny@{'2' * 40}", load_pipeline(f"org/tiny@{'2' * 40}"))
    assert main != pinned and pinned.endswith(f":org/tiny@{'2' * 40}")
    with pytest.raises(UnituneError, match="could not load"):
        load_pipeline(f"org/tiny@{'3' * 40}")


def test_a_folder_of_another_pipeline_kind_is_one_line(tiny_model, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(tiny_model, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}))
    with pytest.raises(UnituneError, match="a FluxPipeline; unitune edits with Stable Diffusion"):
        load_pipeline(str(folder))


def ldm_pipeline(family: str):
    """A tiny diffusers pipeline in the layout of SD 1.x, SD 2.x (OpenCLIP, linear projections) or SDXL."""
    from diffusers import StableDiffusionPipeline

    from ldm import sd_layout_unet
    from tiny import tiny_components, tiny_xl_pipeline
    from unitune.loading import clip_tokenizer

    if family == "sdxl":
        return tiny_xl_pipeline()
    components = {**tiny_components(), "unet": sd_layout_unet(use_linear_projection=family == "sd2")}
    if family == "sd2":
        components["tokenizer"] = clip_tokenizer("!")
    return StableDiffusionPipeline(**components, requires_safety_checker=False)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_a_checkpoint_file_loads_offline_through_diffusers_conversion(
    tmp_path, monkeypatch, base_image, family
):
    """A tiny pipeline written in its family's original checkpoint layout (tests/ldm.py) loads with a local
    config folder, as the shipped ones are used, nothing fetched: the same weights, the same edits as from
    its diffusers folder. (The real-size shipped configs are checked by parameter count above.)"""
    import numpy as np

    import unitune.loading
    from ldm import to_ldm
    from unitune import EditSettings

    pipe = ldm_pipeline(family)
    folder = tmp_path / "diffusers"
    pipe.save_pretrained(folder)
    configs = tmp_path / "configs" / family  # what the package ships: configs, no weights, no tokenizer
    names = ["unet", "vae", "text_encoder", "scheduler"] + (["text_encoder_2"] if family == "sdxl" else [])
    for name in names:
        shutil.copytree(
            folder / name, configs / name, ignore=shutil.ignore_patterns("*.safetensors", "*.bin")
        )
    shutil.copy(folder / "model_index.json", configs / "model_index.json")
    file = tmp_path / f"tiny-{family}.safetensors"
    save_file(to_ldm(pipe), str(file))
    monkeypatch.setattr(unitune.loading, "config_dir", lambda _: configs)
    monkeypatch.setattr(unitune.loading, "checkpoint_family", lambda path, allow_pickle=False: family)
    prediction_type = "epsilon" if family == "sd2" else None  # the folder's scheduler says epsilon too
    loaded = Editor.load(
        str(file), device="cpu", cache_dir=tmp_path / "cache", prediction_type=prediction_type
    )
    for name in names[:-1] if family != "sdxl" else [n for n in names if n != "scheduler"]:
        ours, theirs = getattr(loaded.pipe, name).state_dict(), getattr(pipe, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    from_folder = Editor.load(str(folder), device="cpu", cache_dir=tmp_path / "cache")
    settings, no_tune = EditSettings(steps=3, strength=0.6, seed=1), TuneSettings(steps=0)
    a = loaded.edit(base_image, ["x"], settings, no_tune)[0].image
    b = from_folder.edit(base_image, ["x"], settings, no_tune)[0].image
    # Bit for bit holds on any processor because both loaders leave every weight at a fresh, 64-byte
    # aligned address (loading.align_weights): CPU kernels may sum in another order for unaligned
    # weights, which moved a pixel by one level on some machines (issue 38).
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_weights_loaded_from_a_folder_sit_on_aligned_addresses(tmp_path):
    """A diffusers folder's safetensors are memory-mapped views at any offset; after Editor.load every
    CPU parameter and buffer starts on a 64-byte boundary, as a freshly allocated tensor does."""
    from tiny import save_tiny_xl_pipeline
    from unitune.loading import WEIGHT_ALIGNMENT

    folder = save_tiny_xl_pipeline(tmp_path / "model")
    pipe = Editor.load(str(folder), device="cpu", cache_dir=tmp_path / "cache").pipe
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    assert tensors and all(t.data_ptr() % WEIGHT_ALIGNMENT == 0 for t in tensors)


def test_align_weights_moves_only_what_is_unaligned():
    from unitune.loading import align_weights

    layer = torch.nn.Linear(3, 2)
    backing = torch.arange(7.0)
    layer.weight.data = backing[1:7].view(2, 3)  # 4 bytes past an aligned start
    aligned_bias = layer.bias.data

    class Pipe:
        components = {"layer": layer, "name": "not a module"}

    assert align_weights(Pipe) == 1
    assert layer.weight.data_ptr() % 64 == 0 and torch.equal(layer.weight, backing[1:7].view(2, 3))
    assert layer.bias.data_ptr() == aligned_bias.data_ptr()
