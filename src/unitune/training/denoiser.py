"""Stage 2 of the recipe: train the UNet and the text encoder together on pre-encoded latents.

v-prediction on a zero-terminal-SNR schedule (Lin et al. 2023, "Common Diffusion Noise Schedules and
Sample Steps are Flawed"); captions with parts dropped and 10% empty for classifier-free guidance;
an exponential moving average of the weights is what ships. Runs on any torch device: captions come
pre-tokenized from a `CaptionBank`, indices, noise and timesteps are drawn on the CPU from seeded
generators (the same data on every device), and CUDA steps run under bf16 autocast."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from transformers import CLIPTextModel

from .autoencoder import cosine, set_lr
from .checkpoints import Checkpointer, TrainingClock, TrainingLog
from .data import CaptionBank, NamedScenes, RarePrefix


class DenoiserTrainer:
    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        scheduler: DDIMScheduler,
        latents: torch.Tensor,
        captions: CaptionBank,
        lr: float = 1e-3,
        batch_size: int = 64,
        ema_decay: float = 0.999,
        prefix: RarePrefix | None = None,
        named: NamedScenes | None = None,
    ):
        self.unet, self.text_encoder, self.scheduler = unet, text_encoder, scheduler
        self.latents, self.captions, self.prefix, self.named = latents, captions, prefix, named
        self.device = latents.device
        self.lr, self.batch_size = lr, batch_size
        self.parameters = [*unet.parameters(), *text_encoder.parameters()]
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=lr, weight_decay=0.0, betas=(0.9, 0.99), fused=fused or None
        )
        self.ema = EMAModel(self.parameters, decay=ema_decay, use_ema_warmup=True, power=2 / 3, foreach=True)

    def autocast(self):
        """bf16 autocast on CUDA; full precision elsewhere (bf16 is slower for these convolutions on CPU)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def loss(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        variants = torch.randint(self.captions.variants, (len(indices),), generator=generator)
        noise = torch.randn((len(indices), *self.latents.shape[1:]), generator=generator)
        timesteps = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (len(indices),), generator=generator
        )
        ids = self.captions.batch(indices, variants)
        if self.prefix is not None:
            ids = self.prefix.apply(ids, generator)
        latents = self.latents[indices.to(self.device)]
        if self.named is not None:  # after the prefix: a name stands right after the start token, as R does
            latents, ids = self.named.mix(latents, ids, generator)
        noise, timesteps = noise.to(self.device), timesteps.to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = self.scheduler.get_velocity(latents, noise, timesteps)
        with self.autocast():
            hidden = self.text_encoder(ids)[0]
            noisy = noisy.contiguous(memory_format=torch.channels_last)
            prediction = self.unet(noisy, timesteps, hidden).sample
        return (prediction.float() - target).pow(2).mean()

    def train(
        self,
        checkpointer: Checkpointer,
        log: TrainingLog,
        minutes: float,
        evaluate: Callable[[], dict],
        evaluate_every_minutes: float = 10.0,
        seed: int = 0,
    ) -> None:
        modules = _Modules(self.unet, self.text_encoder)
        state = checkpointer.restore(modules, self.optimizer)
        if checkpointer.exists():
            self.ema.load_state_dict(torch.load(checkpointer.folder / "ema.pt", weights_only=True))
        generator = torch.Generator().manual_seed(seed + state["step"])
        clock = TrainingClock(state, minutes)
        next_eval = state.get("next_eval", evaluate_every_minutes * 60)
        self.unet.train(), self.text_encoder.train()
        last_log = time.monotonic()
        for spent in clock.steps():
            set_lr(self.optimizer, self.lr * cosine(spent))
            indices = torch.randint(len(self.latents), (self.batch_size,), generator=generator)
            loss = self.loss(indices, generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
            self.optimizer.step()
            self.ema.step(self.parameters)
            clock.count_step()
            if state["step"] % 50 == 0:
                now = time.monotonic()
                log.write(
                    stage="denoiser",
                    step=state["step"],
                    minutes=state["seconds"] / 60,
                    samples=state["step"] * self.batch_size,
                    samples_per_second=50 * self.batch_size / (now - last_log),
                    loss=loss.item(),
                )
                last_log = now
            if state["seconds"] >= next_eval:
                paused = time.monotonic()
                with clock.paused():  # evaluation time is not training time
                    self.log_evaluation(log, state, evaluate)
                last_log += time.monotonic() - paused
                next_eval += evaluate_every_minutes * 60
                state["next_eval"] = next_eval
            if time.monotonic() - checkpointer.last_save >= checkpointer.every:
                self.save(checkpointer, modules, state)
        if clock.trained:
            self.save(checkpointer, modules, state)

    def log_evaluation(self, log: TrainingLog, state: dict, evaluate: Callable[[], dict]) -> None:
        with self.ema_weights():
            scores = evaluate()
        log.write(
            stage="evaluation",
            step=state["step"],
            minutes=state["seconds"] / 60,
            samples=state["step"] * self.batch_size,
            **scores,
        )

    def save(self, checkpointer: Checkpointer, modules: torch.nn.Module, state: dict) -> None:
        checkpointer.save(modules, self.optimizer, state)
        torch.save(self.ema.state_dict(), checkpointer.folder / "ema.pt")

    @contextmanager
    def ema_weights(self):
        """Swap the EMA weights in (eval mode) for the duration of the block."""
        self.ema.store(self.parameters)
        self.ema.copy_to(self.parameters)
        self.unet.eval(), self.text_encoder.eval()
        try:
            yield
        finally:
            self.ema.restore(self.parameters)
            self.unet.train(), self.text_encoder.train()


class _Modules(torch.nn.Module):
    """UNet and text encoder under one module, so one safetensors file holds both."""

    def __init__(self, unet, text_encoder):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
