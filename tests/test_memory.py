"""Fitting a 24 GB card: a tune stays applied across edits; gradient checkpointing; the optimizer."""

import numpy as np
import pytest
import torch

from unitune import EditSettings, TuneSettings, UnituneError
from unitune.cache import key_settings
from unitune.images import fit
from unitune.loading import Runtime
from unitune.progress import RunControl
from unitune.sample_batches import SampleRequest, sample_requests
from unitune.tuning import make_optimizer, uses_checkpointing

EDIT = EditSettings(steps=2, strength=0.6, guidance=3.0)
CUDA = Runtime(torch.device("cuda"), torch.float16)
CPU = Runtime(torch.device("cpu"), torch.float32)


def count_calls(monkeypatch, owner, name: str) -> list:
    calls, original = [], getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_applied_tune_stays_applied_across_edits_of_the_same_key(editor, base_image, monkeypatch, method):
    import safetensors.torch

    tune = TuneSettings(method=method, steps=2, learning_rate=1e-2, seed=91)
    first = editor.edit(base_image, ["a"], EDIT, tune)[0]
    reads = count_calls(monkeypatch, safetensors.torch, "load_file")
    loads = count_calls(monkeypatch, editor.pipe.unet, "load_state_dict")
    again = editor.edit(base_image, ["a"], EDIT, tune)[0]
    sweep = editor.sweep(base_image, "a", [3.0], [0.6], EDIT, tune)
    assert reads == [] and loads == []  # no tune file read, no weights copied
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert np.array_equal(np.asarray(first.image), np.asarray(sweep.results[0].image))
    editor.restore_base()  # from the base again: the file is read and applied, the same pixels come out
    fresh = editor.edit(base_image, ["a"], EDIT, tune)[0]
    assert len(reads) == 1 and np.array_equal(np.asarray(first.image), np.asarray(fresh.image))


def test_generate_and_another_tune_put_the_base_back_first(editor, base_image):
    base = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    editor.edit(base_image, ["a"], EDIT, TuneSettings(steps=2, learning_rate=1e-2, seed=92))
    plain = editor.generate("a", EDIT)[0]
    assert all(torch.equal(base[k], v) for k, v in editor.pipe.unet.state_dict().items())
    editor.restore_base()
    assert np.array_equal(np.asarray(plain.image), np.asarray(editor.generate("a", EDIT)[0].image))
    lora = TuneSettings(method="lora", steps=2, learning_rate=1e-2, seed=93)
    editor.edit(base_image, ["a"], EDIT, TuneSettings(steps=2, learning_rate=1e-2, seed=92))
    editor.edit(base_image, ["a"], EDIT, lora)  # full tune out, LoRA in
    editor.restore_base()
    assert all(torch.equal(base[k], v) for k, v in editor.pipe.unet.state_dict().items())


def test_gradient_checkpointing_gives_the_same_weights(editor, base_image, monkeypatch):
    import torch.utils.checkpoint

    image = editor.prepare_image(base_image)
    plain = TuneSettings(steps=2, seed=94, gradient_checkpointing="off").resolved()
    weights, losses = editor.train(image, plain)
    calls = count_calls(monkeypatch, torch.utils.checkpoint, "checkpoint")
    checkpointed = TuneSettings(steps=2, seed=94, gradient_checkpointing="on").resolved()
    weights_again, losses_again = editor.train(image, checkpointed)
    assert calls and losses == losses_again
    assert all(torch.equal(weights[name], weights_again[name]) for name in weights)
    assert not editor.pipe.unet.is_gradient_checkpointing  # off again after the tune
    assert editor.tune_key(image, plain) == editor.tune_key(image, checkpointed)


def test_checkpointing_by_default_when_the_tune_would_not_fit_the_free_cuda_memory(monkeypatch):
    unet = torch.nn.Linear(1000, 1000)  # ~1M weights: a full tune adds 12 MB of gradients and moments
    latent = torch.zeros(1, 4, 8, 8)  # 64 positions x batch 4: 164 MB of activations
    free_gb = {"value": 80.0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free_gb["value"] * 1e9, 80e9))

    def uses(method="full", checkpointing="auto", runtime=CUDA):
        settings = TuneSettings(method=method, gradient_checkpointing=checkpointing)
        return uses_checkpointing(settings, runtime, unet, latent)

    assert not uses() and not uses("lora")  # plenty of room: the faster way
    free_gb["value"] = 0.19  # 90% of it holds a LoRA's activations, not a full tune's extra 12 MB too
    assert uses() and not uses("lora")
    free_gb["value"] = 0.1
    assert uses("lora") and not uses(runtime=CPU)  # never by default on the CPU
    assert uses("lora", "on", CPU) and not uses("full", "off")
    with pytest.raises(UnituneError, match="gradient checkpointing must be one of auto, on, off"):
        TuneSettings(gradient_checkpointing="sometimes")


def test_the_optimizer_is_fused_and_8_bit_on_request(editor, base_image):
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert make_optimizer(params, TuneSettings().resolved(), CUDA).defaults["fused"] is True
    assert make_optimizer(params, TuneSettings().resolved(), CPU).defaults["fused"] is True
    eight_bit = TuneSettings(optimizer="adamw8bit")
    with pytest.raises(UnituneError, match="adamw8bit needs") as error:
        make_optimizer(params, eight_bit.resolved(), CPU)
    assert "\n" not in str(error.value)
    assert editor.tune_key(base_image, eight_bit) != editor.tune_key(base_image, TuneSettings())
    assert "optimizer" not in key_settings(TuneSettings())  # keys made before it was a setting stay valid


@pytest.mark.parametrize("where", ["train", "iter_denoise_rows"])
def test_running_out_of_memory_is_one_line_with_what_to_try(editor, base_image, monkeypatch, where):
    from unitune import api, sample_batches

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(api if where == "train" else sample_batches, where, out_of_memory)
    with pytest.raises(UnituneError) as error:
        editor.edit(base_image, ["a"], EDIT, TuneSettings(method="full", steps=1, seed=93))
    message = str(error.value)
    during = "a full tune" if where == "train" else "an edit"
    assert message.startswith(f"out of cpu memory during {during}") and "\n" not in message
    assert ("--method lora" in message) == (where == "train")
    assert editor.weights.applied_key is None  # the base weights are back in place


@pytest.mark.parametrize("method", ["full", "lora"])
def test_an_untuned_tail_samples_its_last_steps_with_the_base_and_puts_the_tune_back(
    editor, base_image, method
):
    tune = TuneSettings(method=method, steps=2, learning_rate=5e-2, seed=94)
    settings = EditSettings(steps=4, strength=1.0, guidance=3.0)
    tuned = editor.edit(base_image, ["a"], settings, tune)[0]
    applied = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    tail = editor.edit(base_image, ["a"], EditSettings(**{**settings.to_dict(), "untuned_tail": 0.5}), tune)[
        0
    ]
    assert tail.settings["untuned_tail"] == 0.5
    assert not np.array_equal(np.asarray(tuned.image), np.asarray(tail.image))
    assert all(torch.equal(applied[k], v) for k, v in editor.pipe.unet.state_dict().items())  # tune back
    again = editor.edit(base_image, ["a"], settings, tune)[0]
    assert np.array_equal(np.asarray(tuned.image), np.asarray(again.image))


def test_an_untuned_tail_over_the_whole_schedule_is_the_base_models_sample(editor, base_image):
    """Every step untuned: the pixels of the same sampler run with the base weights (no tune applied)."""
    settings = EditSettings(steps=4, strength=0.6, guidance=3.0, untuned_tail=0.99)
    tune = TuneSettings(steps=2, learning_rate=5e-2, seed=95)
    [tail] = editor.edit(base_image, ["a"], settings, tune)
    editor.restore_base()
    base = fit(base_image, editor.work_size(base_image.size))
    plain = EditSettings(**{**settings.to_dict(), "untuned_tail": 0.0})
    request = SampleRequest(tail.settings["full_prompt"], plain, 0, "base")
    [(image, *_)] = sample_requests(editor.sampling_model(), [request], base, run=_no_run())
    assert np.array_equal(np.asarray(tail.image), np.asarray(image))


def _no_run():
    return RunControl(None, None)


def test_an_untuned_tail_must_leave_some_of_the_tune():
    with pytest.raises(UnituneError, match="untuned tail"):
        EditSettings(untuned_tail=1.0)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_untuned_puts_the_base_in_for_its_block_and_the_tune_back_even_after_an_error(
    editor, base_image, method
):
    """On the CPU the swap points the UNet at the base copies instead of copying (model guidance swaps at
    every tuned step): inside, the base bit for bit; after, the tune's very tensors, also after an error."""
    editor.restore_base()
    base = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    tune = TuneSettings(method=method, steps=2, learning_rate=5e-2, seed=98)
    editor.edit(base_image, ["a"], EditSettings(steps=2, strength=1.0, guidance=3.0), tune)
    tuned = {k: v.clone() for k, v in editor.pipe.unet.state_dict().items()}
    pointers = {k: v.data_ptr() for k, v in editor.pipe.unet.state_dict().items()}
    assert any(not torch.equal(tuned[k], base[k]) for k in base)
    with pytest.raises(KeyError), editor.weights.untuned():
        assert all(torch.equal(base[k], v) for k, v in editor.pipe.unet.state_dict().items())
        raise KeyError("inside")
    assert all(torch.equal(tuned[k], v) for k, v in editor.pipe.unet.state_dict().items())
    assert {k: v.data_ptr() for k, v in editor.pipe.unet.state_dict().items()} == pointers
    editor.restore_base()
    assert all(torch.equal(base[k], v) for k, v in editor.pipe.unet.state_dict().items())
