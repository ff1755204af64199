"""The sampling's forward pass in the fastest form the model allows.

On a GPU, a convolutional model runs in channels-last memory (cuDNN's tensor-core kernels read
NHWC). For long runs the model is also compiled by ``torch.compile`` for the one batch shape
of the sampling's chunks (on a GPU with CUDA graphs, mode ``reduce-overhead``: one graph
launch per chunk instead of a kernel launch per layer); a smaller batch (the run's last
chunk, F at the points) is padded up to that shape, so that nothing is compiled twice.
Compilation is the compiler's, not ours: this module only decides when it pays, feeds it one
shape and falls back, with a one-line notice, where it fails.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from locrob.errors import summary
from locrob.runtime import quiet_cuda_probe

COMPILE = ("auto", "on", "off")
# "auto" compiles runs of at least this many images on a GPU: compilation takes tens of
# seconds, which the paper's protocol (3 M images) pays back and a short run does not
AUTO_COMPILE_IMAGES = 1_000_000
BACKEND = "inductor"  # torch.compile's backend ("eager" traces without generating code)


def compiles(setting: str, device: torch.device, images: int) -> bool:
    """Whether a run of ``images`` perturbed images on ``device`` compiles the model."""
    if setting == "auto":
        return device.type == "cuda" and images >= AUTO_COMPILE_IMAGES
    return setting == "on"


def channels_last_pays(model: Callable, device: torch.device, example: torch.Tensor) -> bool:
    """Channels-last memory: for a convolutional ``nn.Module`` on images, on a GPU."""
    return (
        device.type == "cuda"
        and example.ndim == 4
        and isinstance(model, nn.Module)
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )


@contextlib.contextmanager
def channels_last(model: Callable, on: bool) -> Iterator[None]:
    """The model's 4-d weights in channels-last memory for the block, then contiguous again
    (left alone if ``on`` is false or any of them was channels-last already)."""
    four_d = [t for t in (*model.parameters(), *model.buffers()) if t.ndim == 4] if on else []
    if not on or any(not t.is_contiguous() for t in four_d):
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


class ChunkForward:
    """``model`` for the sampling: inputs in channels-last memory where ``layout`` says so
    and, with ``compile``, the model compiled for batches of exactly ``batch`` inputs.

    A smaller batch is padded with copies of its last input up to ``batch`` and the padding's
    outputs dropped; a larger one, or one with gradients (the search's ascent), runs the
    model as it is. If compilation fails, a one-line warning says so and every call from then
    on runs the model as it is.
    """

    def __init__(self, model: Callable, batch: int, compile: bool, layout: bool) -> None:
        self.model, self.batch, self.layout = model, batch, layout
        self.compiled: Callable | None = None
        if compile:
            quiet_cuda_probe()
            mode = "reduce-overhead" if _on_cuda(model) and BACKEND == "inductor" else None
            self.compiled = torch.compile(model, backend=BACKEND, mode=mode, dynamic=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if self.compiled is None or n > self.batch or torch.is_grad_enabled():
            return self.model(self._laid_out(x))
        padded = x
        if n < self.batch:
            padded = torch.cat([x, x[-1:].expand(self.batch - n, *x.shape[1:])])
        try:
            # laid out after the padding (a concatenation's result is contiguous): the
            # compiler guards on strides, and another layout would build a second graph
            out = self.compiled(self._laid_out(padded))
        except Exception as err:  # the compiler's failures come in many types
            self.compiled = None
            warnings.warn(
                f"alpha_lim: torch.compile failed ({summary(err)}); the model runs uncompiled",
                stacklevel=2,
            )
            return self.model(self._laid_out(x))
        # a copy: CUDA graphs write the next chunk's outputs into the same memory
        return out[:n].clone()

    def _laid_out(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.layout else x


def _on_cuda(model: Callable) -> bool:
    if not isinstance(model, nn.Module):
        return False
    first = next(iter(model.parameters()), None)
    return first is not None and first.is_cuda
