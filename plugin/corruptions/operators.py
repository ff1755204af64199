"""Linear image operators shared by the corruptions, as batched tensor ops.

Every separable linear map the CIFAR-10-C reference applies with scipy, scikit-image, OpenCV
or PIL on one image at a time (a Gaussian blur with a given boundary mode, scipy's order-1
``zoom`` of a centre crop, PIL's BOX resize) is, along one axis, an ``(out, in)`` matrix. The
image operator is then ``M_h @ X @ M_w^T`` over a whole batch on the device: exact to the
reference's formula, boundary mode included, in two matmuls. The matrices are built once in
fp64 numpy and cached per size and device. Written by hand because no maintained library
exposes these reference-exact operators on batched tensors (kornia and torchvision blur with
other boundary rules and kernel radii, and resize with other sampling grids).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

# boundary modes, named as in scipy.ndimage
NEAREST = "nearest"  # aaa|abcd|ddd  (skimage's default, OpenCV's BORDER_REPLICATE)
REFLECT = "reflect"  # cba|abcd|dcb  (numpy's 'symmetric')
MIRROR = "mirror"  # dcb|abcd|cba  (OpenCV's BORDER_REFLECT_101, the default of filter2D)


def fold_index(i: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Indices outside ``[0, n)`` mapped inside by the boundary ``mode``."""
    if mode == NEAREST or n == 1:
        return np.clip(i, 0, n - 1)
    if mode == REFLECT:
        i = np.mod(i, 2 * n)
        return np.where(i >= n, 2 * n - 1 - i, i)
    if mode == MIRROR:
        i = np.mod(i, 2 * n - 2)
        return np.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown boundary mode {mode!r}")


def filter_matrix(n: int, weights: np.ndarray, mode: str) -> np.ndarray:
    """The ``(n, n)`` matrix of correlating a length-``n`` signal with centred odd ``weights``."""
    radius = len(weights) // 2
    m = np.zeros((n, n))
    rows = np.arange(n)
    for k, w in enumerate(weights):
        np.add.at(m, (rows, fold_index(rows + k - radius, n, mode)), w)
    return m


def gaussian_weights(sigma: float, radius: int) -> np.ndarray:
    """Normalized Gaussian taps on ``[-radius, radius]``."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


@lru_cache(maxsize=256)
def gaussian_matrix(n: int, sigma: float, mode: str = NEAREST, truncate: float = 4.0) -> np.ndarray:
    """scipy's ``gaussian_filter1d`` as a matrix (what skimage's ``gaussian`` applies per axis).

    Its radius is ``int(truncate * sigma + 0.5)``; ``sigma`` 0 leaves the signal unchanged.
    """
    if sigma <= 1e-15:
        return np.eye(n)
    return filter_matrix(n, gaussian_weights(sigma, int(truncate * sigma + 0.5)), mode)


@lru_cache(maxsize=256)
def clipped_zoom_matrix(n: int, factor: float) -> np.ndarray:
    """Zoom into the centre by ``factor`` >= 1, keeping ``n`` samples.

    The reference crops the centre ``ceil(n / factor)`` samples, zooms them with
    ``scipy.ndimage.zoom(order=1)`` (output length ``round(crop * factor)``, sample ``o`` read at
    ``o * (crop - 1) / (out - 1)``) and trims the result back to its centre ``n`` samples.
    """
    crop = math.ceil(n / factor)
    top = (n - crop) // 2
    out = round(crop * factor)
    trim = (out - n) // 2
    m = np.zeros((n, n))
    for o in range(n):
        at = (o + trim) * (crop - 1) / (out - 1) if out > 1 else 0.0
        i0 = min(math.floor(at), crop - 1)
        frac = at - i0
        i1 = min(i0 + 1, crop - 1)
        m[o, top + i0] += 1 - frac
        m[o, top + i1] += frac
    return m


@lru_cache(maxsize=256)
def box_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PIL's ``Image.resize(..., BOX)`` along one axis, as an ``(n_out, n_in)`` matrix.

    PIL's coefficients: the output sample ``o`` covers ``[(o + 0.5) s - support, ...)`` of the
    input with ``s = n_in / n_out`` and ``support = 0.5 max(s, 1)``; the box filter keeps input
    samples whose offset ``t`` satisfies ``-0.5 < t <= 0.5``, weights normalized.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        x = np.arange(lo, hi)
        t = (x - center + 0.5) / filterscale
        w = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if w.sum() > 0:
            m[o, lo:hi] = w / w.sum()
    return m


@lru_cache(maxsize=64)
def linear_resize_matrix(n_in: int, factor: float) -> np.ndarray:
    """OpenCV's ``resize(fx=factor, interpolation=INTER_LINEAR)`` along one axis.

    ``round(n_in · factor)`` outputs; output ``o`` reads input ``(o + 0.5) / factor - 0.5``
    bilinearly, clamped to the first and last samples (no antialiasing, as OpenCV).
    """
    n_out = round(n_in * factor)
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        at = (o + 0.5) / factor - 0.5
        i0 = math.floor(at)
        frac = at - i0
        if i0 < 0:
            i0, frac = 0, 0.0
        if i0 >= n_in - 1:
            i0, frac = n_in - 1, 0.0
        m[o, i0] += 1 - frac
        m[o, min(i0 + 1, n_in - 1)] += frac
    return m


# device copies of the (lru-cached, never mutated) operator matrices, keyed by identity: a
# lookup per call instead of hashing the matrix's bytes, which for a stack of 224 x 224
# matrices costs megabytes per call
_COPIES: dict[tuple[int, str, torch.dtype], tuple[np.ndarray, torch.Tensor]] = {}
_MAX_COPIES = 512


def as_tensor(m: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A cached operator matrix on ``like``'s device and dtype."""
    key = (id(m), str(like.device), like.dtype)
    hit = _COPIES.get(key)
    if hit is None or hit[0] is not m:  # an id is reused once its array is freed
        if len(_COPIES) >= _MAX_COPIES:
            _COPIES.pop(next(iter(_COPIES)))  # the oldest
        hit = _COPIES[key] = (m, torch.from_numpy(m).to(device=like.device, dtype=like.dtype))
    return hit[1]


def separable(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """``rows @ x @ cols^T`` on the last two axes of a batch: one linear map per axis."""
    return as_tensor(rows, x) @ x @ as_tensor(cols, x).transpose(0, 1)


def sum_separable(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """``sum_k rows[k] @ x @ cols[k]^T``: a linear map of rank ``len(rows)`` over the two axes.

    One term at a time, so memory stays that of the batch.
    """
    rows_t, cols_t = as_tensor(rows, x), as_tensor(cols, x).transpose(1, 2)
    out = torch.zeros_like(x)
    for r, c in zip(rows_t, cols_t, strict=True):
        out += r @ x @ c
    return out


@lru_cache(maxsize=64)
def correlation_terms(
    kernel_bytes: bytes, size: int, h: int, w: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D correlation kernel as a sum of separable terms (its SVD), as row and column stacks.

    The SVD is exact: every term with a singular value above 1e-12 of the largest is kept.
    """
    kernel = np.frombuffer(kernel_bytes).reshape(size, size)
    u, sv, vt = np.linalg.svd(kernel)
    keep = sv > 1e-12 * sv[0]
    rows = np.stack([filter_matrix(h, u[:, k] * sv[k], mode) for k in np.nonzero(keep)[0]])
    cols = np.stack([filter_matrix(w, vt[k], mode) for k in np.nonzero(keep)[0]])
    return rows, cols


def correlate(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """2-D correlation of each channel with a square odd ``kernel`` under a boundary ``mode``
    (OpenCV's ``filter2D`` for ``MIRROR``), as a sum of separable matmuls."""
    rows, cols = correlation_terms(
        np.ascontiguousarray(kernel, dtype=np.float64).tobytes(), len(kernel), *x.shape[-2:], mode
    )
    return sum_separable(x, rows, cols)


def gaussian_blur(
    x: torch.Tensor, sigma: float, mode: str = NEAREST, truncate: float = 4.0
) -> torch.Tensor:
    """skimage's ``gaussian(x, sigma, mode=mode, truncate=truncate)`` on each channel."""
    h, w = x.shape[-2:]
    return separable(
        x, gaussian_matrix(h, sigma, mode, truncate), gaussian_matrix(w, sigma, mode, truncate)
    )


def gather_shifted(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Image ``n`` read at ``(i + dy[n], j + dx[n])``, indices clamped to the edge."""
    n, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device) + dy.view(-1, 1)).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device) + dx.view(-1, 1)).clamp(0, w - 1)
    x = x.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w))
    return x.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Grey level of RGB images (ITU-R 601 weights, as OpenCV's RGB2GRAY); grey stays as is."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return torch.einsum("nchw,c->nhw", x, weights).unsqueeze(1)


def pixel_grid(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Bilinear samples of ``x`` at pixel coordinates ``(rows, cols)`` of shape (N, H, W).

    ``mode`` is the boundary: ``MIRROR`` (OpenCV's BORDER_REFLECT_101) or ``REFLECT``
    (scipy's 'reflect'); ``grid_sample``'s reflection padding is exactly these two with
    ``align_corners`` True and False.
    """
    h, w = x.shape[-2:]
    if mode == MIRROR:
        grid = torch.stack((2 * cols / max(w - 1, 1) - 1, 2 * rows / max(h - 1, 1) - 1), dim=-1)
        corners = True
    elif mode == REFLECT:
        grid = torch.stack(((2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1), dim=-1)
        corners = False
    else:
        raise ValueError(f"unsupported boundary mode {mode!r}")
    return torch.nn.functional.grid_sample(
        x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=corners
    )
