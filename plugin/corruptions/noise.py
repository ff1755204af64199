"""Noise corruptions: Gaussian, shot (Poisson) and impulse (salt-and-pepper) noise.

Parameters are those of ``make_cifar_c.py`` (preset ``cifar``) and ``make_imagenet_c.py``
(preset ``imagenet``) in the public hendrycks/robustness repository.
"""

from __future__ import annotations

import torch

from locrob.corruptions.base import Corruption
from locrob.streams import Streams


def gaussian_noise(x: torch.Tensor, std: float, streams: Streams) -> torch.Tensor:
    """x + N(0, std²) per pixel and channel."""
    return x + std * streams.randn(x.shape[1:], x.dtype)


def shot_noise(x: torch.Tensor, photons: float, streams: Streams) -> torch.Tensor:
    """Poisson(x · photons) / photons: photon counting at ``photons`` per unit intensity."""
    return streams.poisson(x * photons) / photons


def impulse_noise(x: torch.Tensor, amount: float, streams: Streams) -> torch.Tensor:
    """Each value replaced with probability ``amount`` by 0 or 1 (equally likely).

    As scikit-image's ``random_noise(mode='s&p')``, which the reference calls.
    """
    flipped = streams.rand(x.shape[1:]) < amount
    salt = streams.rand(x.shape[1:]) < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


CORRUPTIONS = (
    Corruption(
        "gaussian_noise",
        gaussian_noise,
        {"cifar": (0.04, 0.06, 0.08, 0.09, 0.10), "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38)},
    ),
    Corruption(
        "shot_noise",
        shot_noise,
        {"cifar": (500, 250, 100, 75, 50), "imagenet": (60, 25, 12, 5, 3)},
    ),
    Corruption(
        "impulse_noise",
        impulse_noise,
        {"cifar": (0.01, 0.02, 0.03, 0.05, 0.07), "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27)},
    ),
)
