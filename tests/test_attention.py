"""Prompt-to-Prompt's attention reuse: an edit takes the attention maps of R alone sampled beside it."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from unitune import EditSettings, TuneSettings, UnituneError
from unitune.attention import AttentionReuse, ReusingProcessor, Share, TokenMap

TUNE = TuneSettings(steps=2, learning_rate=5e-2, seed=91)
REUSE = {"reuse_self_attention": 0.5, "reuse_cross_attention": 0.5}


def _maps(batch: int, heads: int, queries: int, keys: int) -> torch.Tensor:
    return torch.rand(batch * heads, queries, keys, generator=torch.Generator().manual_seed(0)).softmax(-1)


def test_a_share_gives_the_target_its_sources_self_maps_whole():
    probs = _maps(3, 2, 4, 4)
    reuse = AttentionReuse()
    reuse.shares = [Share(2, 0, True, False, None)]
    replaced = reuse.replace(probs, heads=2, cross=False)
    assert torch.equal(replaced[4:6], probs[0:2])  # target batch 2 (heads 4-5) takes batch 0's maps
    assert torch.equal(replaced[:4], probs[:4])  # the source and the other rows are untouched
    assert torch.equal(reuse.replace(probs, heads=2, cross=True), probs)  # no cross-attention reuse asked


def test_a_share_gives_the_shared_tokens_the_sources_cross_maps_and_the_new_words_their_own():
    probs = _maps(2, 1, 3, 6)
    tokens = TokenMap(torch.tensor([0, 1, 0, 0, 2, 3]), torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))
    reuse = AttentionReuse()
    reuse.shares = [Share(1, 0, False, True, tokens)]
    replaced = reuse.replace(probs, heads=1, cross=True)
    target, source = replaced[1], probs[0]
    assert torch.equal(target[:, [0, 1, 4, 5]], source[:, [0, 1, 2, 3]])
    assert torch.equal(target[:, [2, 3]], probs[1][:, [2, 3]])


def test_the_token_map_of_words_inserted_after_r(editor):
    """ "R words" against "R": the start and R's tokens map to themselves, the words keep their own maps,
    the end of text and padding map to R's, shifted back by the words' length."""
    tokenizer = editor.pipe.tokenizer
    rare, words = "olis httr", "a red circle"
    r_length = len(tokenizer(rare).input_ids) - 1  # start token and R's, without the end of text
    inserted = len(tokenizer(f"{rare} {words}").input_ids) - r_length - 1
    tokens = TokenMap.inserted(tokenizer, rare, f"{rare} {words}")
    positions = torch.arange(tokenizer.model_max_length)
    new = (positions >= r_length) & (positions < r_length + inserted)
    assert torch.equal(tokens.alpha, (~new).float())
    assert torch.equal(tokens.source[:r_length], positions[:r_length])
    assert torch.equal(tokens.source[r_length + inserted :], positions[r_length:-inserted])


def test_a_prompt_that_does_not_extend_r_reuses_only_the_shared_start(editor):
    tokens = TokenMap.inserted(editor.pipe.tokenizer, "olis httr", "olis a red circle")
    shared = len(editor.pipe.tokenizer("olis").input_ids) - 1
    assert tokens.alpha.sum() == shared and torch.equal(tokens.alpha[:shared], torch.ones(shared))


@pytest.mark.parametrize("cross", [False, True])
def test_the_reusing_processor_computes_attention_as_diffusers_attn_processor(editor, cross):
    """A share of a row with itself changes no map: the processor's own attention then equals diffusers'
    plain AttnProcessor on the same layer and inputs."""
    name = next(
        n
        for n in editor.pipe.unet.attn_processors
        if n.endswith("attn2.processor" if cross else "attn1.processor")
    )
    attn = editor.pipe.unet.get_submodule(name.removesuffix(".processor"))
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 16, attn.query_dim, generator=generator)
    text = torch.randn(2, 7, attn.cross_attention_dim, generator=generator) if cross else None
    tokens = TokenMap(torch.arange(7), torch.ones(7))
    reuse = AttentionReuse()
    reuse.shares = [Share(1, 1, True, True, tokens)]
    with torch.no_grad():
        ours = ReusingProcessor(reuse, None)(attn, hidden, text)
        theirs = AttnProcessor()(attn, hidden, text)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_an_edit_reusing_rs_attention_differs_records_its_settings_and_restores_the_unet(editor, base_image):
    settings = EditSettings(steps=4, strength=1.0, guidance=3.0, seed=2)
    own = {name: type(p) for name, p in editor.pipe.unet.attn_processors.items()}
    [plain] = editor.edit(base_image, ["a red circle"], settings, TUNE)
    [reused] = editor.edit(
        base_image, ["a red circle"], EditSettings(**{**settings.to_dict(), **REUSE}), TUNE
    )
    assert not np.array_equal(np.asarray(plain.image), np.asarray(reused.image))
    assert reused.settings["reuse_self_attention"] == 0.5 and reused.settings["reuse_cross_attention"] == 0.5
    assert {name: type(p) for name, p in editor.pipe.unet.attn_processors.items()} == own


def test_edits_of_one_seed_share_one_companion_row_of_r_alone(editor, base_image):
    """Three edits, one seed: one UNet batch of 3 + 1 rows per step (twice that with guidance); R alone
    (no edit words) gets no companion."""
    batches = []
    hook = editor.pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    settings = EditSettings(steps=2, strength=1.0, guidance=3.0, seed=2, sample_batch=4, **REUSE)
    try:
        editor.tune(base_image, TUNE)
        batches.clear()
        editor.edit(base_image, ["a red circle", "x", "a blue square"], settings, TUNE)
        assert batches == [2 * 4] * 2
        batches.clear()
        editor.edit(base_image, [""], settings, TUNE)
        assert batches == [2 * 1] * 2
    finally:
        hook.remove()


def test_reuse_settings_are_checked():
    for field in REUSE:
        with pytest.raises(UnituneError, match="must be in \\[0, 1\\]"):
            EditSettings(**{field: 1.5})
