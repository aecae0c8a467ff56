"""`UNetWeights`: the one owner of which weights the UNet (and the autoencoder's decoder) holds: the
base weights, or a tune's, swapped in and out. The training loop and LoRA plumbing it uses live in
`tuning.py`."""

from __future__ import annotations

import contextlib

import torch

from .decoder_fit import split_decoder
from .settings import TuneSettings
from .tuning import add_lora, cast_frozen_layers, load_lora, lora_state, merge_lora, remove_lora


class UNetWeights:
    """The one owner of which weights the UNet holds: its base weights, or a tune's, swapped in and out.

    Invariant: outside an `applied` or `training` block the UNet holds its base weights, bit for bit, or,
    after an `applied(..., keep=True)` block, the tune `applied_key` names (so the next edit with that
    tune swaps nothing); `restore_base` puts the base back (tests/test_tuning.py and tests/test_memory.py
    check it tensor by tensor after tunes, edits, sweeps and cancelled calls).
    A full tune swaps whole state dicts: the base is copied once, to the CPU (a second UNet in accelerator
    memory would cost as much as the model), and loaded back after. A LoRA is merged into the weights
    while sampling (peft's `merge`, then the adapter layers are dropped, so a step costs a plain UNet's),
    and CPU copies of the few weights the merge changed are loaded back after: subtracting the update again
    would not give the base back exactly.
    A tune with a decoder fit (`unitune.decoder_fit`) also carries the autoencoder's decoder: it goes in
    and out with the UNet's weights, the base decoder back from a CPU copy.
    """

    def __init__(self, unet, decoder=None):
        self.unet = unet
        self.decoder = decoder  # the autoencoder's decoder (None: a tune never changes it)
        self._decoder_base: dict[str, torch.Tensor] | None = None  # its CPU copy, at the first fit
        self._decoder_applied = False  # a fitted decoder (or one being fitted) is in place
        self._showing_model_decoder = False  # inside `model_decoder`: the model's decoder stands in for it
        self._base_state: dict[str, torch.Tensor] | None = None  # the CPU copy, taken at the first full tune
        self._full_applied = False  # a full tune's weights (or a full tune in training) are in the UNet
        self._lora_originals: dict[str, torch.Tensor] | None = None  # the weights a merged LoRA changed
        self.applied_key: str | None = None  # the tune kept applied after its block (None: none is)
        self._cast: list | None = None  # the frozen weights a LoRA tune holds in half precision

    def snapshot_base(self) -> None:
        """Keep a CPU copy of the base weights (once), so a full tune can be swapped out again."""
        if self._base_state is None:
            state = self.unet.state_dict()
            self._base_state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}

    def restore_base(self) -> None:
        """Put the base weights back (a no-op when they are in place): drop any adapter, reload the weights
        a merged LoRA changed, or the base state dict after a full tune; the base decoder after a fit."""
        self.applied_key = None
        self._restore_base_unet()
        if self._decoder_applied:
            self.decoder.load_state_dict(self._decoder_base)
            self._decoder_applied = False

    def _restore_base_unet(self) -> None:
        remove_lora(self.unet)
        if self._cast is not None:  # new float32 tensors from the CPU copy: the base, bit for bit
            for module, parameter_name, key in self._cast:
                parameter = getattr(module, parameter_name)
                parameter.data = self._base_state[key].to(parameter.device)
            self._cast = None
        if self._lora_originals is not None:
            self.unet.load_state_dict(self._lora_originals, strict=False)
            self._lora_originals = None
        if self._full_applied:
            self.unet.load_state_dict(self._base_state)
            self._full_applied = False

    @property
    def decoder_fitted(self) -> bool:
        """A tune's fitted decoder is in place (the model's is kept on the CPU)."""
        return self._decoder_applied and not self._showing_model_decoder

    def _snapshot_decoder(self) -> None:
        if self._decoder_base is None:
            state = self.decoder.state_dict()
            self._decoder_base = {name: t.detach().to("cpu", copy=True) for name, t in state.items()}

    @contextlib.contextmanager
    def model_decoder(self):
        """The model's own decoder inside the block, the applied tune's fitted one again after it (a no-op
        without one): to see what the UNet's tune alone draws (the benchmark's binding rows)."""
        if not self.decoder_fitted:
            yield
            return
        fitted = {name: t.detach().clone() for name, t in self.decoder.state_dict().items()}
        self.decoder.load_state_dict(self._decoder_base)
        self._showing_model_decoder = True
        try:
            yield
        finally:
            self._showing_model_decoder = False
            if self._decoder_applied:  # else an error inside put every base weight back: leave it so
                self.decoder.load_state_dict(fitted)

    @contextlib.contextmanager
    def fitting_decoder(self):
        """The decoder ready to be fitted in place inside the block (`decoder_fit.fit_decoder`), the base
        decoder again after it, even after an error."""
        self._snapshot_decoder()
        self._decoder_applied = True
        try:
            yield
        finally:
            self.decoder.load_state_dict(self._decoder_base)
            self._decoder_applied = False

    @contextlib.contextmanager
    def applied(
        self, tensors: dict[str, torch.Tensor] | None, settings: dict, key: str | None = None, keep=False
    ):
        """The tune's weights in the UNet inside the block (a LoRA merged); after it the base weights, or
        with `keep` still the tune's, so that a next block with the same `key` swaps nothing (`tensors`
        may then be None). An error or a stop inside the block puts the base weights back.

        `tensors` and `settings` are a cached tune's: its weights and its resolved settings as a dict
        (`method`, and for a LoRA `lora_rank` and `lora_targets`)."""
        if key is None or key != self.applied_key:
            self.restore_base()
            try:
                self._apply(tensors, settings)
            except BaseException:
                self.restore_base()
                raise
            self.applied_key = key
        try:
            yield
        except BaseException:
            self.restore_base()
            raise
        if not keep:
            self.restore_base()

    @contextlib.contextmanager
    def untuned(self):
        """The base weights inside the block, the applied tune's again after it (a no-op when no tune is
        applied): the low-noise end of an edit with `untuned_tail`. The weights the tune changed are
        copied to the CPU for the block only, so nothing of the tune stays beyond it."""
        key, full, originals = self.applied_key, self._full_applied, self._lora_originals
        if not (full or originals):
            yield
            return
        swapped = self._swappable(self._base_state if full else originals)
        if swapped is not None:  # the base copies sit where the weights do: swap tensors, copy nothing
            yield from swapped
            return
        state = self.unet.state_dict()
        names = state.keys() if full else originals.keys()
        tuned = {name: state[name].detach().to("cpu", copy=True) for name in names}
        self._restore_base_unet()  # the fitted decoder stays: it decodes the edit after these steps
        try:
            yield
        finally:
            self.unet.load_state_dict(tuned, strict=False)  # in place: the tune's weights again
            self._full_applied, self._lora_originals, self.applied_key = full, originals, key

    def _swappable(self, base: dict[str, torch.Tensor]):
        """A generator that points the UNet's tensors at the `base` copies for its one step and back at the
        tune's after it, when every copy has its tensor's device and dtype (the CPU; an accelerator keeps
        no base copy); else None. The UNet only reads them inside (sampling, scoring): they are the copies
        themselves, not new tensors. 19 ms of copying per swap and back on the embedded model becomes none,
        which model guidance pays at every tuned step."""
        tensors = dict(self.unet.named_parameters()) | dict(self.unet.named_buffers())
        if any(
            name not in tensors or (tensors[name].device, tensors[name].dtype) != (saved.device, saved.dtype)
            for name, saved in base.items()
        ):
            return None

        def swap():
            tuned = {name: tensors[name].data for name in base}
            try:
                for name, saved in base.items():
                    tensors[name].data = saved
                yield
            finally:
                for name, data in tuned.items():
                    tensors[name].data = data

        return swap()

    def _apply(self, tensors: dict[str, torch.Tensor], settings: dict) -> None:
        tensors, decoder = split_decoder(tensors)
        if decoder:
            self._snapshot_decoder()
            self._decoder_applied = True
            self.decoder.load_state_dict(decoder)
        if settings["method"] == "lora":
            load_lora(self.unet, tensors, settings["lora_rank"], settings["lora_targets"])
            self._lora_originals = merge_lora(self.unet)
        else:
            self.snapshot_base()
            self._full_applied = True
            self.unet.load_state_dict(tensors)

    @contextlib.contextmanager
    def training(self, settings: TuneSettings, frozen: torch.dtype | None = None):
        """The UNet ready to be tuned in place inside the block (a fresh LoRA added, seeded by the tune seed,
        or the base kept for a full tune), the base weights after it; `tuned_tensors` inside the block
        copies what the tune trained. `frozen` (a LoRA tune's `frozen_dtype`): hold the frozen layers in
        that dtype during the tune (`cast_frozen_layers`); the float32 base comes back from the CPU copy."""
        self.restore_base()
        if settings.method == "lora":
            if frozen is not None:
                self.snapshot_base()  # before the adapter renames the layers it wraps
            add_lora(self.unet, settings.lora_rank, settings.lora_targets, seed=settings.seed)
            if frozen is not None:
                self._cast = cast_frozen_layers(self.unet, frozen)
        else:
            self.snapshot_base()
            self._full_applied = True
        try:
            yield
        finally:
            self.restore_base()

    def tuned_tensors(self, method: str) -> dict[str, torch.Tensor]:
        """CPU copies of the weights a tune of `method` trains: the adapter's, or the whole state dict."""
        state = lora_state(self.unet) if method == "lora" else self.unet.state_dict()
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}
