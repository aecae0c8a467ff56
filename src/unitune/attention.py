"""Prompt-to-Prompt's attention reuse (Hertz et al. 2022, arXiv 2208.01626) in UniTune's sampler.

An edit "R edit words" is denoised beside a companion row of "R" alone, from the same start latents. For
the first share of the edit's steps its conditional pass takes the companion's attention maps instead of
its own: the self-attention maps whole (where things are: the layout of R, which the tune made the
image), and the cross-attention maps of the tokens both prompts share (P2P's refinement edit: the start
token, R's tokens and the end-of-text tokens follow R's maps; the edit's own words keep theirs). The
unconditional pass is left alone, as in P2P's reference code. Self-attention maps are reused only where
they have at most `MAX_SELF_TOKENS` queries (P2P: 32 x 32), so a large model's full-resolution layers keep
their memory-efficient attention.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

MAX_SELF_TOKENS = 32 * 32


@dataclass(frozen=True)
class TokenMap:
    """For each token position of the edit's prompt, the companion's position whose cross-attention map it
    takes (`source`) and whether it takes it (`alpha` 1) or keeps its own (0), as P2P's refinement mapper
    for words inserted into the companion's prompt."""

    source: torch.Tensor  # (tokens,) long
    alpha: torch.Tensor  # (tokens,) float

    @classmethod
    def inserted(cls, tokenizer, companion: str, edit: str) -> TokenMap:
        """The map for `edit` = `companion` with words inserted before its end-of-text token: the shared
        start maps to itself, the inserted tokens keep their own maps, the rest (end of text, padding) maps
        to the companion's positions shifted back by the insertion's length."""
        length = tokenizer.model_max_length
        ours, theirs = _token_ids(tokenizer, edit), _token_ids(tokenizer, companion)
        shared = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
            min(len(ours), len(theirs)),
        )
        inserted = max(len(ours) - len(theirs), 0)
        positions = torch.arange(length)
        source = torch.where(positions < shared, positions, (positions - inserted).clamp(min=0))
        alpha = ((positions < shared) | (positions >= shared + inserted)).float()
        if len(ours) < len(theirs) or ours[shared + inserted :] != theirs[shared:]:
            alpha = (positions < shared).float()  # not an insertion: only the shared start is reused
        return cls(source, alpha)


def _token_ids(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids


@dataclass(frozen=True)
class Share:
    """One edit row's reuse at the current step: its conditional pass's batch position (`target`), its
    companion's (`source`), which maps it takes, and its token map for the cross-attention maps."""

    target: int
    source: int
    self_attention: bool
    cross_attention: bool
    tokens: TokenMap
    features: bool = False


class AttentionReuse:
    """What the UNet's attention layers reuse in the current call: set before each step by the sampler
    (no shares: every layer runs its own processor untouched)."""

    def __init__(self):
        self.shares: list[Share] = []

    def wanted(self, attn, queries: int) -> bool:
        if attn.is_cross_attention:
            return any(share.cross_attention for share in self.shares)
        return queries <= MAX_SELF_TOKENS and any(share.self_attention for share in self.shares)

    def replace(self, probs: torch.Tensor, heads: int, cross: bool) -> torch.Tensor:
        """`probs` (batch x heads, queries, keys) with each share's target taking its source's maps."""
        probs = probs.clone()
        for share in self.shares:
            target = slice(share.target * heads, (share.target + 1) * heads)
            source = probs[share.source * heads : (share.source + 1) * heads]
            if cross and share.cross_attention:
                tokens = share.tokens
                alpha = tokens.alpha.to(probs.device, probs.dtype)
                taken = source[:, :, tokens.source.to(probs.device)]
                probs[target] = taken * alpha + probs[target] * (1 - alpha)
            elif not cross and share.self_attention:
                probs[target] = source
        return probs


def _replace_features(self, module, args, output):
    shares = [share for share in self.shares if share.features]
    if not shares:
        return None
    output = output.clone()
    for share in shares:
        output[share.target] = output[share.source]
    return output


AttentionReuse.replace_features = _replace_features


class ReusingProcessor:
    """An attention processor that runs the layer's own processor unless the reuse wants this layer now;
    then diffusers' plain `AttnProcessor` computation, with the maps replaced before they weigh the
    values."""

    def __init__(self, reuse: AttentionReuse, own):
        self.reuse, self.own = reuse, own

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        queries = hidden_states.shape[-2] if hidden_states.ndim == 3 else hidden_states[0, 0].numel()
        if not self.reuse.wanted(attn, queries):
            return self.own(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        return self._reusing(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    def _reusing(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(attn.head_to_batch_dim(query), key, attention_mask)
        probs = self.reuse.replace(probs, attn.heads, attn.is_cross_attention)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def reusing(unet, reuse: AttentionReuse):
    """Every attention layer of `unet` consults `reuse` inside the block; their own processors after it."""
    import os

    own = unet.attn_processors
    unet.set_attn_processor({name: ReusingProcessor(reuse, processor) for name, processor in own.items()})
    block = unet.up_blocks[int(os.environ.get("UNITUNE_REUSE_BLOCK", "1"))]
    hooks = [resnet.register_forward_hook(reuse.replace_features) for resnet in block.resnets]
    try:
        yield reuse
    finally:
        for hook in hooks:
            hook.remove()
        unet.set_attn_processor(own)
