"""The 15 corruptions of CIFAR-10-C / ImageNet-C as batched tensor ops, and the corruption plugin.

``corrupt(images, "fog", severity=3)`` corrupts a float NCHW batch in [0, 1] on its own device.
Each corruption is a :class:`Corruption` registered through the ``register_corruptions`` hook,
so plugins add their own under new names.
"""

from __future__ import annotations

import torch

from locrob import plugins
from locrob.corruptions import blur, digital, noise, weather
from locrob.corruptions.base import PRESETS, SEVERITIES, Corruption, check_severity
from locrob.data.images import check_images
from locrob.hookspecs import RegisterCorruption, hookimpl

BUILTIN = (*noise.CORRUPTIONS, *blur.CORRUPTIONS, *weather.CORRUPTIONS, *digital.CORRUPTIONS)
# the 15 of CIFAR-10-C, in the order of its paper and of Table 2's mCE
NAMES = tuple(c.name for c in BUILTIN)


def get_corruption(name: str) -> Corruption:
    """The registered corruption ``name`` (built-in or from a plugin)."""
    return plugins.registries().corruptions.get(name)


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    *,
    preset: str = "cifar",
    seed: int | torch.Generator | None = None,
) -> torch.Tensor:
    """``images`` (float NCHW in [0, 1], 1 or 3 channels) corrupted by ``name`` at ``severity``.

    ``preset`` picks the parameters: ``cifar`` (CIFAR-10-C's) or ``imagenet`` (ImageNet-C's);
    ``seed`` (an int or a ``torch.Generator`` on the images' device) fixes the random draws.
    """
    return get_corruption(name)(images, severity, preset=preset, seed=seed)


@hookimpl
def register_corruptions(register: RegisterCorruption) -> None:
    for corruption in BUILTIN:
        register(corruption.name, corruption)


__all__ = [
    "BUILTIN",
    "NAMES",
    "PRESETS",
    "SEVERITIES",
    "Corruption",
    "check_images",
    "check_severity",
    "corrupt",
    "get_corruption",
]
