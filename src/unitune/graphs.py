"""CUDA graphs: an edit's UNet calls, and a tune's forward and backward, captured once and replayed.

A full-size UNet step is bound by the host on a fast GPU: on an H100 an SD 1.5 LoRA tune step kept the
GPU busy for 57 of about 170 ms, the rest Python and some 2,000 kernel launches
(docs/lab/data/gpu-profile-h100.txt). `torch.cuda.graph` records the kernels of one call and replays them all
with one launch: the same kernels on the same memory, so the numbers are those of the eager call.
PyTorch's recipe is followed (docs: "CUDA Graphs"): warm-up calls on a side stream, then one capture per
call site and input shape; before each replay the inputs are copied into the captured (static) ones.

Used on CUDA when `Runtime.cuda_graphs` is set (the default there, `--cuda-graphs`), for loops long enough
to pay the capture back; elsewhere calls run eagerly, and so do they after a capture fails (a warning
says why).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from .errors import UnituneWarning
from .loading import Runtime

WARMUP_CALLS = 2  # eager calls before a capture (PyTorch's examples use 3 for a whole training step)
MIN_CALLS = 8  # a loop of fewer calls runs eagerly: the warm-up and the capture would cost more


def wanted(runtime: Runtime, calls: int) -> bool:
    """Whether a loop of `calls` UNet calls should run captured."""
    return runtime.cuda_graphs and runtime.device.type == "cuda" and calls >= MIN_CALLS


class Captured:
    """`function(*inputs)` captured once for these inputs' shapes; a call copies its inputs into the
    static ones and replays. What it returns is static memory: read it before the next call.

    `between_warmups` runs after each warm-up call (a tune sets its gradients to None there, so that the
    captured backward allocates them in the graph's own memory)."""

    def __init__(self, function: Callable, inputs: tuple[torch.Tensor, ...], between_warmups=None):
        self.inputs = tuple(tensor.detach().clone() for tensor in inputs)
        torch.cuda.empty_cache()  # blocks cached for the current stream: the side stream cannot reuse them
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                function(*self.inputs)
                if between_warmups is not None:
                    between_warmups()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.empty_cache()  # what the warm-up cached on the side stream: not kept twice
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = function(*self.inputs)

    def __call__(self, *inputs: torch.Tensor):
        for static, tensor in zip(self.inputs, inputs, strict=True):
            static.copy_(tensor)
        self.graph.replay()
        return self.outputs


class Replayed:
    """`function` captured at its first call (see `Captured`) and replayed after; called eagerly when
    `enabled` is false, when a later call's input shapes differ, or after the capture failed."""

    def __init__(self, function: Callable, enabled: bool, between_warmups=None, after_failure=None):
        self.function, self.enabled = function, enabled
        self.between_warmups, self.after_failure = between_warmups, after_failure
        self.captured: Captured | None = None
        self.shapes = None

    @property
    def replaying(self) -> bool:
        return self.captured is not None

    def __call__(self, *inputs: torch.Tensor):
        if self.enabled and self.captured is None:
            self._capture(inputs)
        if self.captured is not None and self.shapes == _shapes(inputs):
            return self.captured(*inputs)
        return self.function(*inputs)

    def _capture(self, inputs) -> None:
        self.enabled = False  # one try
        try:
            self.captured = Captured(self.function, inputs, self.between_warmups)
            self.shapes = _shapes(inputs)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            warnings.warn(
                f"CUDA graph capture failed, running eagerly ({first_line}); --cuda-graphs off skips it",
                UnituneWarning,
                stacklevel=3,
            )
            if self.after_failure is not None:
                self.after_failure()


def _shapes(inputs) -> tuple:
    return tuple((tensor.shape, tensor.dtype, tensor.device) for tensor in inputs)
