"""A tiny pipeline in the original (LDM) checkpoint layout of SD 1.x, as single-file checkpoints ship it,
so that loading a checkpoint file runs diffusers' real conversion in the tests (no real checkpoint here).

The UNet must have SD's layout (4 blocks of 2 layers, attention in the first three down blocks and the
last three up blocks); channel widths and depths of the text encoder may be tiny.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}


def sd1_layout_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=2,
        sample_size=16,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32,
        attention_head_dim=8,
    )


def _unet_prefixes() -> dict[str, tuple[str, bool]]:
    """diffusers prefix -> (LDM prefix, whether it is a ResNet block)."""
    prefixes = {
        "conv_in.": ("input_blocks.0.0.", False),
        "time_embedding.linear_1.": ("time_embed.0.", False),
        "time_embedding.linear_2.": ("time_embed.2.", False),
        "conv_norm_out.": ("out.0.", False),
        "conv_out.": ("out.2.", False),
        "mid_block.resnets.0.": ("middle_block.0.", True),
        "mid_block.attentions.0.": ("middle_block.1.", False),
        "mid_block.resnets.1.": ("middle_block.2.", True),
    }
    for i in range(4):
        for j in range(2):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = (f"input_blocks.{3 * i + j + 1}.0.", True)
            prefixes[f"down_blocks.{i}.attentions.{j}."] = (f"input_blocks.{3 * i + j + 1}.1.", False)
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = (f"input_blocks.{3 * (i + 1)}.0.op.", False)
        for j in range(3):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = (f"output_blocks.{3 * i + j}.0.", True)
            prefixes[f"up_blocks.{i}.attentions.{j}."] = (f"output_blocks.{3 * i + j}.1.", False)
        prefixes[f"up_blocks.{i}.upsamplers.0."] = (f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.", False)
    return prefixes


def _rename(name: str, prefixes: dict[str, tuple[str, bool]], inner: dict[str, str]) -> str:
    for prefix, (target, is_resnet) in prefixes.items():
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            if is_resnet:
                rest = next(
                    (new + rest[len(old) :] for old, new in inner.items() if rest.startswith(old)), rest
                )
            return target + rest
    raise KeyError(name)


def _vae_prefixes(vae: AutoencoderKL) -> dict[str, tuple[str, bool]]:
    blocks = len(vae.config.block_out_channels)
    prefixes = {}
    for part in ("encoder", "decoder"):
        for name in ("conv_in.", "conv_out."):
            prefixes[f"{part}.{name}"] = (f"{part}.{name}", False)
        prefixes[f"{part}.conv_norm_out."] = (f"{part}.norm_out.", False)
        prefixes[f"{part}.mid_block.resnets.0."] = (f"{part}.mid.block_1.", True)
        prefixes[f"{part}.mid_block.resnets.1."] = (f"{part}.mid.block_2.", True)
        prefixes[f"{part}.mid_block.attentions.0."] = (f"{part}.mid.attn_1.", False)
    for i in range(blocks):
        for j in range(vae.config.layers_per_block + 1):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = (f"encoder.down.{i}.block.{j}.", True)
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = (
                f"decoder.up.{blocks - 1 - i}.block.{j}.",
                True,
            )
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = (
            f"encoder.down.{i}.downsample.conv.",
            False,
        )
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = (
            f"decoder.up.{blocks - 1 - i}.upsample.conv.",
            False,
        )
    for name in ("quant_conv.", "post_quant_conv."):
        prefixes[name] = (name, False)
    return prefixes


_VAE_ATTENTION = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def to_ldm(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's UNet, VAE and text encoder as one SD 1.x (LDM) state dict."""
    state = {}
    unet_prefixes = _unet_prefixes()
    for name, tensor in pipe.unet.state_dict().items():
        state["model.diffusion_model." + _rename(name, unet_prefixes, _RESNET)] = tensor
    vae_prefixes = _vae_prefixes(pipe.vae)
    for name, tensor in pipe.vae.state_dict().items():
        ldm = _rename(name, vae_prefixes, {"conv_shortcut.": "nin_shortcut."})
        if ".mid.attn_1." in ldm:
            head, rest = ldm.split(".mid.attn_1.")
            old = next(old for old in _VAE_ATTENTION if rest.startswith(old))
            ldm = f"{head}.mid.attn_1.{_VAE_ATTENTION[old]}{rest[len(old) :]}"
            if tensor.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                tensor = tensor[:, :, None, None]
        state["first_stage_model." + ldm] = tensor
    for name, tensor in pipe.text_encoder.state_dict().items():  # transformers 5 drops "text_model."
        state["cond_stage_model.transformer.text_model." + name.removeprefix("text_model.")] = tensor
    return {name: tensor.contiguous() for name, tensor in state.items()}
