"""Digital corruptions: brightness, contrast, elastic transform, pixelate, JPEG compression.

Parameters are those of ``make_cifar_c.py`` (preset ``cifar``) and ``make_imagenet_c.py``
(preset ``imagenet``) in the public hendrycks/robustness repository.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from locrob.corruptions.base import Corruption
from locrob.corruptions.jpeg import round_trip
from locrob.corruptions.operators import (
    MIRROR,
    REFLECT,
    box_resize_matrix,
    gaussian_blur,
    pixel_grid,
    separable,
)
from locrob.streams import Streams


def brightness(x: torch.Tensor, lift: float, _: Streams) -> torch.Tensor:
    """Add ``lift`` to the HSV value (clipped at 1), hue and saturation unchanged.

    With hue and saturation fixed, every RGB channel is proportional to the value V, so the
    reference's RGB -> HSV -> RGB round trip is ``x · V' / V`` (grey ``V'`` where V = 0).
    """
    value = x.amax(dim=1, keepdim=True)
    lifted = (value + lift).clamp(max=1)
    return torch.where(value > 0, x * (lifted / value.clamp(min=1e-12)), lifted)


def contrast(x: torch.Tensor, keep: float, _: Streams) -> torch.Tensor:
    """Pull each channel towards its mean: ``(x - mean) · keep + mean``."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * keep + mean


def elastic_at(
    x: torch.Tensor,
    alpha: float,
    sigma: float,
    corner_shift: torch.Tensor,
    fields: torch.Tensor,
) -> torch.Tensor:
    """The reference's elastic transform given its random draws.

    First an affine warp that moves three points around the centre by ``corner_shift``
    (N, 3, 2), sampled bilinearly with OpenCV's ``warpAffine`` boundary (reflect-101); then a
    displacement field ``alpha · gaussian(fields, sigma)`` (``fields``: N, 2, H, W, uniform in
    [-1, 1], x then y), sampled as scipy's ``map_coordinates(order=1, mode='reflect')``.
    """
    n, _, h, w = x.shape
    f64 = dict(device=x.device, dtype=torch.float64)
    cx, cy = h // 2, w // 2  # the reference's centre_square, used as an (x, y) point
    side = min(h, w) // 3
    src = torch.tensor(
        [[cx + side, cy + side], [cx + side, cy - side], [cx - side, cy - side]], **f64
    )
    dst = src + corner_shift.to(torch.float64)
    # the affine map M with M [p; 1] = p' at the three points, then its inverse for sampling
    homogeneous = torch.cat((src, torch.ones(3, 1, **f64)), dim=1).expand(n, 3, 3)
    forward = torch.linalg.solve(homogeneous, dst).transpose(1, 2)  # N x 2 x 3
    linear_inv = torch.linalg.inv(forward[:, :, :2])
    yy, xx = torch.meshgrid(torch.arange(h, **f64), torch.arange(w, **f64), indexing="ij")
    points = torch.stack((xx, yy)).view(1, 2, -1) - forward[:, :, 2:]
    source = (linear_inv @ points).view(n, 2, h, w)
    warped = pixel_grid(x, source[:, 1], source[:, 0], MIRROR)
    shift = gaussian_blur(fields.to(x.dtype), sigma, REFLECT, truncate=3) * alpha
    return pixel_grid(warped, yy + shift[:, 1], xx + shift[:, 0], REFLECT)


def elastic_transform(
    x: torch.Tensor, params: tuple[float, float, float], streams: Streams
) -> torch.Tensor:
    """Elastic transform with (alpha, sigma, affine) given as fractions of the image side."""
    side = min(x.shape[-2:])
    alpha, sigma, affine = (side * p for p in params)
    h, w = x.shape[-2:]
    corner_shift = streams.uniform((3, 2), -affine, affine)
    fields = streams.uniform((2, h, w), -1, 1)
    return elastic_at(x, alpha, sigma, corner_shift, fields)


@lru_cache(maxsize=64)
def pixelate_matrix(n: int, factor: float) -> np.ndarray:
    """PIL BOX resize to ``int(n · factor)`` samples and BOX resize back, as one matrix."""
    small = int(n * factor)
    return box_resize_matrix(small, n) @ box_resize_matrix(n, small)


def pixelate(x: torch.Tensor, factor: float, _: Streams) -> torch.Tensor:
    """Shrink by ``factor`` and enlarge back, both with PIL's BOX filter."""
    h, w = x.shape[-2:]
    return separable(x, pixelate_matrix(h, factor), pixelate_matrix(w, factor))


def jpeg_compression(x: torch.Tensor, quality: int, _: Streams) -> torch.Tensor:
    """Save and reload as 8-bit JPEG at ``quality``, as the reference does through PIL (the
    codec: :mod:`locrob.corruptions.jpeg`)."""
    pixels = (x * 255).round().to(torch.uint8)
    return round_trip(pixels, quality).to(x.dtype) / 255


_IMAGENET_SIDE = 244 / 224  # the reference multiplies by 244 on 224-pixel images

CORRUPTIONS = (
    Corruption(
        "brightness",
        brightness,
        {"cifar": (0.05, 0.1, 0.15, 0.2, 0.3), "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5)},
    ),
    Corruption(
        "contrast",
        contrast,
        {"cifar": (0.75, 0.5, 0.4, 0.3, 0.15), "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05)},
    ),
    Corruption(
        "elastic_transform",
        elastic_transform,
        {
            "cifar": (
                (0, 0, 0.08),
                (0.05, 0.2, 0.07),
                (0.08, 0.06, 0.06),
                (0.1, 0.04, 0.05),
                (0.1, 0.03, 0.03),
            ),
            "imagenet": tuple(
                tuple(_IMAGENET_SIDE * p for p in row)
                for row in (
                    (2, 0.7, 0.1),
                    (2, 0.08, 0.2),
                    (0.05, 0.01, 0.02),
                    (0.07, 0.01, 0.02),
                    (0.12, 0.01, 0.02),
                )
            ),
        },
    ),
    Corruption(
        "pixelate",
        pixelate,
        {"cifar": (0.95, 0.9, 0.85, 0.75, 0.65), "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25)},
    ),
    Corruption(
        "jpeg_compression",
        jpeg_compression,
        {"cifar": (80, 65, 58, 50, 40), "imagenet": (25, 18, 15, 10, 7)},
    ),
)
