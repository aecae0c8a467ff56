"""Tiny pipelines in the original checkpoint layouts (LDM for SD 1.x / 2.x, SGM for SDXL), as single-file
checkpoints ship them, so loading a checkpoint file runs diffusers' real conversion in the tests (there is
no real checkpoint here). Written for these tests from the layouts' key names; the round trip through
diffusers' converter (same weights back) is what checks it.
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


def sd_layout_unet(use_linear_projection: bool = False) -> UNet2DConditionModel:
    """SD 1.x's UNet layout (SD 2.x's with linear projections), tiny widths."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=2,
        sample_size=16,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32,
        attention_head_dim=8,
        use_linear_projection=use_linear_projection,
    )


def _unet_prefixes(unet) -> dict[str, tuple[str, bool]]:
    """diffusers prefix -> (LDM prefix, whether it is a ResNet block), for any SD-style layout."""
    config = unet.config
    levels, layers = len(config.block_out_channels), config.layers_per_block
    down_attention = [kind.startswith("CrossAttn") for kind in config.down_block_types]
    up_attention = [kind.startswith("CrossAttn") for kind in config.up_block_types]
    prefixes = {
        "conv_in.": ("input_blocks.0.0.", False),
        "time_embedding.linear_1.": ("time_embed.0.", False),
        "time_embedding.linear_2.": ("time_embed.2.", False),
        "add_embedding.linear_1.": ("label_emb.0.0.", False),
        "add_embedding.linear_2.": ("label_emb.0.2.", False),
        "conv_norm_out.": ("out.0.", False),
        "conv_out.": ("out.2.", False),
        "mid_block.resnets.0.": ("middle_block.0.", True),
        "mid_block.attentions.0.": ("middle_block.1.", False),
        "mid_block.resnets.1.": ("middle_block.2.", True),
    }
    for i in range(levels):
        for j in range(layers):
            block = (layers + 1) * i + j + 1
            prefixes[f"down_blocks.{i}.resnets.{j}."] = (f"input_blocks.{block}.0.", True)
            if down_attention[i]:
                prefixes[f"down_blocks.{i}.attentions.{j}."] = (f"input_blocks.{block}.1.", False)
        if i < levels - 1:
            downsampler = f"input_blocks.{(layers + 1) * (i + 1)}.0.op."
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = (downsampler, False)
        for j in range(layers + 1):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = (f"output_blocks.{(layers + 1) * i + j}.0.", True)
            if up_attention[i]:
                prefixes[f"up_blocks.{i}.attentions.{j}."] = (
                    f"output_blocks.{(layers + 1) * i + j}.1.",
                    False,
                )
        if i < levels - 1:
            upsampler = f"output_blocks.{(layers + 1) * i + layers}.{2 if up_attention[i] else 1}."
            prefixes[f"up_blocks.{i}.upsamplers.0."] = (upsampler, False)
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
    """The pipeline's UNet, VAE and text encoder(s) as one original checkpoint's state dict: SD 1.x (CLIP
    text encoder), SD 2.x (OpenCLIP, `open_clip=True` layout when the pipeline's tokenizer pads with "!")
    or SDXL (CLIP and OpenCLIP under `conditioner.embedders`)."""
    state = {}
    unet_prefixes = _unet_prefixes(pipe.unet)
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
    if hasattr(pipe, "text_encoder_2"):
        state.update(_clip(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        state.update(_open_clip(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    elif pipe.tokenizer.pad_token == "!":
        state.update(_open_clip(pipe.text_encoder, "cond_stage_model.model."))
    else:
        state.update(_clip(pipe.text_encoder, "cond_stage_model.transformer."))
    return {name: tensor.contiguous() for name, tensor in state.items()}


def _hf_names(encoder) -> dict[str, torch.Tensor]:
    """The encoder's state dict under transformers 4's names (transformers 5 drops "text_model.")."""
    return {
        name if name.startswith(("text_model.", "text_projection")) else "text_model." + name: tensor
        for name, tensor in encoder.state_dict().items()
    }


def _clip(encoder, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + name: tensor for name, tensor in _hf_names(encoder).items()}


_OPEN_CLIP = {  # transformers name piece -> OpenCLIP's
    "text_model.encoder.layers.": "transformer.resblocks.",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    ".mlp.fc1.": ".mlp.c_fc.",
    ".mlp.fc2.": ".mlp.c_proj.",
    ".self_attn.": ".attn.",
}
_OPEN_CLIP_WHOLE = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def _open_clip(encoder, prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's layout: q, k, v stacked into `in_proj`, the projection as a (width, dim) matrix."""
    names, state = _hf_names(encoder), {}
    for name, tensor in names.items():
        if name in _OPEN_CLIP_WHOLE:
            state[prefix + _OPEN_CLIP_WHOLE[name]] = tensor
        elif name == "text_projection.weight":
            state[prefix + "text_projection"] = tensor.T
        elif ".self_attn.q_proj." in name:
            kind = name.rsplit(".", 1)[1]  # weight or bias
            parts = [names[name.replace(".q_proj.", f".{p}_proj.")] for p in "qkv"]
            ldm = name.replace(f".q_proj.{kind}", f".in_proj_{kind}")
            for old, new in _OPEN_CLIP.items():
                ldm = ldm.replace(old, new)
            state[prefix + ldm] = torch.cat(parts)
        elif ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        else:
            ldm = name
            for old, new in _OPEN_CLIP.items():
                ldm = ldm.replace(old, new)
            state[prefix + ldm] = tensor
    return state
