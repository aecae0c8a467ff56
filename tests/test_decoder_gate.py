"""The decoder gate (`--decoder-gate`): a tune's fitted decoder decodes a sample where it is still the image,
the model's decoder where the edit changed it; without a fitted decoder the gate changes nothing."""

import numpy as np
import pytest
import torch
from PIL import ImageOps

from unitune import EditSettings, TuneSettings
from unitune.benchmark.edits import edit_set
from unitune.benchmark.metrics import change_mask
from unitune.decoder_gate import decode_samples
from unitune.errors import UnituneError
from unitune.sampling import decode
from unitune.shapes.world import render, render_pil
from unitune.tuning import encode_latent

FIT = dict(steps=2, learning_rate=5e-2, seed=71, decoder_steps=12, decoder_learning_rate=1e-3)
GATE = 0.3


def latent_of(editor, image):
    return encode_latent(editor.pipe, editor.prepare_image(image), editor.runtime)


def decodings(editor, latent):
    """(the fitted decoder's, the model's) decoding of `latent` under the applied tune."""
    fitted = decode(editor.pipe, latent, editor.runtime)
    with editor.weights.model_decoder():
        model = decode(editor.pipe, latent, editor.runtime)
    return fitted, model


@pytest.fixture
def fitted(editor, base_image):
    tuned = editor.tune(base_image, TuneSettings(**FIT))
    with editor.applied(tuned):
        yield editor


def test_the_image_itself_is_decoded_by_the_fitted_decoder(fitted, base_image):
    working = fitted.prepare_image(base_image)
    latent = latent_of(fitted, base_image)
    fitted_pixels, model_pixels = decodings(fitted, latent)
    assert not torch.equal(fitted_pixels, model_pixels)
    [gated] = decode_samples(fitted, [latent], [GATE], working)
    assert torch.equal(gated, fitted_pixels)  # the model's decodings agree everywhere: the gate is open


def test_gate_zero_is_the_fitted_decoder_everywhere(fitted, base_image):
    working = fitted.prepare_image(base_image)
    latent = latent_of(fitted, ImageOps.invert(working.convert("RGB")))
    fitted_pixels, model_pixels = decodings(fitted, latent)
    [ungated] = decode_samples(fitted, [latent], [0.0], working)
    [gated] = decode_samples(fitted, [latent], [GATE], working)
    assert torch.equal(ungated, fitted_pixels)
    low, high = torch.minimum(fitted_pixels, model_pixels), torch.maximum(fitted_pixels, model_pixels)
    assert torch.all(gated >= low - 1e-6) and torch.all(gated <= high + 1e-6)  # a mix, pixel by pixel


@pytest.fixture(scope="module")
def recolour(tmp_path_factory):
    """The shipped model with a tune (a short one, and the decoder fit) on a validation scene whose edit
    recolours an object: (editor, tune, base, target, the pixels the edit changes)."""
    from unitune import Editor

    editor = Editor.load(None, device="cpu", cache_dir=tmp_path_factory.mktemp("gate-cache"))
    edit = next(e for e in edit_set("validation", 4) if e.kind == "colour")
    base, target = render_pil(edit.base), render_pil(edit.target)
    tuned = editor.tune(base, TuneSettings(steps=2, decoder_steps=50))
    changed = torch.from_numpy(change_mask(render(edit.base), render(edit.target)))
    return editor, tuned, base, target, changed


@pytest.mark.parametrize("gate", [0.15, GATE])
def test_a_recoloured_object_is_decoded_by_the_models_decoder_and_the_rest_by_the_fitted(recolour, gate):
    """The edit's ideal target, decoded: the fitted decoder pulls the recoloured object towards the image's
    colour (it differs from the model's decoding there, little elsewhere); behind the gate the object is
    mostly the model's decoding and the rest the fitted one's."""
    editor, tuned, base, target, changed = recolour
    with editor.applied(tuned):
        latent = latent_of(editor, target)
        fitted_pixels, model_pixels = decodings(editor, latent)
        [gated] = decode_samples(editor, [latent], [gate], editor.prepare_image(base))
    difference = (fitted_pixels - model_pixels).abs().sum(dim=1)[0]
    assert difference[changed].mean() > 10 * difference[~changed].mean()
    share = (gated - model_pixels).abs().sum(dim=1)[0] / (difference + 1e-6)  # 0: model's, 1: fitted's
    assert share[changed].mean() < 0.5 and share[~changed].mean() > 0.95


def test_without_a_fitted_decoder_the_gate_changes_nothing(editor, base_image):
    plain = TuneSettings(**{**FIT, "decoder_steps": 0})
    images = [
        np.asarray(editor.edit(base_image, ["a"], EditSettings(steps=3, decoder_gate=gate), plain)[0].image)
        for gate in (0.0, GATE)
    ]
    assert np.array_equal(*images)


def test_the_gate_is_part_of_an_edits_settings_and_changes_a_fitted_edit(editor, base_image):
    settings = dict(steps=3, strength=1.0, guidance=3.0)
    gated = editor.edit(base_image, ["a"], EditSettings(**settings, decoder_gate=GATE), TuneSettings(**FIT))[
        0
    ]
    open_ = editor.edit(base_image, ["a"], EditSettings(**settings, decoder_gate=0.0), TuneSettings(**FIT))[0]
    assert gated.settings["decoder_gate"] == GATE
    assert not np.array_equal(np.asarray(gated.image), np.asarray(open_.image))


def test_inside_the_model_decoder_block_no_fitted_decoder_is_in_place(fitted):
    assert fitted.weights.decoder_fitted
    with fitted.weights.model_decoder():
        assert not fitted.weights.decoder_fitted
    assert fitted.weights.decoder_fitted


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 11.0])
def test_bad_gates_are_clear_errors(bad):
    with pytest.raises(UnituneError, match="decoder gate"):
        EditSettings(decoder_gate=bad)


def test_the_benchmark_report_names_the_gate_where_its_tunes_fit_a_decoder():
    import types

    from unitune.benchmark.methods import TuneCost
    from unitune.benchmark.report.document import gate_text

    def results(decoder_steps, gate):
        cost = TuneCost("lora", "test-000", 1.0, 0.1, {"decoder_steps": decoder_steps})
        return types.SimpleNamespace(tune_costs=[cost], decoder_gate=gate)

    assert gate_text(results(50, 0.3)) == ", decoder gate 0.3"
    assert gate_text(results(0, 0.3)) == ""  # no fitted decoder: the gate did nothing
    assert "before" in gate_text(results(50, None))  # a run from before the gate
