"""Tiny seeded Stable Diffusion components built from configs (no downloads), as in diffusers' tests."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TOKENIZER = Path(__file__).resolve().parents[1] / "src/unitune/assets/clip-tokenizer"


UNET_LAYOUT = dict(  # the tiny UNets' shared layout (SD and SDXL differ in their conditioning only)
    block_out_channels=(32, 64),
    layers_per_block=1,
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
)


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        scaling_factor=4.0,  # about unit-variance latents for this random VAE, as 0.18215 is for SD's
    )


def tiny_components(prediction_type: str = "epsilon") -> dict:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **UNET_LAYOUT,
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    vae = tiny_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=49408,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER), model_max_length=77)
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
    )


def tiny_taesd():
    """An AutoencoderTiny (TAESD-style) VAE like the embedded model's; same scale factor as the KL one."""
    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(32, 32),
        decoder_block_out_channels=(32, 32),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )


def save_tiny_pipeline(folder: Path, prediction_type: str = "epsilon", taesd: bool = False) -> Path:
    components = tiny_components(prediction_type)
    if taesd:
        components["vae"] = tiny_taesd()
    pipe = StableDiffusionPipeline(**components, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_xl_components() -> dict:
    """A tiny SDXL: two CLIP encoders (the second with a projection: the pooled embedding), a UNet with
    SDXL's "text_time" added conditioning, as diffusers' SDXL tests build it (6 size ids, no aesthetic
    score: projection_class_embeddings_input_dim = 6 x 8 + 32)."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **UNET_LAYOUT,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=96,  # the encoders' widths side by side: 32 + 64
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    vae = tiny_vae()
    config = CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        vocab_size=49408,
        hidden_act="gelu",
        projection_dim=32,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(config)
    torch.manual_seed(
        1
    )  # wider than the first, as OpenCLIP-bigG is than CLIP-L (checkpoint files tell them so)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**{**config.to_dict(), "hidden_size": 64}))
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(str(TOKENIZER), model_max_length=77),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(TOKENIZER), model_max_length=77, pad_token="!"),
        scheduler=scheduler,
    )


def tiny_xl_pipeline():
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(**tiny_xl_components(), add_watermarker=False)


def save_tiny_xl_pipeline(folder: Path) -> Path:
    tiny_xl_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder
