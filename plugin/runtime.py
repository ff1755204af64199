"""Device choice and progress bars, shared by every long-running piece."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

import torch
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


def progress_enabled() -> bool:
    """Progress bars are on unless ``LOCROB_PROGRESS=0``."""
    return os.environ.get(PROGRESS_ENV, "1") not in ("0", "false", "no", "off")


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar that honours ``LOCROB_PROGRESS``."""
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
