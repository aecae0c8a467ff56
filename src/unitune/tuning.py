"""UniTune step 1: fine-tune the UNet on one (image latent, rare prompt) pair with the denoising loss.

The latent and the text embedding are computed once; each step draws `batch_size` noises and timesteps
for that one latent (arXiv 2210.09477, section 3). The target follows the scheduler's prediction_type.
`UNetWeights` swaps a tune's weights into the UNet and the base weights back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from . import graphs
from .errors import UnituneError
from .loading import Runtime
from .pipelines import Conditioning, encode, vae_precision
from .progress import Progress, ProgressFn, StopFn, check_stop, report
from .settings import (
    LORA_TARGET_SETS,
    UNIFORM_NOISE_WEIGHTS,
    TuneSettings,
    parse_noise_weights,
    uniform_noise_weights,
)

ADAPTER = "unitune"
# Part of every tune cache key: bump it when a change here (loss, noise and timestep draws, optimizer,
# LoRA initialisation) or in settings.LORA_TARGET_SETS trains other weights from the same settings, so
# tunes made the old way are trained again instead of reused. tests/test_cache.py keeps a fingerprint.
TUNE_RECIPE_VERSION = 3  # 2: stratified timesteps (noisy_batch); 3: fused AdamW on every device


@torch.no_grad()
def encode_latent(pipe, image, runtime: Runtime) -> torch.Tensor:
    """The VAE latent of a PIL image, (1, 4, h, w): the mode for AutoencoderKL, the latents for TAESD."""
    pixels = pipe.image_processor.preprocess(image).to(runtime.device)
    with vae_precision(pipe, runtime):
        encoded = pipe.vae.encode(pixels)
    latent = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
    return latent.float() * pipe.vae.config.scaling_factor


def encode_text(pipe, prompt: str, runtime: Runtime, size: tuple[int, int] | None = None) -> Conditioning:
    """One prompt's conditioning, one row: CLIP hidden states (1, 77, D), and for SDXL the pooled embedding
    and the size ids of an image of `size` (width, height; default the native square)."""
    size = size or (pipe.unet.config.sample_size * pipe.vae_scale_factor,) * 2
    return encode(pipe, prompt, "", False, runtime, size)


def training_scheduler(pipe) -> DDPMScheduler:
    """The DDPM noise schedule the model was trained with (same betas and prediction_type)."""
    return DDPMScheduler.from_config(pipe.scheduler.config)


def noised(scheduler, latents: torch.Tensor, noise: torch.Tensor, steps: torch.Tensor):
    """(noisy, target): `latents` noised at `steps`, and what the UNet should predict there (the noise
    for epsilon models, the velocity for v-prediction)."""
    noisy = scheduler.add_noise(latents, noise, steps)
    if scheduler.config.prediction_type == "v_prediction":
        return noisy, scheduler.get_velocity(latents, noise, steps)
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type}")
    return noisy, noise


def noisy_batch(scheduler, latent: torch.Tensor, batch_size: int, generator: torch.Generator):
    """The one latent noised `batch_size` times: (noisy, timesteps, target), all (B, ...).

    The timesteps are stratified (a low-discrepancy draw, as in Kingma et al. 2021, "Variational Diffusion
    Models", appendix): sample i draws uniformly from the i-th of `batch_size` equal slices of the
    schedule, so each timestep is still uniform but every batch covers the whole schedule. On the
    embedded model this raised the PSNR of R redrawn from noise by 0.5-3 dB on 9 of 10 validation scenes
    at the same cost (docs/lab/binding.md, "Where the remaining error is")."""
    latents = latent.expand(batch_size, -1, -1, -1)
    noise = torch.randn(latents.shape, generator=generator).to(latent.device)
    total = scheduler.config.num_train_timesteps
    slices = (torch.arange(batch_size) + torch.rand(batch_size, generator=generator)) / batch_size
    steps = (slices * total).long().clamp(0, total - 1).to(latent.device)
    noisy, target = noised(scheduler, latents, noise, steps)
    return noisy, steps, target


def denoising_loss(unet, scheduler, latent, text: Conditioning, runtime: Runtime, batch_size: int, generator):
    noisy, steps, target = noisy_batch(scheduler, latent, batch_size, generator)
    return loss_of(unet, noisy, steps, target, text.expand(batch_size), runtime)


def loss_of(
    unet, noisy, steps, target, text: Conditioning, runtime: Runtime, cache: bool = True, weights=None
):
    """The MSE of the UNet's prediction for `noisy` at `steps` against `target` (autocast's cast `cache`
    off for a CUDA graph capture); `weights` (a `NoiseWeights`) weighs each sample by its timestep."""
    with runtime.autocast(cache=cache):
        pred = unet(noisy, steps, **text.unet_kwargs()).sample
    if weights is None:
        return F.mse_loss(pred.float(), target.float())
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
    return (per_sample * weights(steps)).mean()


class NoiseWeights:
    """The tune's loss weight of a timestep: `weights` over equal slices of the `total` training
    timesteps, lowest noise first, scaled to average 1 over the schedule (so a uniform weighting is the
    plain loss). On the embedded model, damping the highest-noise quarter (1,1,1,0.25) bound more
    validation scenes but no more test scenes than the plain loss, so it is an option, not a default
    (docs/lab/binding.md)."""

    def __init__(self, weights: tuple[float, ...], total: int, device):
        table = torch.tensor(weights, dtype=torch.float32)
        self.table = (table / table.mean()).to(device)
        self.total = total

    def __call__(self, steps: torch.Tensor) -> torch.Tensor:
        return self.table[(steps.long() * len(self.table)) // self.total]

    @classmethod
    def of(cls, settings: TuneSettings, scheduler, device) -> NoiseWeights | None:
        """The settings' weighting; None when uniform (the plain loss, bit for bit)."""
        text = settings.noise_weights or UNIFORM_NOISE_WEIGHTS
        if uniform_noise_weights(text):
            return None
        return cls(parse_noise_weights(text), scheduler.config.num_train_timesteps, device)


@torch.no_grad()
def evaluate_loss(pipe, latent, text, runtime: Runtime, samples: int = 16, seed: int = 1234) -> float:
    """Mean denoising loss over a fixed set of noises and timesteps (to compare before/after tuning)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return float(
        denoising_loss(pipe.unet, training_scheduler(pipe), latent, text, runtime, samples, generator)
    )


def add_lora(unet, rank: int, targets: str = "attention", seed: int | None = None) -> None:
    """Add the adapter; `seed` makes its random initialisation repeatable (peft draws it from torch's
    global CPU generator, which is left as it was)."""
    modules = list(LORA_TARGET_SETS[targets])
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=modules)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        unet.add_adapter(config, adapter_name=ADAPTER)


def remove_lora(unet) -> None:
    if getattr(unet, "_hf_peft_config_loaded", False):
        unet.unload_lora()


def merge_lora(unet) -> dict[str, torch.Tensor]:
    """Fold the adapter into its layers' weights and drop the LoRA layers, so sampling costs a plain UNet's
    time. Returns CPU copies of the weights it changed (only those; on the CPU so that they cost no
    accelerator memory while the tune is applied): loading them back restores the base bit for bit, which
    subtracting the update again would not."""
    originals = {}
    for name, module in unet.named_modules():
        if isinstance(module, BaseTunerLayer):
            for key, tensor in module.get_base_layer().state_dict().items():
                originals[f"{name}.{key}"] = tensor.detach().to("cpu", copy=True)
            module.merge(adapter_names=[ADAPTER])
    remove_lora(unet)  # the base layers keep the merged weights, under the names `originals` uses
    return originals


def lora_state(unet) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(unet, adapter_name=ADAPTER)


def load_lora(unet, state: dict[str, torch.Tensor], rank: int, targets: str = "attention") -> None:
    add_lora(unet, rank, targets)
    set_peft_model_state_dict(unet, state, adapter_name=ADAPTER)


def frozen_dtype(settings: TuneSettings, runtime: Runtime) -> torch.dtype | None:
    """The dtype a LoRA tune holds the frozen layers' weights in: the autocast dtype, if there is one."""
    return runtime.dtype if settings.method == "lora" and runtime.dtype != torch.float32 else None


def cast_frozen_layers(unet, dtype: torch.dtype) -> list[tuple[torch.nn.Module, str, str]]:
    """Hold the Linear and Conv2d weights and biases, not a LoRA's own, in `dtype`.

    Autocast casts them to that dtype at every use anyway, so a LoRA tune computes the same numbers bit
    for bit (tested on the CPU in bfloat16), without float32 originals or per-step casts: an SD 1.5 UNet
    holds 1.7 GB of weights, not 3.4 GB plus 1.7 GB of casts saved for the backward pass. Norm layers,
    which autocast runs in float32, keep their float32 weights. Returns (module, parameter name,
    state-dict key once the adapter is removed) of every tensor it cast."""
    cast = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d) and "lora_" not in name:
            key = name.replace(".base_layer", "")
            for parameter_name, parameter in module.named_parameters(recurse=False):
                parameter.data = parameter.data.to(dtype)
                cast.append((module, parameter_name, f"{key}.{parameter_name}"))
    return cast


def trainable_parameters(unet, method: str) -> list[torch.nn.Parameter]:
    unet.requires_grad_(False)
    params = [p for name, p in unet.named_parameters() if method == "full" or "lora_" in name]
    for param in params:
        param.requires_grad_(True)
    return params


def train(
    pipe,
    latent: torch.Tensor,
    text: Conditioning,
    settings: TuneSettings,
    runtime: Runtime,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> list[float]:
    """Fine-tune pipe.unet in place (all weights or an already added LoRA); returns the step losses."""
    settings = settings.resolved()
    unet, scheduler = pipe.unet, training_scheduler(pipe)
    params = trainable_parameters(unet, settings.method)
    optimizer = make_optimizer(params, settings, runtime)
    schedule = get_scheduler(
        settings.lr_schedule, optimizer, num_warmup_steps=0, num_training_steps=settings.steps
    )
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.dtype == torch.float16)
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    losses = []
    captured = graphs.wanted(runtime, settings.steps)
    checkpointing = uses_checkpointing(settings, runtime, unet, latent)
    if checkpointing:  # a captured backward cannot save and restore the RNG state; the UNet draws none
        unet.enable_gradient_checkpointing(_checkpoint_without_rng if captured else None)
    weights = NoiseWeights.of(settings, scheduler, latent.device)
    backward = _backward_pass(unet, text.expand(settings.batch_size), runtime, scaler, captured, weights)
    clear_grads = _clearer(params)
    replayed = graphs.Replayed(backward, captured, between_warmups=clear_grads, after_failure=clear_grads)
    unet.train()
    try:
        for step in range(1, settings.steps + 1):
            check_stop(should_stop)
            noisy, steps, target = noisy_batch(scheduler, latent, settings.batch_size, generator)
            if not replayed.replaying:  # a replay writes the captured gradients over the last ones
                optimizer.zero_grad(set_to_none=True)
            loss = replayed(noisy, steps, target)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            losses.append(loss.item())
            report(progress, Progress("tune", step, settings.steps, loss=losses[-1]))
    finally:
        for param in params:
            param.grad = None  # a full SD 1.5 tune would otherwise hold ~3.4 GB of gradients
        optimizer.state.clear()
        if checkpointing:
            unet.disable_gradient_checkpointing()
        unet.eval()
        unet.requires_grad_(False)
    return losses


def _backward_pass(unet, text: Conditioning, runtime: Runtime, scaler, captured: bool, weights=None):
    """(noisy, timesteps, target) -> the loss, its (scaled) gradients accumulated: one tune step's
    forward and backward, the part a CUDA graph replays."""

    def backward(noisy, steps, target):
        loss = loss_of(unet, noisy, steps, target, text, runtime, cache=not captured, weights=weights)
        scaler.scale(loss).backward()
        return loss.detach()

    return backward


def _clearer(params):
    def clear_grads():
        for param in params:
            param.grad = None

    return clear_grads


def _checkpoint_without_rng(function, *args, **kwargs):
    return torch.utils.checkpoint.checkpoint(
        function, *args, use_reentrant=False, preserve_rng_state=False, **kwargs
    )


# Activation memory of a tune step without checkpointing, per latent position per sample (float16
# autocast): measured on an H100 as 7.5 kB per image pixel for SD 1.5 and 9.4 kB for SDXL
# (docs/lab/gpu-checks.md); 10 kB per pixel, 64 pixels per latent position, to be safe.
ACTIVATION_BYTES_PER_LATENT = 10_000 * 64
FREE_MEMORY_SHARE = 0.9  # what a tune may plan to use of the free accelerator memory


def tune_memory_estimate(unet, settings: TuneSettings, latent: torch.Tensor) -> int:
    """Bytes a tune would add to the loaded model without gradient checkpointing: gradients and AdamW's
    two moments for a full tune (12 bytes a float32 weight; a LoRA's are negligible), plus activations."""
    state = 12 * sum(param.numel() for param in unet.parameters()) if settings.method == "full" else 0
    positions = latent.shape[-1] * latent.shape[-2]
    return state + ACTIVATION_BYTES_PER_LATENT * settings.batch_size * positions


def uses_checkpointing(settings: TuneSettings, runtime: Runtime, unet, latent: torch.Tensor) -> bool:
    """Gradient checkpointing (Chen et al. 2016): on, off, or by default on CUDA when the tune would not
    fit in 90% of the free memory without it (it costs about twice the time: SD 1.5 on an H100, 40 s
    against 19 s, for 17 GB against 21 GB). Off on the CPU and MPS, where memory is rarely the limit."""
    if settings.gradient_checkpointing != "auto":
        return settings.gradient_checkpointing == "on"
    if runtime.device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(runtime.device)
    return tune_memory_estimate(unet, settings, latent) > FREE_MEMORY_SHARE * free


def make_optimizer(params, settings: TuneSettings, runtime: Runtime) -> torch.optim.Optimizer:
    """AdamW without weight decay, fused into one kernel per step on every device (the same update up to
    rounding; on the CPU a full tune step of the embedded model takes 109 ms instead of 131, docs/core.md),
    or bitsandbytes' 8-bit AdamW (Dettmers et al. 2022) when asked: 2 bytes of state per weight, not 8."""
    if settings.optimizer == "adamw8bit":
        try:
            import bitsandbytes
        except ImportError:
            raise UnituneError("--optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes") from None
        if runtime.device.type != "cuda":
            raise UnituneError("--optimizer adamw8bit needs a CUDA device; use adamw here")
        return bitsandbytes.optim.AdamW8bit(params, lr=settings.learning_rate, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0, fused=True)
