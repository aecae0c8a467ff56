"""CUDA graphs (unitune.graphs): the capture itself needs a GPU (bench/gpu_check.py compares captured and
eager edits there); on the CPU the fallback is tested: a capture that fails warns once and the loop
goes on eagerly with the same numbers."""

import pytest

from unitune import EditSettings, TuneSettings, UnituneWarning, graphs
from unitune.tuning import encode_latent, encode_text, train


def test_a_failed_capture_warns_and_the_tune_and_edit_run_eagerly_the_same(editor, base_image, monkeypatch):
    image = editor.prepare_image(base_image)
    latent = encode_latent(editor.pipe, image, editor.runtime)
    text = encode_text(editor.pipe, "olis httr", editor.runtime, image.size)
    tune = TuneSettings(method="full", steps=3, seed=8)
    edit = EditSettings(steps=3, strength=1.0, seed=4)

    def run():
        with editor.weights.training(tune):
            losses = train(editor.pipe, latent, text, tune, editor.runtime)
        return losses, editor.generate(["a red square"], edit)[0].image

    eager_losses, eager_image = run()
    monkeypatch.setattr(graphs, "wanted", lambda runtime, calls: True)  # a capture on the CPU fails
    with pytest.warns(UnituneWarning, match="CUDA graph capture failed") as caught:
        losses, image = run()
    assert len([w for w in caught if "CUDA graph" in str(w.message)]) == 2  # once per loop, not per step
    assert losses == eager_losses
    assert image.tobytes() == eager_image.tobytes()
    assert all(p.grad is None for p in editor.pipe.unet.parameters())
