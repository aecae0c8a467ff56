"""Localised edits: a user's mask or DiffEdit's estimate from the tune, the base kept outside it."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from unitune import EditSettings, TuneSettings, UnituneError
from unitune.images import fit
from unitune.localize import difference_map, load_mask, read_mask, threshold, thresholded
from unitune.pipelines import Conditioning
from unitune.sampling import decode, to_pil

TUNE = TuneSettings(steps=2, learning_rate=5e-2, seed=91)


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def _mask_file(tmp_path, value: int, size=(32, 32), name="mask.png"):
    path = tmp_path / name
    Image.new("L", size, value).save(path)
    return path


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_an_all_white_mask_gives_the_unlocalised_edit_bit_for_bit(editor, base_image, tmp_path, strength):
    settings = EditSettings(steps=4, strength=strength, guidance=3.0, seed=2)
    [plain] = editor.edit(base_image, ["a red circle"], settings, TUNE)
    [masked] = editor.edit(base_image, ["a red circle"], settings, TUNE, mask=_mask_file(tmp_path, 255))
    assert np.array_equal(_pixels(plain.image), _pixels(masked.image))
    assert plain.mask is None and plain.settings["mask_source"] is None
    assert masked.settings["mask_source"] == "user" and masked.settings["mask_coverage"] == 1.0


def test_a_localised_edit_samples_with_the_mask_guidance(editor, base_image, tmp_path):
    """With an all-white mask, `mask_guidance` 6 gives the unlocalised edit at guidance 6 bit for bit;
    an edit without a mask keeps `guidance`."""
    settings = EditSettings(steps=4, strength=0.6, guidance=3.0, seed=2, mask_guidance=6.0)
    [masked] = editor.edit(base_image, ["a red circle"], settings, TUNE, mask=_mask_file(tmp_path, 255))
    [strong] = editor.edit(
        base_image, ["a red circle"], EditSettings(steps=4, strength=0.6, guidance=6.0, seed=2), TUNE
    )
    [plain] = editor.edit(base_image, ["a red circle"], settings, TUNE)
    [weak] = editor.edit(
        base_image, ["a red circle"], EditSettings(steps=4, strength=0.6, guidance=3.0, seed=2), TUNE
    )
    assert np.array_equal(_pixels(masked.image), _pixels(strong.image))
    assert np.array_equal(_pixels(plain.image), _pixels(weak.image))
    assert not np.array_equal(_pixels(strong.image), _pixels(weak.image))
    assert masked.settings["mask_guidance"] == 6.0


def test_the_automatic_mask_has_a_guidance_of_its_own():
    """`auto_mask_guidance` is the guidance inside the automatic mask only: a user's mask keeps
    `mask_guidance`, an unlocalised edit `guidance`; unset, the automatic mask falls back to
    `mask_guidance`."""
    from unitune.sample_batches import SampleRequest

    def guidance(settings: EditSettings, user_mask: bool, words: str | None = "a red circle") -> float:
        mask = torch.ones(1, 1, 8, 8) if user_mask else None
        return SampleRequest("olis a red circle", settings, 0, "edit", words, "olis", mask).guidance()

    both = EditSettings(guidance=3.0, localize="auto", mask_guidance=10.0, auto_mask_guidance=7.0)
    assert guidance(both, user_mask=False) == 7.0
    assert guidance(both, user_mask=True) == 10.0
    assert guidance(replace(both, localize="off"), user_mask=False) == 3.0
    assert guidance(both, user_mask=False, words=None) == 3.0  # R alone is not localised
    assert guidance(replace(both, auto_mask_guidance=None), user_mask=False) == 10.0


def test_a_given_mask_guidance_reaches_the_automatic_mask_over_a_model_default():
    """Flags or a batch job's settings over a model's defaults: `mask_guidance` alone drops the model's
    `auto_mask_guidance`, so the automatic mask falls back to the user's value; given, each is kept."""
    from unitune.settings import over_defaults

    model = EditSettings(mask_guidance=10.0, auto_mask_guidance=7.0)
    assert over_defaults(model, {"mask_guidance": 12.0}).auto_mask_guidance is None
    assert over_defaults(model, {"guidance": 3.0}).auto_mask_guidance == 7.0
    both = over_defaults(model, {"mask_guidance": 12.0, "auto_mask_guidance": 5.0})
    assert (both.mask_guidance, both.auto_mask_guidance) == (12.0, 5.0)


def test_a_localised_sweep_samples_at_its_own_guidances(editor, base_image):
    """The sweep's guidance axis is what its cells sample with, localised or not: no mask guidance."""
    settings = EditSettings(steps=3, seed=2, localize="auto", mask_ratio=1.0, mask_guidance=9.0)
    sweep = editor.sweep(base_image, "a red circle", [2.0, 4.0], [0.6], settings, TUNE)
    [single] = editor.edit(
        base_image,
        ["a red circle"],
        EditSettings(**{**settings.to_dict(), "guidance": 4.0, "strength": 0.6, "mask_guidance": None}),
        TUNE,
    )
    assert [r.settings["guidance"] for r in sweep.results] == [2.0, 4.0]
    assert all(r.settings["mask_guidance"] is None for r in sweep.results)
    assert np.array_equal(_pixels(sweep.results[1].image), _pixels(single.image))


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_an_all_black_mask_returns_the_base_images_own_reconstruction(editor, base_image, tmp_path, strength):
    """Nothing may change: every step ends on the base noised to the next timestep, the last on the base's
    latent itself, which decodes as the autoencoder's reconstruction of the image."""
    settings = EditSettings(steps=4, strength=strength, guidance=3.0, seed=2)
    [kept] = editor.edit(base_image, ["a red circle"], settings, TUNE, mask=_mask_file(tmp_path, 0))
    base = fit(base_image, editor.work_size(base_image.size))
    pipe, runtime = editor.pipe, editor.runtime
    pixels = pipe.image_processor.preprocess(base)
    with torch.no_grad():
        latent = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    reconstruction = to_pil(decode(pipe, latent, runtime))[0]
    assert np.abs(_pixels(kept.image) - _pixels(reconstruction)).max() <= 1  # float rounding of the blend
    assert kept.settings["mask_coverage"] == 0.0


@pytest.mark.parametrize("value", [0, 255])
def test_the_pixel_composite_puts_the_bases_own_pixels_back_outside_the_mask(
    editor, base_image, tmp_path, value
):
    """With --mask-composite an all-black mask returns the base image itself (not its reconstruction);
    an all-white one the unlocalised edit."""
    settings = EditSettings(steps=4, strength=0.6, guidance=3.0, seed=2, mask_composite=True)
    [result] = editor.edit(base_image, ["x"], settings, TUNE, mask=_mask_file(tmp_path, value))
    base = fit(base_image, editor.work_size(base_image.size))
    if value == 0:
        assert np.array_equal(_pixels(result.image), _pixels(base))
    else:
        [plain] = editor.edit(
            base_image, ["x"], EditSettings(steps=4, strength=0.6, guidance=3.0, seed=2), TUNE
        )
        assert np.array_equal(_pixels(result.image), _pixels(plain.image))


def test_a_half_mask_keeps_the_base_latent_on_the_kept_side_only(editor, base_image, tmp_path):
    """White on the right: after the last step the left latent columns are the base's latent, the right
    ones the edit's own (pixels mix across the seam in the autoencoder, latents do not; the right side is
    not the unmasked edit's, as the UNet sees the kept side at every step)."""
    settings = EditSettings(steps=4, strength=1.0, guidance=3.0, seed=2)
    right = np.zeros((32, 32), np.uint8)
    right[:, 16:] = 255
    Image.fromarray(right).save(tmp_path / "right.png")

    def last_latents(mask):
        seen = []
        record = lambda event: seen.append(event.latents)  # noqa: E731
        editor.edit(base_image, ["x"], settings, TUNE, progress=record, mask=mask)
        return seen[-1]

    plain, half = last_latents(None), last_latents(tmp_path / "right.png")
    base = fit(base_image, editor.work_size(base_image.size))
    pipe = editor.pipe
    with torch.no_grad():
        latent = pipe.vae.encode(pipe.image_processor.preprocess(base)).latent_dist.mode()
    latent = latent * pipe.vae.config.scaling_factor
    side = latent.shape[-1] // 2
    assert torch.allclose(half[..., :side], latent[..., :side], atol=1e-6)
    assert not torch.allclose(half[..., side:], latent[..., side:], atol=1e-2)  # the edit's own there
    assert not torch.allclose(plain[..., :side], latent[..., :side], atol=1e-2)  # kept only with a mask


@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
def test_an_automatic_mask_that_lets_everything_change_gives_the_unlocalised_edit(
    editor, base_image, scheduler
):
    """Threshold 0: every cell whose readings differ at all may change. Estimating the mask must leave
    the sampler's scheduler as it was (a scheduler with a begin index would otherwise start elsewhere)."""
    import diffusers

    editor.pipe.scheduler = getattr(diffusers, scheduler).from_config(editor.pipe.scheduler.config)
    settings = EditSettings(steps=5, strength=0.6, guidance=3.0, seed=4)
    [plain] = editor.edit(base_image, ["a red circle", "x"], settings, TUNE)[:1]
    auto = EditSettings(**{**settings.to_dict(), "localize": "auto", "mask_threshold": 0.0})
    [everywhere] = editor.edit(base_image, ["a red circle", "x"], auto, TUNE)[:1]
    assert everywhere.settings["mask_coverage"] == 1.0
    assert np.array_equal(_pixels(plain.image), _pixels(everywhere.image))


class _RegionUNet(torch.nn.Module):
    """A stand-in UNet whose prediction reads the text only inside rows 1-2, columns 3-5 of the latent:
    where two prompts can disagree."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"in_channels": 4})()
        self.dtype = torch.float32

    def forward(self, sample, t, encoder_hidden_states, return_dict=False):
        region = torch.zeros_like(sample)
        region[:, :, 1:3, 3:6] = 1.0
        text = encoder_hidden_states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return (0.1 * sample + region * text,)


def test_the_estimated_mask_is_at_latent_size_binary_and_covers_where_the_readings_differ(editor):
    pipe, runtime = editor.pipe, editor.runtime
    unet, pipe.unet = pipe.unet, _RegionUNet()
    try:
        latent = torch.randn(1, 4, 6, 8, generator=torch.Generator().manual_seed(0))
        edit = Conditioning(torch.full((1, 3, 2), 1.0))
        reference = Conditioning(torch.full((1, 3, 2), -1.0))
        difference = difference_map(pipe, latent, edit, reference, EditSettings(), seed=0, runtime=runtime)
        mask = thresholded(difference, EditSettings())
    finally:
        pipe.unet = unet
    expected = torch.zeros(1, 1, 6, 8)
    expected[:, :, 1:3, 3:6] = 1.0
    assert mask.shape == (1, 1, 6, 8) and torch.equal(mask, expected)


def test_the_estimate_on_a_tuned_model_reads_the_edit_words(editor, base_image):
    """After a tune, "R a green background" and "R" differ somewhere and the mask says where: binary, at
    latent size, not empty; its settings and mask image ride with the edit."""
    settings = EditSettings(steps=4, strength=0.8, guidance=3.0, localize="auto", mask_ratio=1.5)
    [result] = editor.edit(base_image, ["a green background"], settings, TUNE)
    mask = np.asarray(result.mask)
    assert result.mask.size == result.image.size and mask.max() == 255
    assert result.settings["mask_source"] == "auto" and 0 < result.settings["mask_coverage"] <= 1
    assert result.settings["localize"] == "auto" and result.settings["mask_draws"] == 10


def test_the_untuned_reading_compares_the_edit_words_with_none_before_the_tune(editor, base_image):
    """--mask-reading untuned: the mask comes from the model before the tune, and the tune is in place
    again for the edit itself (the same pixels as a user's copy of that mask would give)."""
    settings = EditSettings(steps=4, strength=0.8, guidance=3.0, localize="auto", mask_reading="untuned")
    [result] = editor.edit(base_image, ["a green background"], settings, TUNE)
    assert result.settings["mask_reading"] == "untuned" and result.settings["mask_source"] == "auto"
    tuned = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    [again] = editor.edit(base_image, ["a green background"], settings, TUNE)
    assert np.array_equal(_pixels(result.image), _pixels(again.image))
    assert all(torch.equal(tuned[k], v) for k, v in editor.pipe.unet.state_dict().items())


def test_threshold_follows_diffusers_generate_mask():
    """Clamp at ratio x mean, divide by the max, keep what is above the cut; dilation grows it."""
    difference = torch.tensor([[[[0.0, 1.0, 2.0, 9.0]]]])  # mean 3: clamp at 3 -> 0, 1/3, 2/3, 1
    assert threshold(difference, 1.0, 0.5, 0).flatten().tolist() == [0, 0, 1, 1]
    assert threshold(difference, 3.0, 0.5, 0).flatten().tolist() == [0, 0, 0, 1]
    assert threshold(difference, 3.0, 0.5, 1).flatten().tolist() == [0, 0, 1, 1]


def test_a_mask_of_another_size_is_resized_and_a_painted_layers_alpha_is_the_mask(tmp_path):
    assert load_mask(_mask_file(tmp_path, 255, size=(64, 16)), (32, 32)).shape == (1, 1, 32, 32)
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (0, 0, 4, 8))  # a red stroke on the left: its colour does not matter
    mask = load_mask(layer, (8, 8))
    assert mask[..., :4].min() == 1.0 and mask[..., 4:].max() == 0.0


def test_a_grown_mask_takes_the_largest_value_within_the_disk_around_each_pixel():
    """`mask_grow` 2: one white pixel becomes the 13-pixel disk of radius 2 (the benchmark's true region
    grown by 2 px is the same shape); a grey pixel grows grey, and white wins where both reach."""
    canvas = np.zeros((9, 9), np.uint8)
    canvas[4, 4], canvas[0, 8] = 255, 128
    grown = load_mask(Image.fromarray(canvas), (9, 9), grow=2)[0, 0]
    assert (grown == 1.0).sum() == 13 and grown[4, 2] == grown[2, 4] == 1.0 and grown[3, 2] == 0.0
    assert grown[0, 6] == pytest.approx(128 / 255) and grown[1, 7] == pytest.approx(128 / 255)
    plain = load_mask(Image.fromarray(canvas), (9, 9), grow=0)[0, 0]
    assert torch.equal(plain > 0, torch.from_numpy(canvas > 0))


def test_the_api_grows_a_users_mask_by_mask_grow_and_saves_the_grown_one(editor, base_image):
    """The mask an edit reports (and the CLI saves) is the one it used: the user's, grown."""
    small = Image.new("L", base_image.size, 0)
    small.paste(255, (12, 12, 20, 20))
    settings = EditSettings(steps=2, seed=1, mask_grow=3)
    grown = editor.edit(base_image, ["a red square"], settings, mask=small)[0]
    plain = editor.edit(base_image, ["a red square"], replace(settings, mask_grow=0), mask=small)[0]
    assert grown.settings["mask_coverage"] > plain.settings["mask_coverage"] > 0
    assert np.asarray(grown.mask)[10, 16] == 255 and np.asarray(plain.mask)[10, 16] == 0


def test_each_prompt_can_have_its_own_mask_and_gets_what_it_would_alone(editor, base_image, tmp_path):
    """A list of masks, one per prompt, sampled in one batch: each edit equals that prompt edited alone
    with its mask (None: unmasked); a list of the wrong length is a one-line error."""
    settings = EditSettings(steps=3, strength=0.8, guidance=3.0, seed=4, sample_batch=4)
    left = Image.new("L", base_image.size, 0)
    left.paste(255, (0, 0, base_image.width // 2, base_image.height))
    prompts = ["a red circle", "a blue square", "a green circle"]
    masks = [left, None, _mask_file(tmp_path, 0, base_image.size)]
    together = editor.edit(base_image, prompts, settings, TUNE, mask=masks)
    for prompt, mask, result in zip(prompts, masks, together, strict=True):
        [alone] = editor.edit(base_image, [prompt], settings, TUNE, mask=mask)
        assert np.array_equal(_pixels(alone.image), _pixels(result.image))
        assert (result.mask is None) == (mask is None)
    assert together[0].settings["mask_coverage"] == pytest.approx(0.5, abs=0.1)
    with pytest.raises(UnituneError, match="2 masks for 3 prompts"):
        editor.edit(base_image, prompts, settings, TUNE, mask=[left, left])


@pytest.mark.parametrize("content", [b"", b"not an image", None], ids=["empty", "text", "missing"])
def test_a_bad_mask_file_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "mask.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnituneError, match="not a readable mask image"):
        read_mask(path)


@pytest.mark.parametrize("content", [b"", b"not an image"], ids=["empty", "text"])
def test_the_cli_refuses_a_bad_mask_with_exit_code_2_and_writes_nothing(tmp_path, base_image, content):
    from unitune.cli import app

    image, mask, out = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "out"
    base_image.save(image)
    mask.write_bytes(content)
    result = CliRunner().invoke(app, ["edit", str(image), "x", "--mask", str(mask), "--out", str(out)])
    assert result.exit_code == 2 and "not a readable mask image" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_the_cli_writes_each_edits_mask_beside_it(tmp_path, base_image, tiny_model):
    from unitune.cli import app

    image, out = tmp_path / "in.png", tmp_path / "out"
    base_image.save(image)
    args = ["edit", str(image), "x", "--model", tiny_model, "--out", str(out), "--cache-dir", str(tmp_path)]
    args += ["--tune-steps", "0", "--steps", "2", "--mask", str(_mask_file(tmp_path, 255, size=(7, 5)))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [png] = [p for p in out.glob("*.png") if not p.stem.endswith("-mask")]
    mask = png.with_name(png.stem + "-mask.png")
    assert mask.exists() and Image.open(mask).size == Image.open(png).size
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"][0]["settings"]["mask_source"] == "user"


def test_mask_settings_are_checked():
    for bad in (
        dict(localize="maybe"),
        dict(mask_reading="both"),
        dict(mask_draws=0),
        dict(mask_strength=0.0),
        dict(mask_ratio=0.0),
        dict(mask_threshold=1.0),
        dict(mask_dilation=-1),
        dict(mask_grow=-1),
        dict(mask_grow=10_000),
        dict(mask_guidance=-1.0),
        dict(mask_guidance=float("nan")),
        dict(auto_mask_guidance=-1.0),
        dict(auto_mask_guidance=float("inf")),
    ):
        with pytest.raises(UnituneError):
            EditSettings(**bad)


def test_bench_localize_reads_its_configs_and_scores_masks():
    """bench/localize.py's smoke test: its config grammar, its IoU and its report on two records."""
    from test_gpu_check import bench_module

    bench = bench_module("localize")
    config = bench.parse_config("auto ratio=1.5 strength=1 dilation=1")
    assert config == {"localize": "auto", "mask_ratio": 1.5, "strength": 1.0, "mask_dilation": 1}
    with pytest.raises(SystemExit):
        bench.parse_config("auto nonsense=1")
    truth = np.zeros((4, 4), bool)
    truth[:2] = True
    assert bench.iou(truth, truth) == 1.0 and bench.iou(~truth, truth) == 0.0
    rows = [
        {
            "split": "v",
            "edit": "e",
            "kind": "colour",
            "config": c,
            "success": s,
            "expressive": s,
            "preserved": 1,
        }
        for c, s in (("off", 0.0), ("auto", 1.0))
    ]
    rows[1].update(mask_iou=0.5, mask_coverage=0.25)
    text = bench.report(rows)
    assert "colour 0.50 (0.25)" in text and "auto vs off: 1 wins, 0 losses" in text


def test_a_localised_edit_on_a_v_prediction_model(tmp_path, base_image):
    """The estimate reads the model's raw output: for v-prediction, its difference between the prompts."""
    from tiny import save_tiny_pipeline
    from unitune import Editor

    folder = save_tiny_pipeline(tmp_path / "v", prediction_type="v_prediction")
    editor = Editor.load(str(folder), device="cpu", cache_dir=tmp_path / "cache")
    settings = EditSettings(steps=4, strength=0.8, guidance=3.0, localize="auto", mask_ratio=1.5)
    [result] = editor.edit(base_image, ["a green background"], settings, TUNE)
    assert result.settings["mask_source"] == "auto" and 0 < result.settings["mask_coverage"] <= 1


def test_the_estimate_equals_diffusers_generate_mask_on_the_same_latent_and_seed(editor):
    """Our estimator is DiffEdit's as diffusers ships it (StableDiffusionDiffEditPipeline.generate_mask):
    the same latent, the same seed for the noise draws, the same prompts, the same mask. diffusers guides
    both readings against the empty prompt (its path without guidance fails); guidance scales their
    difference by g, which the rule divides out, so ours reads them unguided."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionDiffEditPipeline

    from unitune.sampling import encode_prompts

    pipe, runtime = editor.pipe, editor.runtime
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    diffedit = StableDiffusionDiffEditPipeline(
        **{k: v for k, v in pipe.components.items() if k not in ("image_encoder",)},
        inverse_scheduler=DDIMInverseScheduler.from_config(pipe.scheduler.config),
        requires_safety_checker=False,
    )
    diffedit.set_progress_bar_config(disable=True)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    settings = EditSettings(steps=10, mask_draws=6, mask_strength=0.5, mask_ratio=1.5)
    theirs = diffedit.generate_mask(
        image=latent,
        source_prompt="a red square",
        target_prompt="a blue circle on a green background",
        num_maps_per_mask=settings.mask_draws,
        mask_encode_strength=settings.mask_strength,
        mask_thresholding_ratio=settings.mask_ratio,
        num_inference_steps=settings.steps,
        generator=torch.Generator().manual_seed(11),
        output_type="np",
    )
    size = (64, 64)
    edit = encode_prompts(pipe, "a blue circle on a green background", "", False, runtime, size)
    reference = encode_prompts(pipe, "a red square", "", False, runtime, size)
    ours = thresholded(
        difference_map(pipe, latent, edit, reference, settings, seed=11, runtime=runtime), settings
    )
    assert 0 < ours.sum() < ours.numel()  # a mask with both sides, so the comparison means something
    assert np.array_equal(ours[0, 0].numpy(), np.asarray(theirs)[0].astype(np.float32))
