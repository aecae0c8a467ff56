"""Tuning binds the image to R; the cache makes a second edit free; the UNet goes back to its base weights."""

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from unitune import Cancelled, EditSettings, TuneSettings
from unitune.cache import key_settings
from unitune.sampling import decode, to_pil
from unitune.tuning import encode_latent, encode_text, evaluate_loss

RECONSTRUCT = EditSettings(guidance=1.0, strength=1.0, steps=20, seed=0)


def tuned_loss(editor, image, tune: TuneSettings) -> float:
    latent = encode_latent(editor.pipe, image, editor.runtime)
    with editor.applied(editor.tune(image, tune)):
        text = encode_text(editor.pipe, tune.rare_prompt, editor.runtime)
        return evaluate_loss(editor.pipe, latent, text, editor.runtime)


def reconstruction_error(editor, image, tune: TuneSettings) -> tuple[float, float]:
    """(pixel MSE, latent MSE) of sampling "R" alone from pure noise against the base image.

    The tiny VAE is random, so its decoder cannot draw the base image itself; the pixel reference is
    the base image as this VAE reproduces it (decode(encode(base))), the best any sample can reach.
    """
    latent = encode_latent(editor.pipe, image, editor.runtime)
    reference = np.asarray(to_pil(decode(editor.pipe, latent, editor.runtime))[0], dtype=np.float64) / 255
    steps = []
    result = editor.edit(image, [""], RECONSTRUCT, tune, progress=lambda e: steps.append(e.latents))[0]
    pixel_mse = float(((np.asarray(result.image, dtype=np.float64) / 255 - reference) ** 2).mean())
    return pixel_mse, float(((steps[-1] - latent) ** 2).mean())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_full_tuning_lowers_loss_and_reconstructs(editor, base_image, prediction_type):
    config = editor.pipe.scheduler.config
    editor.pipe.scheduler = DDIMScheduler.from_config(config, prediction_type=prediction_type)
    # 96 steps: after 48 the random tiny VAE's pixels sit at 0.94-0.96 of the untuned error (by seed)
    before, after = TuneSettings(steps=0), TuneSettings(steps=96, learning_rate=1e-3)
    assert tuned_loss(editor, base_image, after) < 0.5 * tuned_loss(editor, base_image, before)
    pixels_before, latent_before = reconstruction_error(editor, base_image, before)
    pixels_after, latent_after = reconstruction_error(editor, base_image, after)
    assert pixels_after < 0.95 * pixels_before
    assert latent_after < 0.5 * latent_before


def test_lora_tuning_lowers_loss(editor, base_image):
    # 64 steps: on the tiny random UNet 32 steps of attention LoRA lower the loss by only 5-8% (by seed)
    lora = TuneSettings(method="lora", steps=64, learning_rate=1e-2, lora_rank=8)
    assert tuned_loss(editor, base_image, lora) < 0.95 * tuned_loss(editor, base_image, TuneSettings(steps=0))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_second_edit_reuses_the_tune(editor, base_image, method):
    tune, edit = TuneSettings(method=method, steps=3, seed=11), EditSettings(steps=2, strength=0.5)
    events = []
    editor.edit(base_image, ["a"], edit, tune, progress=lambda e: events.append(e.stage))
    assert events.count("tune") == 3
    events.clear()
    editor.edit(base_image, ["b", "c"], edit, tune, progress=lambda e: events.append(e.stage))
    assert events.count("tune") == 0 and events.count("sample") == 2
    editor.edit(
        base_image, ["a"], edit, TuneSettings(method=method, steps=3, seed=12), progress=events.append
    )
    assert sum(1 for e in events if getattr(e, "stage", None) == "tune") == 3


@pytest.mark.parametrize("method", ["full", "lora"])
def test_unet_back_to_base_weights_after_edit(editor, base_image, method):
    """An edit leaves its tune applied (for the next edit of the image); restore_base puts the base back."""
    before = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    tune = TuneSettings(method=method, steps=2, learning_rate=1e-2, seed=21)
    editor.edit(base_image, ["x"], EditSettings(steps=2), tune)
    assert any(not torch.equal(before[k], v) for k, v in editor.pipe.unet.state_dict().items())
    editor.restore_base()
    after = editor.pipe.unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_tuned_weights_differ_from_base(editor, base_image):
    tune = TuneSettings(steps=2, learning_rate=1e-2, seed=22)
    before = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    with editor.applied(editor.tune(base_image, tune)):
        changed = [k for k, v in editor.pipe.unet.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_cached_file_explains_itself(editor, base_image):
    from safetensors import safe_open

    result = editor.tune(base_image, TuneSettings(method="lora", steps=1, seed=31))
    with safe_open(str(result.path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["image_hash"] and metadata["model"] == editor.model
    assert '"method":"lora"' in metadata["settings"] and "diffusers" in metadata["versions"]


def test_stop_event_cancels_and_caches_nothing(editor, base_image):
    stop = threading.Event()
    stop.set()
    tune = TuneSettings(steps=5, seed=41)
    with pytest.raises(Cancelled):
        editor.tune(base_image, tune, should_stop=stop)
    assert not editor.cache.has(editor.tune_key(base_image, tune))


def test_two_editors_tuning_the_same_key_train_once(tiny_model, base_image, tmp_path):
    from unitune import Editor

    editors = [Editor.load(tiny_model, device="cpu", cache_dir=tmp_path) for _ in range(2)]
    tune, results = TuneSettings(steps=4, seed=51), []
    threads = [threading.Thread(target=lambda e=e: results.append(e.tune(base_image, tune))) for e in editors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.trained for r in results) == [False, True]
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors"] == [
        f"{results[0].key}.safetensors"
    ]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_stop_during_sampling_restores_the_unet(editor, base_image):
    before = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    tune = TuneSettings(method="lora", steps=2, learning_rate=1e-2, seed=61)
    edit = EditSettings(steps=4, strength=1)
    editor.tune(base_image, tune)
    calls = []
    with pytest.raises(Cancelled):
        editor.edit(base_image, ["x"], edit, tune, should_stop=lambda: calls.append(1) or len(calls) > 1)
    assert len(calls) == 2  # stopped inside the sampling loop, with the LoRA applied
    assert all(torch.equal(before[k], v) for k, v in editor.pipe.unet.state_dict().items())


def test_interpolation_pulls_unchanged_pixels_back_to_the_base(editor, base_image):
    def distance(weight: float) -> float:
        settings = EditSettings(guidance=1.0, strength=0.5, steps=4, interpolation=weight)
        image = editor.edit(base_image, [""], settings, TuneSettings(steps=0))[0].image
        return float(np.abs(np.asarray(image, dtype=np.float64) - np.asarray(base_image)).mean())

    assert distance(1.0) < distance(0.5) < distance(0.0)


def test_bfloat16_autocast_on_cpu_tunes_and_edits(tiny_model, base_image, tmp_path):
    from unitune import Editor

    editor = Editor.load(tiny_model, device="cpu", dtype="bf16", cache_dir=tmp_path)
    assert editor.runtime.dtype == torch.bfloat16
    tune = TuneSettings(method="lora", steps=2, seed=71)
    result = editor.edit(base_image, ["x"], EditSettings(steps=2), tune)[0]
    assert result.settings["dtype"] == "bfloat16" and result.image.size == (32, 32)
    float32_editor = Editor.load(tiny_model, device="cpu", cache_dir=tmp_path)
    assert editor.tune_key(base_image, tune) != float32_editor.tune_key(base_image, tune)


def test_merged_lora_predicts_what_the_adapter_does(editor, base_image):
    from unitune.tuning import load_lora, remove_lora

    tune = TuneSettings(method="lora", steps=2, learning_rate=1e-2, seed=81)
    tensors, _ = editor.cache.load(editor.tune(base_image, tune).key)
    unet = editor.pipe.unet
    latent = torch.randn(1, unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))

    def predict():
        with torch.no_grad():
            return unet(latent, 500, encoder_hidden_states=text).sample

    plain = predict()
    load_lora(unet, tensors, tune.lora_rank)
    adapted = predict()
    with editor.applied(editor.tune(base_image, tune)):
        assert not any("lora" in name for name in unet.state_dict())  # merged, no adapter layers left
        merged = predict()
    remove_lora(unet)
    assert not torch.allclose(adapted, plain, atol=1e-4)
    assert torch.allclose(merged, adapted, atol=1e-5)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_nothing_of_the_tune_stays_behind(editor, base_image, method):
    """After a tune: no gradients held, and the UNet's weights are the base weights, bit for bit."""
    before = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    editor.tune(base_image, TuneSettings(method=method, steps=2, seed=11))
    unet = editor.pipe.unet
    assert all(p.grad is None and not p.requires_grad for p in unet.parameters())
    after = unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_lora_on_all_layers_trains_the_convolutions_and_edits(editor, base_image):
    tune = TuneSettings(method="lora", steps=2, lora_targets="all", seed=12)
    tuned = editor.tune(base_image, tune)
    tensors, _ = editor.cache.load(tuned.key)
    assert any("conv1" in name for name in tensors) and any("to_q" in name for name in tensors)
    assert tuned.key != editor.tune_key(base_image, TuneSettings(method="lora", steps=2, seed=12))
    [result] = editor.edit(base_image, ["a"], EditSettings(steps=2, guidance=1.0), tune)
    assert result.settings["tune"]["lora_targets"] == "all"


def test_unknown_lora_targets_are_a_clear_error():
    from unitune import UnituneError

    with pytest.raises(UnituneError, match="LoRA targets"):
        TuneSettings(method="lora", lora_targets="everything")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_unet_weights_put_the_base_back_when_a_block_raises(editor, base_image, method):
    """weights.UNetWeights, the one owner of the swap: a tune applied (or in training) inside the block,
    the base weights again after it, bit for bit, also when the block fails."""
    from unitune.tuning import trainable_parameters

    unet, weights = editor.pipe.unet, editor.weights
    settings = editor.resolve_tune(TuneSettings(method=method, steps=2, learning_rate=1e-2, seed=91))
    tensors, _ = editor.train(base_image, settings)
    before = {k: v.clone() for k, v in unet.state_dict().items()}

    def is_base() -> bool:
        after = unet.state_dict()
        return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)

    with pytest.raises(RuntimeError), weights.applied(tensors, key_settings(settings)):
        assert not is_base()
        raise RuntimeError("an edit failed")
    assert is_base()
    with pytest.raises(RuntimeError), weights.training(settings):
        with torch.no_grad():
            for param in trainable_parameters(unet, method):
                param.add_(1.0)  # what a step of training changes
        unet.requires_grad_(False)
        raise RuntimeError("a tune failed")
    assert is_base()


def test_cosine_schedule_starts_at_the_rate_and_changes_the_tune(editor, base_image):
    """Step 1 runs at the full rate under either schedule, so the losses of steps 1 and 2 match; cosine
    lowers the rate of step 2 (to 0.75 of it, of 3 steps), so step 3's loss and the weights differ."""
    constant = TuneSettings(steps=3, learning_rate=1e-3, seed=5)
    cosine = TuneSettings(steps=3, learning_rate=1e-3, seed=5, lr_schedule="cosine")
    weights_constant, losses_constant = editor.train(base_image, constant)
    weights_cosine, losses_cosine = editor.train(base_image, cosine)
    assert losses_cosine[:2] == losses_constant[:2] and losses_cosine[2] != losses_constant[2]
    assert any(not torch.equal(weights_cosine[n], weights_constant[n]) for n in weights_constant)
    assert editor.tune_key(base_image, cosine) != editor.tune_key(base_image, constant)


def test_unknown_lr_schedule_is_a_clear_error():
    from unitune import UnituneError

    with pytest.raises(UnituneError, match="learning-rate schedule"):
        TuneSettings(lr_schedule="linear-ish")


def test_noise_weights_weigh_each_timestep_by_its_slice_of_the_schedule():
    from unitune.tuning import NoiseWeights

    weights = NoiseWeights((1, 1, 1, 0.25), total=1000, device="cpu")
    steps = torch.tensor([0, 249, 250, 749, 750, 999])
    mean = (1 + 1 + 1 + 0.25) / 4  # scaled to average 1 over the schedule
    expected = torch.tensor([1, 1, 1, 1, 0.25, 0.25]) / mean
    assert torch.allclose(weights(steps), expected)


def test_uniform_noise_weights_are_the_plain_tune_and_keep_its_key(editor, base_image):
    plain = TuneSettings(steps=3, learning_rate=1e-3, seed=5)
    weights_plain, losses_plain = editor.train(base_image, plain)
    for uniform in ("1", "2,2,2"):
        settings = replace(plain, noise_weights=uniform)
        weights, losses = editor.train(base_image, settings)
        assert losses == losses_plain and all(torch.equal(weights[n], weights_plain[n]) for n in weights)
        assert editor.tune_key(base_image, settings) == editor.tune_key(base_image, plain)


def test_noise_weights_change_the_tune_and_its_key(editor, base_image):
    plain = TuneSettings(steps=3, learning_rate=1e-3, seed=5)
    damped = replace(plain, noise_weights="1, 1, 1, 0.25")
    weights_plain, _ = editor.train(base_image, plain)
    weights_damped, _ = editor.train(base_image, damped)
    assert any(not torch.equal(weights_damped[n], weights_plain[n]) for n in weights_plain)
    assert editor.tune_key(base_image, damped) != editor.tune_key(base_image, plain)
    assert damped.resolved().noise_weights == "1,1,1,0.25"  # one spelling, one cache key


@pytest.mark.parametrize("text", ["", "a,b", "1,-1", "0,0", "1,inf", "nan"])
def test_bad_noise_weights_are_a_clear_error(text):
    from unitune import UnituneError

    with pytest.raises(UnituneError, match="noise weights"):
        TuneSettings(noise_weights=text)


def test_a_batch_of_timesteps_covers_the_schedule_in_equal_slices(editor):
    """Stratified draws: sample i of a batch of 4 lands in the i-th quarter of the 1000 steps, and the
    draws are repeatable from the tune's generator."""
    from unitune.tuning import noisy_batch, training_scheduler

    scheduler = training_scheduler(editor.pipe)
    latent = torch.zeros(1, 4, 8, 8)
    draws = []
    for _ in range(2):
        generator = torch.Generator("cpu").manual_seed(5)
        draws.append(torch.cat([noisy_batch(scheduler, latent, 4, generator)[1] for _ in range(50)]))
    steps = draws[0].view(50, 4)
    assert torch.equal(draws[0], draws[1])
    for index in range(4):
        assert ((steps[:, index] >= 250 * index) & (steps[:, index] < 250 * (index + 1))).all()
    assert len(set(steps[:, 0].tolist())) > 25  # still random within a slice


@pytest.mark.parametrize("targets", ["attention", "all"])
def test_a_lora_tune_with_half_precision_frozen_layers_trains_the_same_weights(
    tiny_model, base_image, tmp_path, targets
):
    """Under bfloat16 autocast, holding the frozen layers in bfloat16 (what a GPU LoRA tune does to save
    memory) computes the same losses and adapter weights, bit for bit, and leaves the float32 base."""
    from unitune import Editor
    from unitune.tuning import train

    editor = Editor.load(tiny_model, device="cpu", dtype="bf16", cache_dir=tmp_path)
    unet = editor.pipe.unet
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    image = editor.prepare_image(base_image)
    latent = encode_latent(editor.pipe, image, editor.runtime)
    text = encode_text(editor.pipe, "olis httr", editor.runtime, image.size)
    tune = TuneSettings(method="lora", steps=3, seed=5, learning_rate=1e-2, lora_targets=targets)
    results = []
    for frozen in (None, torch.bfloat16):
        with editor.weights.training(tune, frozen):
            dtypes = {p.dtype for name, p in unet.named_parameters() if "lora_" not in name}
            losses = train(editor.pipe, latent, text, tune, editor.runtime)
            results.append((dtypes, losses, editor.weights.tuned_tensors("lora")))
        after = unet.state_dict()
        assert after.keys() == base.keys()
        assert all(after[k].dtype == torch.float32 and torch.equal(after[k], base[k]) for k in base)
    (plain_dtypes, plain_losses, plain), (cast_dtypes, cast_losses, cast) = results
    assert plain_dtypes == {torch.float32} and cast_dtypes == {torch.float32, torch.bfloat16}  # norms
    assert cast_losses == plain_losses
    assert plain.keys() == cast.keys() and all(torch.equal(plain[k], cast[k]) for k in plain)
    assert all(tensor.dtype == torch.float32 for tensor in cast.values())


def test_cuda_graphs_are_off_on_the_cpu_and_a_bad_switch_is_a_clear_error():
    from unitune import UnituneError
    from unitune.graphs import wanted
    from unitune.loading import pick_runtime

    assert not pick_runtime("cpu").cuda_graphs
    assert pick_runtime("cpu", cuda_graphs="on").cuda_graphs  # asked for, still never used off CUDA
    assert not wanted(pick_runtime("cpu", cuda_graphs="on"), calls=100)
    with pytest.raises(UnituneError, match="cuda-graphs"):
        pick_runtime("cpu", cuda_graphs="maybe")
