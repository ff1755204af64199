"""Device choice and progress bars, shared by every long-running piece."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from locrob.errors import LocrobError

T = TypeVar("T")
PROGRESS_ENV = "LOCROB_PROGRESS"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` picks CUDA when present, else the CPU; an unusable device is a clear error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LocrobError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LocrobError(
            f"device '{device}' asked for, but CUDA is not available; use --device cpu"
        )
    return dev


@contextmanager
def eval_mode(model: object) -> Iterator[None]:
    """Put ``model`` in eval mode, then give every submodule back its own train/eval flag.

    ``model.train(previous)`` would not do: it sets all submodules alike, so wrapping a model
    that was in eval mode in a new container (in train mode) would flip it to train mode.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextmanager
def on_device(model: object, device: torch.device) -> Iterator[None]:
    """Move ``model`` to ``device`` for the block, then back where its weights were.

    A caller's model is borrowed, not taken: left on the GPU, it would fail on the caller's CPU
    tensors afterwards. A model without weights, or not an ``nn.Module``, is left alone.
    """
    first = (
        next(itertools.chain(model.parameters(), model.buffers()), None)
        if isinstance(model, nn.Module)
        else None
    )
    if first is None or first.device == device:
        yield
        return
    home = first.device
    model.to(device)
    try:
        yield
    finally:
        model.to(home)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): needed before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _not_no_cuda_runtime(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("No CUDA runtime is found")


def quiet_cuda_probe() -> None:
    """Drop torch's "No CUDA runtime is found" warning: ``torch.compile`` imports
    ``torch.utils.cpp_extension``, which logs it on a machine with a CUDA toolkit but no GPU,
    though compiling for the CPU needs no CUDA. Its other messages are kept."""
    logging.getLogger("torch.utils.cpp_extension").addFilter(_not_no_cuda_runtime)


def best_rate(run: Callable[[], int], device: torch.device, repeats: int = 2) -> float:
    """Units per second of ``run`` (which returns how many units it did), the best of
    ``repeats`` calls, the device synchronized around each."""
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        units = run()
        synchronize(device)
        best = max(best, units / max(time.perf_counter() - start, 1e-9))
    return best


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``, or full precision when ``dtype`` is None
    (:func:`ieee_fp32`)."""
    return ieee_fp32(device) if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextmanager
def ieee_fp32(device: torch.device) -> Iterator[None]:
    """fp32 convolutions and matrix products in IEEE fp32 on a CUDA ``device`` for the block,
    then the settings as they were. cuDNN runs fp32 convolutions in TF32 (10-bit mantissas)
    by default: that error lands in the output differences α_lim divides by the radius, the
    more so the smaller the radius, and no comparison of two equal runs would show it."""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    # cuDNN through its one switch for convolutions and RNNs alike: set apart, torch finds
    # them inconsistent and code reading the switch inside the block (cudnn.flags()) fails
    saved = cudnn.allow_tf32, matmul.fp32_precision
    cudnn.allow_tf32, matmul.fp32_precision = False, "ieee"
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.fp32_precision = saved


def progress_enabled() -> bool:
    """Progress bars are on unless ``LOCROB_PROGRESS=0``."""
    return os.environ.get(PROGRESS_ENV, "1") not in ("0", "false", "no", "off")


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar that honours ``LOCROB_PROGRESS``."""
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


MASK64 = 2**64 - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps): distinct inputs, unrelated streams.

    Python's ``hash`` will not do: ``hash(-1) == hash(-2)``.
    """
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & MASK64)) * 0xBF58476D1CE4E5B9 & MASK64
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & MASK64
        state ^= state >> 29
    return state >> 1
