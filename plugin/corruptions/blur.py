"""Blur corruptions: defocus, glass, motion and zoom blur.

Parameters are those of ``make_cifar_c.py`` (preset ``cifar``) and ``make_imagenet_c.py``
(preset ``imagenet``) in the public hendrycks/robustness repository.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from locrob.corruptions.base import Corruption
from locrob.corruptions.operators import (
    MIRROR,
    clipped_zoom_matrix,
    correlate,
    filter_matrix,
    gather_shifted,
    gaussian_blur,
    sum_separable,
)
from locrob.streams import Streams


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's defocus kernel: a normalized disk smoothed by a small Gaussian.

    The disk is drawn on a 17 x 17 grid (wider for radius > 8) and smoothed as OpenCV's
    ``GaussianBlur`` does (3 or 5 taps, BORDER_REFLECT_101); rows and columns that stay zero
    are trimmed, which changes nothing but the rank of the separable sum it becomes.
    """
    half, taps = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    offsets = np.arange(taps) - taps // 2
    weights = np.exp(-(offsets**2) / (2 * alias_blur**2))
    smooth = filter_matrix(len(grid), weights / weights.sum(), MIRROR)
    kernel = smooth @ disk @ smooth.T
    support = np.nonzero(kernel.max(axis=0) > 1e-12 * kernel.max())[0]
    keep = max(abs(int(support[0]) - half), abs(int(support[-1]) - half))
    return kernel[half - keep : half + keep + 1, half - keep : half + keep + 1]


def defocus_blur(x: torch.Tensor, params: tuple[float, float], _: Streams) -> torch.Tensor:
    """Correlation with the defocus disk, OpenCV's ``filter2D`` boundary (reflect-101)."""
    return correlate(x, disk_kernel(*params), MIRROR)


def glass_offsets(h: int, w: int, delta: int, iterations: int, streams: Streams) -> torch.Tensor:
    """The reference's random offsets: ``(n, iterations, positions, 2)`` pairs ``(dx, dy)``
    drawn from ``[-delta, delta)``, one per pixel it visits, in its visiting order."""
    positions = (h - 2 * delta) * (w - 2 * delta)
    return streams.randint(-delta, delta, (iterations, max(positions, 0), 2))


def glass_sources(offsets: torch.Tensor, h: int, w: int, delta: int) -> torch.Tensor:
    """Which input pixel each output pixel holds after the reference's pixel exchanges.

    The reference visits pixels from ``(h - delta, w - delta)`` down to
    ``(delta + 1, delta + 1)``, row by row, and writes ``x[h, w], x[h', w'] = x[h', w'],
    x[h, w]`` on an H x W x 3 array. Both sides are views, so the first assignment copies
    pixel ``(h', w')`` into ``(h, w)`` and the second copies that same pixel back onto
    itself: each visit is a *copy* from the neighbour, not the swap its comment names, and a
    copy can carry a pixel that an earlier visit already copied. Published CIFAR-10-C is
    what this does, so it is what we do.

    A visit reads the current value of its neighbour ``q``: the original one, unless ``q`` was
    visited earlier in the same pass (inside the visited region and later in row-major order,
    since visits run backwards). Following those links from each pixel to the first one that
    reads an original value resolves a whole pass at once; the links are followed by pointer
    doubling, so a pass costs a few gathers on the device instead of a Python step per pixel.
    Returns ``(n, h*w)`` indices: output pixel ``p`` of image ``i`` is input pixel
    ``sources[i, p]``.
    """
    n, iterations = offsets.shape[:2]
    device = offsets.device
    rows = torch.arange(h - delta, delta, -1, device=device)
    cols = torch.arange(w - delta, delta, -1, device=device)
    visit_r, visit_c = (t.reshape(-1) for t in torch.meshgrid(rows, cols, indexing="ij"))
    visited = visit_r * w + visit_c  # linear index of each visit, in the reference's order
    identity = torch.arange(h * w, device=device).expand(n, h * w)
    sources = identity
    for t in range(iterations):
        dx, dy = offsets[:, t, :, 0], offsets[:, t, :, 1]
        read_r, read_c = visit_r + dy, visit_c + dx
        read = read_r * w + read_c
        inside = (read_r > delta) & (read_r <= h - delta) & (read_c > delta) & (read_c <= w - delta)
        earlier = inside & (read > visited)  # already overwritten in this pass
        first = identity.scatter(1, visited.expand(n, -1), read)
        link = identity.scatter(1, visited.expand(n, -1), torch.where(earlier, read, visited))
        while True:  # pointer doubling: at most log2(chain length) + 1 rounds
            jumped = link.gather(1, link)
            if torch.equal(jumped, link):
                break
            link = jumped
        sources = sources.gather(1, first.gather(1, link))
    return sources


def glass_blur(x: torch.Tensor, params: tuple[float, int, int], streams: Streams) -> torch.Tensor:
    """Gaussian blur, 8-bit quantization, the local pixel exchanges, Gaussian blur again."""
    sigma, delta, iterations = params
    n, c, h, w = x.shape
    blurred = torch.floor(gaussian_blur(x, sigma).clamp(0, 1) * 255) / 255
    offsets = glass_offsets(h, w, delta, iterations, streams)
    index = glass_sources(offsets, h, w, delta).unsqueeze(1).expand(n, c, h * w)
    return gaussian_blur(blurred.flatten(2).gather(2, index).view_as(x), sigma)


def motion_taps(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's one-sided motion-blur kernel: ``2 ceil(radius) + 1`` Gaussian taps."""
    i = np.arange(2 * math.ceil(radius) + 1)
    taps = np.exp(-(i**2) / (2 * sigma**2))
    return taps / taps.sum()


def motion_blur_at(
    x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor
) -> torch.Tensor:
    """ImageMagick's ``MotionBlurImage`` with one angle (degrees) per image.

    Tap ``i`` reads the pixel at ``(ceil(i sin a - 1/2), ceil(i cos a - 1/2))`` from the
    output pixel, edge pixels repeating beyond the border. (The CIFAR-10-C reference calls
    ImageMagick through Wand; the same taps and offsets are summed here on the whole batch.)
    """
    rad = torch.deg2rad(angles.to(torch.float64))
    out = torch.zeros_like(x)
    for i, weight in enumerate(motion_taps(radius, sigma)):
        dy = torch.ceil(i * torch.sin(rad) - 0.5).long()
        dx = torch.ceil(i * torch.cos(rad) - 0.5).long()
        out += float(weight) * gather_shifted(x, dy, dx)
    return out


def motion_blur(x: torch.Tensor, params: tuple[float, float], streams: Streams) -> torch.Tensor:
    """Motion blur along a direction drawn uniformly in [-45, 45] degrees per image."""
    angles = streams.uniform((), -45, 45)
    return motion_blur_at(x, *params, angles)


@lru_cache(maxsize=64)
def zoom_stack(n: int, factors: tuple[float, ...]) -> np.ndarray:
    """The clipped-zoom matrices of every factor, stacked."""
    return np.stack([clipped_zoom_matrix(n, z) for z in factors])


def zoom_blur(x: torch.Tensor, factors: tuple[float, ...], _: Streams) -> torch.Tensor:
    """The mean of the image and its centre zooms by each factor."""
    h, w = x.shape[-2:]
    zoomed = sum_separable(x, zoom_stack(h, factors), zoom_stack(w, factors))
    return (x + zoomed) / (len(factors) + 1)


def _zooms(*stops: tuple[float, float]) -> tuple[tuple[float, ...], ...]:
    """``np.arange(1, stop, step)`` per severity, as the reference writes them."""
    return tuple(tuple(float(z) for z in np.arange(1, stop, step)) for stop, step in stops)


CORRUPTIONS = (
    Corruption(
        "defocus_blur",
        defocus_blur,
        {
            "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
            "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        },
    ),
    Corruption(
        "glass_blur",
        glass_blur,
        {
            "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
            "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        },
    ),
    Corruption(
        "motion_blur",
        motion_blur,
        {
            "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
            "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        },
    ),
    Corruption(
        "zoom_blur",
        zoom_blur,
        {
            "cifar": _zooms((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
            "imagenet": _zooms(
                (1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)
            ),
        },
    ),
)
