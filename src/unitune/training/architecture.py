"""Shapes of the embedded model's parts: a conv-only AutoencoderTiny (64x64x3 <-> 16x16x8), a small
CLIP text encoder over CLIP's BPE vocabulary, and a small latent UNet with cross-attention.

Eight latent channels (6x compression rather than 12x with four) keep the edges of 14-pixel shapes
through the round trip; they cost the UNet almost nothing. The UNet's widest level is its coarsest,
where extra width is nearly free on a CPU (measured: 4.2M parameters train as fast as 1.7M)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers import AutoencoderTiny, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..shapes.world import IMAGE_SIZE

LATENT_CHANNELS = 8
LATENT_STRIDE = 4  # pixels per latent cell (two 2x downsamplings)
LATENT_SIZE = IMAGE_SIZE // LATENT_STRIDE
MAX_TOKENS = 32  # captions are at most 16 tokens; the rest leaves room for UniTune's rare prompt


@dataclass(frozen=True)
class ArchitectureConfig:
    autoencoder_channels: int = 64
    text_width: int = 64
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_layers_per_block: int = 1
    unet_down_blocks: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    unet_up_blocks: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    attention_head_dim: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


def build_autoencoder(config: ArchitectureConfig) -> AutoencoderTiny:
    channels = (config.autoencoder_channels,) * 3
    return AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=channels,
        decoder_block_out_channels=channels,
        num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(1, 1, 1),
        latent_channels=LATENT_CHANNELS,
        upsampling_scaling_factor=2,
        scaling_factor=1.0,
    )


def build_text_encoder(config: ArchitectureConfig, vocab_size: int) -> CLIPTextModel:
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=config.text_width,
        intermediate_size=config.text_width * 4,
        num_hidden_layers=config.text_layers,
        num_attention_heads=max(1, config.text_width // 32),
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(text_config)


def build_unet(config: ArchitectureConfig) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=config.unet_channels,
        layers_per_block=config.unet_layers_per_block,
        down_block_types=config.unet_down_blocks,
        up_block_types=config.unet_up_blocks,
        cross_attention_dim=config.text_width,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=32,
        # A pooled caption embedding added to the timestep embedding: a fast global path for
        # attributes such as the background colour. Needs no extra pipeline inputs.
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
    )


def build_scheduler() -> DDIMScheduler:
    """v-prediction on a zero-terminal-SNR schedule, so strength 1.0 really starts from pure noise."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
