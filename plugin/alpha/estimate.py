"""``locrob.alpha_lim``: estimate the local-robustness curve of a model around points."""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from locrob.alpha.geometry import Draws
from locrob.alpha.result import AlphaResult, running_max
from locrob.alpha.sampling import (
    Evaluator,
    Sampler,
    activation_bytes,
    best_perturbations,
    check_finite,
    chunk_limit,
    chunk_size,
    forward_dtype,
    sample,
)
from locrob.alpha.search import search
from locrob.alpha.settings import AlphaSettings, resolve
from locrob.errors import LocrobError
from locrob.runtime import eval_mode, on_device, resolve_device
from locrob.sources import as_module

Model = nn.Module | Callable[[torch.Tensor], torch.Tensor]


def as_points(x: torch.Tensor | np.ndarray, settings: AlphaSettings) -> torch.Tensor:
    """The domain R as a float tensor (uint8 images scaled to [0, 1]), checked."""
    t = torch.as_tensor(x)
    if t.ndim < 2 or len(t) == 0:
        raise LocrobError(
            f"points must be a batch (N, ...) with N >= 1, got shape {tuple(t.shape)}"
        )
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t
    if not torch.is_floating_point(t):
        raise LocrobError(f"points must be uint8 or floating point, got {t.dtype}")
    if settings.n_points is not None:
        t = t[: settings.n_points]
    if not bool(torch.isfinite(t).all()):
        raise LocrobError("points contain NaN or Inf")
    if settings.clamp is not None:
        lo, hi = settings.clamp
        low, high = float(t.min()), float(t.max())
        if low < lo or high > hi:
            raise LocrobError(
                f"points lie in [{low:.4g}, {high:.4g}], outside the clamp range [{lo}, {hi}]; "
                "pass images in [0, 1] (normalization inside the model) or set clamp=None"
            )
    return t


def model_dtype(model: Model) -> torch.dtype:
    """fp64 for an fp64 model (the reference precision), fp32 otherwise."""
    if isinstance(model, nn.Module):
        for t in itertools.chain(model.parameters(), model.buffers()):
            if torch.is_floating_point(t):
                return torch.float64 if t.dtype == torch.float64 else torch.float32
    return torch.float32


NOISE_MARGIN = 100.0


def noise_limited(per_radius: torch.Tensor, radii: Sequence[float], noise: float) -> list[float]:
    """Radii where even the largest output change found (at most alpha * r) is within
    ``NOISE_MARGIN`` times the measured floating-point noise of F."""
    return [
        r for a, r in zip(per_radius.tolist(), radii, strict=True) if a * r < NOISE_MARGIN * noise
    ]


@torch.no_grad()
def clean_outputs(ev: Evaluator, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """F(x) for every point, once, in chunks; NaN or Inf names the point."""
    f_x = torch.cat([ev.outputs(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    check_finite(f_x)
    return f_x


def alpha_lim(
    model: Model,
    x: torch.Tensor | np.ndarray,
    radii: Sequence[float] | None = None,
    *,
    preset: str | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> AlphaResult:
    """Estimate alpha_lim(F, r) over the points ``x`` for each radius: a **lower bound**.

    alpha_lim(F, r) = sup over x in R and ||e|| < r of ||F(x+e) - F(x)|| / ||e|| (paper,
    Definition 1), with F = ``output`` applied to the model's output. ``method="sample"``
    draws ``n_draws`` random directions of norm r per point and radius; ``method="search"``
    then climbs the ratio by projected gradient ascent. By default x+e is clamped to ``clamp``
    and the denominator is the effective perturbation clamp(x+e) - x, as in the authors' code;
    ``denominator="nominal"`` divides by ||e|| = r, and ``clamp=None`` with either gives the
    paper's Definition 1 without a box.

    ``model`` is an ``nn.Module``, a callable on tensors, or an ART PyTorch classifier.
    ``preset`` is ``"paper"`` (the paper's 100 points x 1000 Gaussian draws; radii, norm,
    output, clamp and denominator as in the authors' code, which the paper does not state) or
    ``"authors-code"`` (the authors' ``r_alpha.py`` throughout: 1000 points x 100 uniform
    draws); ``options`` are the fields of :class:`locrob.alpha.settings.AlphaSettings` and
    override the preset.
    """
    settings = resolve(preset, radii, **options)
    dev = resolve_device(device)
    model = as_module(model)
    points = as_points(x, settings)
    dtype = model_dtype(model)
    points = points.to(dev, dtype)
    ev = Evaluator(
        model,
        settings.output_fn(),
        settings.p_in,
        settings.p_out,
        settings.clamp,
        dtype,
        forward_dtype(settings),
        dev,
        sums_to_one=settings.output == "softmax",
        nominal=settings.denominator == "nominal",
    )
    start = time.perf_counter()
    with on_device(model, dev), eval_mode(model):
        per_example = activation_bytes(model, points[:1])
        # each pair holds its input, perturbation, perturbed input and the activations
        radii = settings.radii
        images = len(points) * settings.n_draws * len(radii)
        limit = chunk_limit(settings, 3 * per_example, images, dev)
        f_x = clean_outputs(ev, points, limit)
        top = f_x.argmax(dim=1, keepdim=True)
        noise = ev.noise_floor(points, f_x, top)
        width = len(radii) if settings.directions == "fresh" else 1
        draws = Draws(
            settings.seed, tuple(points.shape[1:]), settings.p_in, settings.noise, dev, width
        )
        r = torch.tensor(radii, dtype=dtype, device=dev)
        sampler = Sampler(ev, points, f_x, top, r, draws, settings.n_draws)
        chunk = chunk_size(settings, sampler, limit, images)
        with torch.no_grad():
            sampled = sample(sampler, chunk)
            argmax_point = sampled.per_point.argmax(dim=1)
            best = sampled.best_pair.gather(1, argmax_point.view(-1, 1)).squeeze(1)
            perturbation = torch.cat(
                [best_perturbations(sampler, radii, k, best[k : k + 1]) for k in range(len(radii))]
            )
        per_point, evaluations = sampled.per_point, sampled.evaluations
        sampling_curve = None
        if settings.method == "search":
            sampling_curve = running_max(sampled.per_point.amax(dim=1)).cpu()
            found = search(sampler, radii, settings, sampled, chunk, argmax_point, perturbation)
            per_point, argmax_point, perturbation = (
                found.per_point,
                found.argmax_point,
                found.perturbation,
            )
            evaluations += found.evaluations
    per_radius = per_point.amax(dim=1)
    limited = noise_limited(per_radius, settings.radii, noise)
    if limited:
        warnings.warn(
            f"alpha_lim: at radii {', '.join(f'{r:.3g}' for r in limited)} the output changes are "
            f"within {NOISE_MARGIN:g}x the floating-point noise of F ({noise:.2g}); those values "
            "may be rounding, not slope: use larger radii or an fp64 model",
            stacklevel=2,
        )
    return AlphaResult(
        radii=torch.tensor(settings.radii, dtype=dtype),
        curve=running_max(per_radius).cpu(),
        per_radius=per_radius.cpu(),
        per_point=per_point.cpu(),
        argmax_point=argmax_point.cpu(),
        perturbation=perturbation.cpu(),
        settings={**settings.describe(), "n_points": len(points), "chunk_size": chunk},
        method=settings.method,
        sampling_curve=sampling_curve,
        evaluations=evaluations,
        seconds=time.perf_counter() - start,
        extra={"noise_floor": noise, "noise_limited_radii": limited},
    )
