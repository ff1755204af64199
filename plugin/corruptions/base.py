"""What every corruption shares: its parameter table, the input checks, the random stream.

A corruption is one function of (images, parameters, generator) and a table of parameters per
preset and severity. The base owns validation, dtype handling and seeding, so each corruption
module holds only its own math, the way each torchattacks attack does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from locrob.errors import LocrobError

SEVERITIES = (1, 2, 3, 4, 5)
PRESETS = ("cifar", "imagenet")

Apply = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]


def check_images(images: object, owner: str = "corruption") -> torch.Tensor:
    """``images`` as a float NCHW batch in [0, 1] with 1 or 3 channels, or a clear error."""
    if not isinstance(images, torch.Tensor):
        raise LocrobError(f"{owner}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise LocrobError(
            f"{owner}: images must be a batch N x C x H x W, got shape {tuple(images.shape)}; "
            "add a batch axis with images.unsqueeze(0)"
        )
    if images.shape[1] not in (1, 3):
        raise LocrobError(
            f"{owner}: images must have 1 (grey) or 3 (RGB) channels on axis 1, got "
            f"{images.shape[1]} (shape {tuple(images.shape)}); channels-last images need "
            "images.permute(0, 3, 1, 2)"
        )
    if not images.is_floating_point():
        raise LocrobError(
            f"{owner}: images must be floats in [0, 1], got {images.dtype}; "
            "convert uint8 images with images.float() / 255"
        )
    if images.numel():
        low, high = torch.aminmax(images)
        if not (low >= 0 and high <= 1):
            raise LocrobError(
                f"{owner}: images must lie in [0, 1], got values in [{float(low):.4g}, "
                f"{float(high):.4g}]; undo any normalization (models here normalize inside)"
            )
    return images


def check_severity(severity: object, owner: str = "corruption") -> int:
    """``severity`` as an int in 1..5, or a clear error."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise LocrobError(f"{owner}: severity must be an integer from 1 to 5, got {severity!r}")
    return severity


def make_generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    """A generator on ``device``: given, seeded from an int, or seeded 0 for reproducibility."""
    if isinstance(seed, torch.Generator):
        if seed.device.type != device.type:
            raise LocrobError(
                f"corruption: the generator is on {seed.device} but the images are on {device}"
            )
        return seed
    return torch.Generator(device).manual_seed(0 if seed is None else int(seed))


def uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator
) -> torch.Tensor:
    """Uniform draws in [low, high) in float64 on the generator's device."""
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)
    return low + (high - low) * u


@dataclass(frozen=True)
class Corruption:
    """A named corruption with parameters for each preset and severity.

    ``apply(images, parameters, generator)`` gets float32 (or float64) NCHW images in [0, 1]
    with 1 or 3 channels and ``parameters = params[preset][severity - 1]``, and returns images
    of the same shape in [0, 1]. Register one from a plugin::

        @locrob.hookimpl
        def register_corruptions(register):
            register("invert", Corruption("invert", lambda x, p, g: p * (1 - x) + (1 - p) * x,
                                          {"cifar": (0.2, 0.4, 0.6, 0.8, 1.0)}))
    """

    name: str
    apply: Apply
    params: Mapping[str, Sequence[Any]]

    def __post_init__(self) -> None:
        for preset, table in self.params.items():
            if len(table) != len(SEVERITIES):
                raise LocrobError(
                    f"corruption '{self.name}': preset '{preset}' needs 5 parameter sets (one "
                    f"per severity), got {len(table)}"
                )

    def parameters(self, severity: int, preset: str = "cifar") -> Any:
        """The parameters used at ``severity`` under ``preset``."""
        check_severity(severity, f"corruption '{self.name}'")
        if preset not in self.params:
            raise LocrobError(
                f"corruption '{self.name}' has no preset '{preset}'; its presets: "
                f"{', '.join(self.params)}"
            )
        return self.params[preset][severity - 1]

    def __call__(
        self,
        images: torch.Tensor,
        severity: int,
        *,
        preset: str = "cifar",
        seed: int | torch.Generator | None = None,
    ) -> torch.Tensor:
        """Corrupt a batch at ``severity`` (1-5); ``seed`` (int or generator) fixes the draw."""
        owner = f"corruption '{self.name}'"
        params = self.parameters(severity, preset)
        check_images(images, owner)
        generator = make_generator(seed, images.device)
        work = images if images.dtype == torch.float64 else images.float()
        out = self.apply(work, params, generator)
        return out.clamp(0, 1).to(images.dtype)
