"""The automatic dial: its signals are paired and reproducible, its pick is an ordinary edit at the picked
strength, and every output says what was chosen and why."""

import numpy as np
import pytest
import torch

from unitune import EditSettings, TuneSettings
from unitune.auto import AUTO_STRENGTHS, Signals, denoising_errors, pick, score_candidates, timestep_errors
from unitune.pipelines import Conditioning
from unitune.tuning import encode_latent, encode_text

TUNE = TuneSettings(steps=4)
EDIT = EditSettings(guidance=3.0, steps=4, interpolation=0.3)


def test_pick_keeps_the_candidate_with_the_most_evidence():
    # largest tuned gain: the last; most evidence (read_none - read_edit): the second
    signals = [Signals(0.2, 0.1, 0.5, 0.5), Signals(0.4, 0.6, 0.3, 0.7), Signals(0.3, 0.9, 0.6, 0.65)]
    assert signals[2].gain == pytest.approx(0.6) and signals[1].evidence == pytest.approx(0.4)
    assert pick(signals) == 1


def test_denoising_errors_are_reproducible_and_follow_the_prompt(editor, base_image):
    pipe, runtime = editor.pipe, editor.runtime
    latents = encode_latent(pipe, [editor.prepare_image(base_image)] * 2, runtime)
    embeds = Conditioning.cat([encode_text(pipe, "a red square", runtime), encode_text(pipe, "", runtime)])
    errors = denoising_errors(pipe, latents, embeds, runtime, chunk=3)
    assert errors.shape == (2, 2) and torch.isfinite(errors).all()
    assert torch.equal(errors, denoising_errors(pipe, latents, embeds, runtime, chunk=3))
    assert torch.allclose(errors, denoising_errors(pipe, latents, embeds, runtime))  # any chunking
    assert torch.allclose(errors[0], errors[1])  # the same image: the same paired noises, the same error
    assert errors[0, 0] != errors[0, 1]  # the prompt changes the error
    per_step = timestep_errors(pipe, latents, embeds, runtime, timesteps=(250, 250, 850))
    assert per_step.shape == (2, 2, 3) and per_step[0, 0, 0] != per_step[0, 0, 1]  # one noise per entry


def test_auto_edit_is_the_plain_edit_at_the_picked_strength(editor, base_image):
    [auto] = editor.edit(base_image, "a blue circle", EditSettings(**{**EDIT.to_dict(), "auto": True}), TUNE)
    dial = auto.settings["auto_dial"]
    assert [c["strength"] for c in dial["candidates"]] == list(AUTO_STRENGTHS)
    assert auto.settings["strength"] == dial["picked_strength"] and auto.settings["auto"] is True
    evidence = [c["evidence"] for c in dial["candidates"]]
    assert dial["picked_strength"] == AUTO_STRENGTHS[int(np.argmax(evidence))]
    plain = EditSettings(**{**EDIT.to_dict(), "strength": dial["picked_strength"]})
    [again] = editor.edit(base_image, "a blue circle", plain, TUNE)
    assert np.array_equal(np.asarray(auto.image), np.asarray(again.image))  # reproducible without --auto


def test_a_model_guidance_candidate_is_sampled_scored_and_reproducible(editor, base_image):
    """`auto_model_guidance` adds strength 1 with that model guidance, an image of its own; the pick is
    the most evidence, and its recorded settings give its image back without --auto."""
    settings = EditSettings(**{**EDIT.to_dict(), "auto": True, "auto_model_guidance": 1.5})
    [auto] = editor.edit(base_image, "a blue circle", settings, TUNE)
    dial = auto.settings["auto_dial"]
    options = [(c["strength"], c["model_guidance"]) for c in dial["candidates"]]
    assert options == [(s, 0.0) for s in AUTO_STRENGTHS] + [(1.0, 1.5)]
    strength, weight = options[int(np.argmax([c["evidence"] for c in dial["candidates"]]))]
    assert (dial["picked_strength"], dial["picked_model_guidance"]) == (strength, weight)
    assert (auto.settings["strength"], auto.settings["model_guidance"]) == (strength, weight)
    picked = EditSettings(**{**EDIT.to_dict(), "strength": strength, "model_guidance": weight})
    [again] = editor.edit(base_image, "a blue circle", picked, TUNE)
    assert np.array_equal(np.asarray(auto.image), np.asarray(again.image))
    guided, plain = (
        EditSettings(**{**EDIT.to_dict(), "strength": 1.0, "model_guidance": w}) for w in (1.5, 0)
    )
    images = [np.asarray(editor.edit(base_image, "a blue circle", s, TUNE)[0].image) for s in (guided, plain)]
    assert not np.array_equal(*images)  # a candidate of its own, not strength 1 again


def test_batched_candidates_get_the_same_signals_at_rounding_level(editor, base_image):
    one = EditSettings(**{**EDIT.to_dict(), "auto": True, "auto_model_guidance": 1.5})
    [alone] = editor.edit(base_image, "a blue circle", one, TUNE)
    [together] = editor.edit(
        base_image, "a blue circle", EditSettings(**{**one.to_dict(), "sample_batch": 4}), TUNE
    )
    pairs = zip(
        alone.settings["auto_dial"]["candidates"], together.settings["auto_dial"]["candidates"], strict=True
    )
    for a, b in pairs:
        assert (a["strength"], a["model_guidance"]) == (b["strength"], b["model_guidance"])
        assert a["read_edit"] == pytest.approx(b["read_edit"], rel=1e-3)
        assert a["read_none"] == pytest.approx(b["read_none"], rel=1e-3)


def test_auto_sweep_marks_one_pick(editor, base_image):
    settings = EditSettings(**{**EDIT.to_dict(), "auto": True})
    sweep = editor.sweep(base_image, "a blue circle", [2.0, 4.0], [0.6, 1.0], settings, TUNE)
    marks = [r.settings["auto_dial"]["picked"] for r in sweep.results]
    assert marks.count(True) == 1 and marks.index(True) == sweep.picked
    assert all(r.settings["strength"] in (0.6, 1.0) for r in sweep.results)  # no cell ran the dial itself
    red = np.asarray(sweep.sheet)[..., 0] > 200
    assert red.any()  # the frame


def test_scores_are_the_same_for_the_same_images(editor, base_image):
    pipe, runtime = editor.pipe, editor.runtime
    image = editor.prepare_image(base_image)
    one, two = score_candidates(pipe, [image, image], "olis httr", "a blue circle", runtime, editor.weights)
    assert one == two


def test_evidence_is_read_by_the_untuned_model_and_the_tune_comes_back(editor, base_image):
    """`read_` errors are the untuned weights' (the same with or without a tune applied), `fit_` errors
    the tune's, and the tune's weights are back bit for bit after scoring."""
    pipe, runtime = editor.pipe, editor.runtime
    image = editor.prepare_image(base_image)
    args = (pipe, [image], "olis httr", "a blue circle", runtime, editor.weights)
    editor.weights.restore_base()
    [untuned] = score_candidates(*args, tuned=True)
    tuned_result = editor.tune(base_image, TUNE)
    with editor.applied(tuned_result):
        before = {name: value.clone() for name, value in pipe.unet.state_dict().items()}
        [tuned] = score_candidates(*args, tuned=True)
        after = pipe.unet.state_dict()
        assert all(torch.equal(before[name], after[name]) for name in before)
    assert np.isfinite([tuned.read_edit, tuned.read_none, tuned.evidence]).all()
    assert (tuned.read_edit, tuned.read_none) == pytest.approx(
        (untuned.read_edit, untuned.read_none), rel=1e-6
    )
    assert (tuned.fit_edit, tuned.fit_base) != pytest.approx((untuned.fit_edit, untuned.fit_base), rel=1e-3)


def test_the_dial_reads_only_what_it_picks_by_unless_asked(editor, base_image):
    """`--auto` measures the untuned reading alone (the tune's fit_ errors cost as much again and `pick`
    does not read them); asked for, they come on top of the same reading."""
    image = editor.prepare_image(base_image)
    args = (
        editor.pipe,
        [image, image.rotate(90)],
        "olis httr",
        "a blue circle",
        editor.runtime,
        editor.weights,
    )
    with editor.applied(editor.tune(base_image, TUNE)):
        plain, full = score_candidates(*args), score_candidates(*args, tuned=True)
    assert all(np.isnan([s.fit_edit, s.fit_base, s.gain]).all() for s in plain)
    assert set(plain[0].to_dict()) == {"read_edit", "read_none", "evidence"}
    assert set(full[0].to_dict()) == {"fit_edit", "fit_base", "gain", "read_edit", "read_none", "evidence"}
    assert [s.evidence for s in plain] == [s.evidence for s in full]
    assert np.isfinite([s.gain for s in full]).all()
