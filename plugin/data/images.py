"""The image-data container and the checks every image tensor passes through."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from locrob.errors import LocrobError

SPLITS = ("train", "test")


def check_images(
    images: object, what: str = "images", *, uint8: bool = True, empty: bool = False
) -> torch.Tensor:
    """``images`` if they are an N x C x H x W tensor with 1 or 3 channels, uint8 (where
    ``uint8``) or finite floats in [0, 1], and not empty (unless ``empty``); else a
    :class:`LocrobError` that says how to fix them. The one image check of the project.

    Normalization belongs inside the model (as in RobustBench and torchattacks), so float
    images outside [0, 1] are refused rather than silently clamped.
    """
    if not isinstance(images, torch.Tensor):
        raise LocrobError(f"{what} must be a torch.Tensor, got {type(images).__name__}")
    x = images
    if x.ndim != 4:
        raise LocrobError(
            f"{what} must be a 4-D NCHW batch (N x C x H x W), got shape {tuple(x.shape)}; "
            "add a batch or channel axis (x.unsqueeze(0) or x[:, None])"
        )
    if x.shape[1] not in (1, 3):
        if x.shape[-1] in (1, 3):
            raise LocrobError(
                f"{what} look channels-last (shape {tuple(x.shape)}): locrob takes N x C x H x W "
                "with 1 (grey) or 3 (RGB) channels on axis 1; use x.permute(0, 3, 1, 2)"
            )
        raise LocrobError(
            f"{what} must have 1 (grey) or 3 (RGB) channels on axis 1, got {x.shape[1]} "
            f"(shape {tuple(x.shape)})"
        )
    if x.shape[0] == 0 and not empty:
        raise LocrobError(f"{what} are empty (shape {tuple(x.shape)})")
    if x.dtype == torch.uint8 and uint8:
        return x
    if not torch.is_floating_point(x):
        kinds = "uint8 or floating point" if uint8 else "floats in [0, 1]"
        raise LocrobError(
            f"{what} must be {kinds}, got {x.dtype}; convert uint8 images with x.float() / 255"
        )
    if x.numel():
        low, high = (float(v) for v in torch.aminmax(x))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise LocrobError(f"{what} contain NaN or Inf values")
        if low < 0.0 or high > 1.0:
            raise LocrobError(
                f"{what} must lie in [0, 1], found values in [{low:.4g}, {high:.4g}]; divide "
                "uint8 pixels by 255 and move any normalization inside the model"
            )
    return x


def as_images(images: torch.Tensor | np.ndarray, *, what: str = "images") -> torch.Tensor:
    """An image data set's tensor, checked (:func:`check_images`): uint8, or float32 in [0, 1]."""
    x = check_images(torch.as_tensor(images), what)
    return x if x.dtype == torch.uint8 else x.float()


def as_labels(labels: torch.Tensor | np.ndarray, n: int, *, what: str = "labels") -> torch.Tensor:
    """Check and return integer class labels, one per image."""
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise LocrobError(f"{what} must be one integer per image ({n}), got shape {tuple(y.shape)}")
    if torch.is_floating_point(y) or y.dtype == torch.bool:
        raise LocrobError(f"{what} must be integers, got {y.dtype}")
    if n and int(y.min()) < 0:
        raise LocrobError(f"{what} must be non-negative class indices")
    return y.long()


def to_float(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A batch as float32 in [0, 1] on ``device`` (uint8 is scaled by 1/255)."""
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


@dataclass
class ImageData:
    """A labelled image data set, train and test splits, held as uint8 (or float in [0, 1])."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for split in SPLITS:
            x = as_images(getattr(self, f"{split}_x"), what=f"{self.name} {split} images")
            y = as_labels(getattr(self, f"{split}_y"), len(x), what=f"{self.name} {split} labels")
            setattr(self, f"{split}_x", x)
            setattr(self, f"{split}_y", y)
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise LocrobError(
                f"{self.name}: train images {tuple(self.train_x.shape[1:])} and test images "
                f"{tuple(self.test_x.shape[1:])} differ in shape"
            )
        labels_span = int(max(self.train_y.max(), self.test_y.max())) + 1
        if not self.classes:
            self.classes = [str(c) for c in range(labels_span)]
        self.classes = [str(c) for c in self.classes]
        if labels_span > len(self.classes):
            raise LocrobError(
                f"{self.name}: label {labels_span - 1} is out of range for "
                f"{len(self.classes)} classes"
            )

    @property
    def num_classes(self) -> int:
        """The number of classes: ``len(classes)``, which every label is below."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of ``"train"`` or ``"test"``."""
        if split not in SPLITS:
            raise LocrobError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
        return getattr(self, f"{split}_x"), getattr(self, f"{split}_y")

    def describe(self) -> dict[str, object]:
        """A JSON-able summary for reports."""
        return {
            "name": self.name,
            "n_train": len(self.train_y),
            "n_test": len(self.test_y),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
        }


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device | str | None = None,
    order: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Float batches in [0, 1] on ``device``, in ``order`` (an index permutation) if given."""
    n = len(y)
    for start in range(0, n, batch_size):
        idx = (
            slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        )
        yield to_float(x[idx], device), y[idx].to(device, non_blocking=True)
