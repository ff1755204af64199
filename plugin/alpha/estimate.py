"""``locrob.alpha_lim``: estimate the local-robustness curve of a model around points."""

from __future__ import annotations

import contextlib
import itertools
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from locrob.alpha.forward import ChunkForward, channels_last, channels_last_pays, compiles
from locrob.alpha.geometry import Draws
from locrob.alpha.philox import PhiloxDraws, fused
from locrob.alpha.result import AlphaResult, running_max
from locrob.alpha.sampling import (
    Chunk,
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
from locrob.distributed import SINGLE, Shard
from locrob.errors import LocrobError
from locrob.runtime import eval_mode, ieee_fp32, on_device, resolve_device
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
    if settings.max_examples is not None:
        t = t[: settings.max_examples]
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
    shard: Shard = SINGLE,
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
    override the preset. With the ``shard`` of a process group (:mod:`locrob.distributed`),
    the sampling's (point, draw) pairs and the search's starts are split over the group's
    ranks, and every rank returns the whole result.
    """
    settings = resolve(preset, radii, **options)
    dev = resolve_device(device)
    model = as_module(model)
    points = as_points(x, settings).to(dev, model_dtype(model))
    start = time.perf_counter()
    if settings.method == "bound":
        return _bounded(model, points, settings, dev, shard, start)
    ev = _evaluator(model, settings, points.dtype, dev)
    layout = channels_last_pays(model, dev, points)
    # float32 is IEEE fp32 throughout, the search's gradients too (not cuDNN's default TF32)
    exact = ieee_fp32(dev) if settings.forward_dtype == "float32" else contextlib.nullcontext()
    with on_device(model, dev), eval_mode(model), channels_last(model, layout), exact:
        plan = _plan(ev, points, settings, shard, layout)
        found = _maximize(plan, settings, shard)
    return _result(settings, plan, found, start)


class _Plan(NamedTuple):
    """The sampling as set up: the sampler, its images per forward pass, F's noise floor, and
    the run's first chunks where the tuner sampled them."""

    sampler: Sampler
    chunk: int
    noise: float
    done: list[Chunk]


class _Found(NamedTuple):
    """The largest ratios found per radius and point, where, and at what cost (on the device)."""

    per_point: torch.Tensor
    argmax_point: torch.Tensor
    perturbation: torch.Tensor
    evaluations: int
    sampling_curve: torch.Tensor | None


def _evaluator(
    model: Model, settings: AlphaSettings, dtype: torch.dtype, dev: torch.device
) -> Evaluator:
    """The evaluator of F and of the ratio in the settings' norms, clamp and precisions."""
    return Evaluator(
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


def _plan(
    ev: Evaluator, points: torch.Tensor, settings: AlphaSettings, shard: Shard, layout: bool
) -> _Plan:
    """Size the chunks (one size for every rank of a group; with an explicit ``chunk_size``,
    the same chunks at any world size, else the largest rank's timed choice), compute F(x),
    set up the sampler's draws, give the evaluator the sampling's form of the model
    (channels-last with ``layout``, compiled where the settings say) and measure F's noise
    floor."""
    per_example = activation_bytes(ev.model, points[:1])
    # each pair holds three example-sized buffers (input, perturbation, perturbed input);
    # activation_bytes counts one example's activations with its input
    radii = settings.radii
    images = len(points) * settings.n_draws * len(radii)
    limit = chunk_limit(settings, 3 * per_example, images, ev.device)
    f_x = clean_outputs(ev, points, limit)
    top = f_x.argmax(dim=1, keepdim=True)
    width = len(radii) if settings.directions == "fresh" else 1
    # where Triton runs, directions are drawn inside the perturbation's kernel
    source = PhiloxDraws if fused(ev.device, points.dtype) else Draws
    draws = source(
        settings.seed, tuple(points.shape[1:]), settings.p_in, settings.noise, ev.device, width
    )
    r = torch.tensor(radii, dtype=points.dtype, device=ev.device)
    sampler = Sampler(ev, points, f_x, top, r, draws, settings.n_draws)
    # a group agrees on one size before sampling, so its ranks throw their timed chunks away
    tuned = chunk_size(settings, sampler, limit, images, keep=shard.world_size == 1)
    chunk = int(shard.max(torch.tensor([tuned.batch], device=ev.device)))
    compiled = compiles(settings.compile, ev.device, images)
    if compiled or layout:
        fast = ChunkForward(ev.model, sampler.forward_batch(chunk), compiled, layout)
        ev.fast = fast
        # F(x) by the kernels that evaluate F(x+e) from here on (the tuner's chunks, already
        # sampled, compared theirs with the first F(x))
        sampler.f_x = clean_outputs(ev, points, fast.batch)
        sampler.top = sampler.f_x.argmax(dim=1, keepdim=True)
    noise = ev.noise_floor(points, sampler.f_x, sampler.top)
    return _Plan(sampler, chunk, noise, tuned.chunks)


def _maximize(plan: _Plan, settings: AlphaSettings, shard: Shard) -> _Found:
    """Sample every point and radius, then, with ``method="search"``, climb from the best."""
    sampler, chunk, radii = plan.sampler, plan.chunk, settings.radii
    with torch.no_grad():
        sampled = sample(sampler, chunk, shard=shard, done=plan.done)
        argmax_point = sampled.per_point.argmax(dim=1)
        best = sampled.best_pair.gather(1, argmax_point.view(-1, 1)).squeeze(1)
        perturbation = torch.cat(
            [best_perturbations(sampler, radii, k, best[k : k + 1]) for k in range(len(radii))]
        )
    if settings.method != "search":
        return _Found(sampled.per_point, argmax_point, perturbation, sampled.evaluations, None)
    sampling_curve = running_max(sampled.per_point.amax(dim=1)).cpu()
    searched = search(sampler, radii, settings, sampled, chunk, argmax_point, perturbation, shard)
    return _Found(
        searched.per_point,
        searched.argmax_point,
        searched.perturbation,
        sampled.evaluations + searched.evaluations,
        sampling_curve,
    )


def _bounded(
    model: nn.Module,
    points: torch.Tensor,
    settings: AlphaSettings,
    dev: torch.device,
    shard: Shard,
    start: float,
) -> AlphaResult:
    """``method="bound"``: the certified upper bound (:mod:`locrob.alpha.bound`), each
    rank of a group bounding its range of the points."""
    from locrob.alpha.bound import upper_bounds  # its tracer: only here

    if not isinstance(model, nn.Module):
        raise LocrobError("method='bound' needs an nn.Module (it reads the layers)")
    mine = shard.indices(len(points))
    with torch.no_grad():
        found = upper_bounds(model, points[mine.start : mine.stop], settings)
    per_point = shard.whole(found.per_point.to(dev), len(points), mine.start, dim=1).cpu()
    per_radius = per_point.amax(dim=1)
    return AlphaResult(
        radii=torch.tensor(settings.radii, dtype=torch.float64),
        curve=running_max(per_radius),
        per_radius=per_radius,
        per_point=per_point,
        argmax_point=per_point.argmax(dim=1),
        perturbation=torch.empty(len(settings.radii), 0),
        settings={**settings.describe(), "max_examples": len(points)},
        method="bound",
        evaluations=len(settings.radii) * len(points),
        seconds=time.perf_counter() - start,
        extra={
            "global_bound": found.global_bound,
            "pre_activations": found.pre_activations,
            "kind": found.kind,
            "precision": str(found.dtype).removeprefix("torch."),
        },
        bound="upper",
    )


def _result(settings: AlphaSettings, plan: _Plan, found: _Found, start: float) -> AlphaResult:
    """The AlphaResult on the CPU, after a warning naming radii at F's noise floor."""
    points, noise = plan.sampler.x, plan.noise
    per_radius = found.per_point.amax(dim=1)
    limited = noise_limited(per_radius, settings.radii, noise)
    if limited:
        warnings.warn(
            f"alpha_lim: at radii {', '.join(f'{r:.3g}' for r in limited)} the output changes are "
            f"within {NOISE_MARGIN:g}x the floating-point noise of F ({noise:.2g}); those values "
            "may be rounding, not slope: use larger radii or an fp64 model",
            stacklevel=3,  # the caller of alpha_lim
        )
    return AlphaResult(
        radii=torch.tensor(settings.radii, dtype=points.dtype),
        curve=running_max(per_radius).cpu(),
        per_radius=per_radius.cpu(),
        per_point=found.per_point.cpu(),
        argmax_point=found.argmax_point.cpu(),
        perturbation=found.perturbation.cpu(),
        settings={**settings.describe(), "max_examples": len(points), "chunk_size": plan.chunk},
        method=settings.method,
        sampling_curve=found.sampling_curve,
        evaluations=found.evaluations,
        seconds=time.perf_counter() - start,
        extra={"noise_floor": noise, "noise_limited_radii": limited},
    )
