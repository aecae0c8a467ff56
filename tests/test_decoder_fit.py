"""The decoder fit (`--decoder-steps`): after the UNet's tune, the autoencoder's decoder is fitted to decode
the image's own latent as the image; it is part of the tune (key, cached file) and goes in and out with it."""

import types

import numpy as np
import pytest
import torch

from unitune import EditSettings, TuneSettings
from unitune.cache import key_settings
from unitune.decoder_fit import DECODER_PREFIX, fit_decoder, split_decoder
from unitune.errors import UnituneError
from unitune.sampling import decode
from unitune.tuning import encode_latent
from unitune.weights import UNetWeights

FIT = dict(steps=2, learning_rate=5e-2, seed=71, decoder_steps=12, decoder_learning_rate=1e-3)


def decoder_state(editor):
    return {k: v.clone() for k, v in editor.pipe.vae.decoder.state_dict().items()}


def same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def round_trip_error(editor, image) -> float:
    base = editor.prepare_image(image)
    latent = encode_latent(editor.pipe, base, editor.runtime)
    pixels = editor.pipe.image_processor.preprocess(base) * 0.5 + 0.5
    with torch.no_grad():
        return float(torch.mean((decode(editor.pipe, latent, editor.runtime) - pixels) ** 2))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_fit_decodes_the_image_closer_and_leaves_the_base_decoder_after(editor, base_image, method):
    editor.restore_base()
    base_decoder, untuned_error = decoder_state(editor), round_trip_error(editor, base_image)
    tuned = editor.tune(base_image, TuneSettings(method=method, **FIT))
    assert same_tensors(decoder_state(editor), base_decoder)  # the tune put the base decoder back
    decoder = editor.pipe.vae.decoder
    assert all(p.grad is None and not p.requires_grad for p in decoder.parameters())
    with editor.applied(tuned):
        assert round_trip_error(editor, base_image) < untuned_error
    assert same_tensors(decoder_state(editor), base_decoder)
    losses = [float(x) for x in editor.cache.metadata(tuned.key)["decoder_losses"].strip("[]").split(",")]
    assert len(losses) == FIT["decoder_steps"] and losses[-1] < losses[0]
    assert tuned.settings["decoder_steps"] == FIT["decoder_steps"]


def test_the_unet_tune_is_the_same_with_or_without_the_fit_and_only_the_decoding_differs(editor, base_image):
    plain = TuneSettings(**{**FIT, "decoder_steps": 0})
    fitted = TuneSettings(**FIT)
    assert editor.tune_key(base_image, plain) != editor.tune_key(base_image, fitted)
    plain_tensors, _ = editor.train(base_image, plain)
    fitted_unet, fitted_decoder = split_decoder(editor.train(base_image, fitted)[0])
    assert same_tensors(plain_tensors, fitted_unet) and fitted_decoder
    assert all(
        name.startswith(DECODER_PREFIX)
        for name in set(editor.train(base_image, fitted)[0]) - set(plain_tensors)
    )
    settings = EditSettings(steps=3, strength=1.0, guidance=3.0)
    without = editor.edit(base_image, [""], settings, plain)[0]
    with_fit = editor.edit(base_image, [""], settings, fitted)[0]
    assert not np.array_equal(np.asarray(without.image), np.asarray(with_fit.image))
    assert with_fit.settings["tune"]["decoder_steps"] == FIT["decoder_steps"]


def test_no_fit_keeps_the_keys_tunes_had_before_the_setting():
    assert "decoder_steps" not in key_settings(TuneSettings())
    assert "decoder_learning_rate" not in key_settings(TuneSettings(decoder_learning_rate=1e-3))
    assert key_settings(TuneSettings(decoder_steps=5))["decoder_steps"] == 5


def test_the_fitted_decoder_stays_across_edits_of_the_tune_and_leaves_with_it(editor, base_image):
    editor.restore_base()
    base_decoder = decoder_state(editor)
    settings = EditSettings(steps=2, strength=1.0, guidance=3.0)
    editor.edit(base_image, ["a"], settings, TuneSettings(**FIT))
    fitted = decoder_state(editor)
    assert not same_tensors(fitted, base_decoder)  # kept applied for the next edit of the same tune
    editor.edit(base_image, ["b"], settings, TuneSettings(**FIT))
    assert same_tensors(decoder_state(editor), fitted)
    editor.edit(base_image, ["a"], settings, TuneSettings(**{**FIT, "decoder_steps": 0}))
    assert same_tensors(decoder_state(editor), base_decoder)  # another tune: the base decoder again
    editor.edit(base_image, ["a"], settings, TuneSettings(**FIT))
    editor.generate(["a"], EditSettings(steps=2, guidance=3.0))
    assert same_tensors(decoder_state(editor), base_decoder)


def test_an_untuned_tail_copied_out_and_back_keeps_the_fitted_decoder(editor, base_image, monkeypatch):
    """On an accelerator the untuned tail copies the UNet's weights out and back (no base copy to point at);
    the fitted decoder must stay in place for the decoding after those steps: same pixels as the CPU swap."""
    settings = EditSettings(steps=4, strength=1.0, guidance=3.0, untuned_tail=0.5)
    swapped = editor.edit(base_image, ["a"], settings, TuneSettings(**FIT))[0]
    editor.restore_base()
    monkeypatch.setattr(UNetWeights, "_swappable", lambda self, base: None)
    copied = editor.edit(base_image, ["a"], settings, TuneSettings(**FIT))[0]
    assert np.array_equal(np.asarray(swapped.image), np.asarray(copied.image))


def test_a_half_precision_decoder_is_a_clear_error():
    decoder = torch.nn.Linear(2, 2).half()
    pipe = types.SimpleNamespace(
        vae=types.SimpleNamespace(decoder=decoder, config=types.SimpleNamespace(scaling_factor=1.0))
    )
    runtime = types.SimpleNamespace(device=torch.device("cpu"))
    with pytest.raises(UnituneError, match="float32"):
        fit_decoder(pipe, torch.zeros(1, 2), torch.zeros(1, 2), TuneSettings(decoder_steps=1), runtime)


@pytest.mark.parametrize(
    "bad", [dict(decoder_steps=-1), dict(decoder_steps=10**6), dict(decoder_learning_rate=0.0)]
)
def test_bad_fit_settings_are_clear_errors(bad):
    with pytest.raises(UnituneError, match="decoder"):
        TuneSettings(**bad)


def test_the_model_decoder_block_shows_what_the_unet_tune_alone_draws(editor, base_image):
    editor.restore_base()
    base_decoder = decoder_state(editor)
    settings = EditSettings(steps=3, strength=1.0, guidance=3.0)
    fitted_image = editor.edit(base_image, [""], settings, TuneSettings(**FIT))[0].image
    fitted = decoder_state(editor)
    with editor.weights.model_decoder():
        assert same_tensors(decoder_state(editor), base_decoder)
        unet_alone = editor.edit(base_image, [""], settings, TuneSettings(**FIT))[0].image
    assert same_tensors(decoder_state(editor), fitted)
    plain = editor.edit(base_image, [""], settings, TuneSettings(**{**FIT, "decoder_steps": 0}))[0].image
    assert np.array_equal(np.asarray(unet_alone), np.asarray(plain))  # the same UNet tune and samples
    assert not np.array_equal(np.asarray(unet_alone), np.asarray(fitted_image))


def test_the_binding_table_shows_the_model_decoder_rows_beside_the_tunes():
    from unitune.benchmark.report.tables import binding_rows

    def row(decoder=None, psnr=30.0):
        extra = {"decoder": decoder} if decoder else {}
        return {"split": "test", "scene": 0, "family": "lora", "guidance": 3.0, "strength": 1.0}, extra, psnr

    rows = []
    for decoder, psnr in ((None, 31.0), ("model", 27.0)):
        head, extra, value = row(decoder, psnr)
        rows.append({**head, **extra, "same_scene": True, "psnr": value})
    lines = binding_rows(rows)
    [tune] = [line for line in lines if line.startswith("| lora | 3 |")]
    [model] = [line for line in lines if line.startswith("| lora, the model's decoder | 3 |")]
    assert "100%" in tune.split("|")[5] and "0%" in model.split("|")[5]


def test_an_error_inside_the_model_decoder_block_leaves_every_base_weight(editor, base_image):
    editor.restore_base()
    base_decoder = decoder_state(editor)
    editor.edit(base_image, [""], EditSettings(steps=2, strength=1.0, guidance=3.0), TuneSettings(**FIT))
    with pytest.raises(RuntimeError), editor.weights.model_decoder():
        editor.weights.restore_base()  # what `applied` does when a call inside fails
        raise RuntimeError("boom")
    assert editor.weights.applied_key is None and same_tensors(decoder_state(editor), base_decoder)


def test_the_fit_reports_its_steps_and_the_ui_names_them(editor, base_image):
    from unitune.ui.session import ProgressBar

    events = []
    editor.tune(base_image, TuneSettings(**{**FIT, "seed": 72}), progress=events.append)
    fit = [e for e in events if e.stage == "decoder"]
    assert [e.step for e in fit] == list(range(1, FIT["decoder_steps"] + 1)) and all(e.loss for e in fit)
    assert events.index(fit[0]) > max(i for i, e in enumerate(events) if e.stage == "tune")  # after the UNet
    shown = []
    ProgressBar(lambda value, desc: shown.append(desc))(fit[0])
    assert shown[0].startswith("Fitting the decoder to the image · loss")
