"""Projected gradient ascent on the ratio: a tighter lower bound than sampling.

In the style of local-Lipschitz estimators such as ``estimate_local_lip_v2`` of the public
robust-local-lipschitz code, rewritten for this ratio: for each point, restart 0 starts from
the point's best random draw and the other restarts from fresh random directions of norm r.
Each step moves by ``search_step_size * r`` (decaying linearly) along the normalized gradient
(L2) or its sign (Linf), then goes back onto the sphere of radius r and into the clamp box.

The ascent stays on the sphere ||e|| = r, like the sampling, rather than the whole ball: the
ratio can always grow by shrinking e until floating-point noise in F(x+e) - F(x) dominates,
which would report noise as slope. Smaller perturbations are covered by the smaller radii
through the running maximum. The best ratio seen is kept, and each point's value is the
larger of it and the sampling value, so the search is never below the sampling estimate.
Still a lower bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from locrob.alpha.geometry import project, row_norms, to_sphere
from locrob.alpha.sampling import Evaluator, Sampled, Sampler, best_perturbations
from locrob.alpha.settings import AlphaSettings
from locrob.distributed import SINGLE, Shard
from locrob.runtime import progress

SEARCH_STREAM = 1_000_000  # streams of the restarts, one per radius


def _to_box(ev: Evaluator, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps if ev.clamp is None else (x + eps).clamp(*ev.clamp) - x


def _ascend(
    ev: Evaluator,
    x: torch.Tensor,
    f_x: torch.Tensor,
    eps: torch.Tensor,
    r: float,
    settings: AlphaSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ratio and perturbation per row over ``search_steps`` projected ascent steps."""
    eps = _to_box(ev, x, eps)
    best = torch.full((len(x),), -1.0, dtype=ev.compute_dtype, device=ev.device)
    best_eps = eps.clone()
    view = (-1, *([1] * (x.ndim - 1)))
    for step in range(settings.search_steps + 1):
        eps = eps.detach().requires_grad_(step < settings.search_steps)
        with torch.set_grad_enabled(eps.requires_grad):
            ratio, delta = ev.ratios(x, eps, f_x, r)
        improved = ratio.detach() > best
        best = torch.where(improved, ratio.detach(), best)
        best_eps = torch.where(improved.view(view), delta.detach(), best_eps)
        if step == settings.search_steps:
            break
        (grad,) = torch.autograd.grad(ratio.sum(), eps)
        size = settings.search_step_size * r * (1 - step / settings.search_steps)
        if ev.p_in == float("inf"):
            move = grad.sign()
        else:
            move = grad / row_norms(grad, 2.0).clamp_min(1e-30).view(view)
        eps = eps.detach() + size * move
        eps = _to_box(ev, x, to_sphere(project(eps, ev.p_in, r), ev.p_in, r))
    return best, best_eps


@dataclass
class Searched:
    """What the search found: per-(radius, point) maxima (sampling's included), the point of
    each radius's maximum and its perturbation, and the forward passes it took (each with a
    backward pass but the last)."""

    per_point: torch.Tensor  # (R, N)
    argmax_point: torch.Tensor  # (R,)
    perturbation: torch.Tensor  # (R, *image)
    evaluations: int


def search(
    sampler: Sampler,
    radii: Sequence[float],
    settings: AlphaSettings,
    sampled: Sampled,
    chunk: int,
    argmax_point: torch.Tensor,
    perturbation: torch.Tensor,
    shard: Shard = SINGLE,
) -> Searched:
    """Gradient ascent from the sampling's best perturbations (and fresh restarts): the
    sampling's record (``argmax_point``, ``perturbation``) with the search's finds where they
    beat the sampling maximum. The arguments are left as they are.

    The starts of a radius are ascended in blocks of a third of ``chunk`` (for a given
    ``chunk``, the same blocks at any world size); with the ``shard`` of a process group,
    each rank ascends its range of the blocks, the maxima are reduced over the group and the
    winning perturbation comes from the rank that found it, so every rank returns one
    process's result.
    """
    n, restarts = len(sampler.x), settings.search_restarts
    total = restarts * n
    per_point = sampled.per_point.clone()
    # backward keeps the activations: a third of the sampling chunk
    size = max(1, chunk // 3)
    owned = shard.blocks(total, size)  # the starts this rank ascends
    found_here = torch.zeros_like(perturbation)  # each radius's winner, where this rank has it
    tops: dict[int, int] = {}  # radius -> point, where the search beat the sampling
    bar = progress(total=len(radii) * len(owned), desc="alpha_lim search", unit="start")
    for k, r in enumerate(radii):
        starts = _starts(sampler, radii, k, sampled, restarts)
        found, found_eps = _ascend_owned(sampler, starts, r, settings, owned, size, bar)
        point_best, top, winner = _best_start(shard.max(found).view(restarts, n))
        per_point[k] = torch.maximum(per_point[k], point_best)
        if point_best[top] > sampled.per_point[k].max():
            tops[k] = top
            if winner in owned:
                found_here[k] = found_eps[winner]
    bar.close()
    argmax_point, perturbation = _recorded(argmax_point, perturbation, tops, found_here, shard)
    evaluations = len(radii) * total * (settings.search_steps + 1)
    return Searched(per_point, argmax_point, perturbation, evaluations)


def _starts(
    sampler: Sampler, radii: Sequence[float], k: int, sampled: Sampled, restarts: int
) -> torch.Tensor:
    """Radius ``k``'s starts, restart by restart: the sampling's best perturbation of each
    point, then fresh directions of norm r."""
    ev, n, r = sampler.ev, len(sampler.x), radii[k]
    starts = [best_perturbations(sampler, radii, k, sampled.best_pair[k])]
    if restarts > 1:  # other streams than the sampling's: starts never repeat a draw
        fresh = sampler.draws.sibling(SEARCH_STREAM + k).get(0, (restarts - 1) * n)
        starts.append(fresh.squeeze(1).to(ev.compute_dtype) * r)
    return torch.cat(starts)


def _ascend_owned(
    sampler: Sampler,
    starts: torch.Tensor,
    r: float,
    settings: AlphaSettings,
    owned: range,
    size: int,
    bar: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ratio and perturbation of each start this rank owns, in blocks of ``size``;
    -inf and zeros where another rank ascends (the group's maximum is one process's array)."""
    ev, x, f_x = sampler.ev, sampler.x, sampler.f_x
    point_of = torch.arange(len(starts), device=ev.device) % len(x)
    found = torch.full((len(starts),), -torch.inf, dtype=ev.compute_dtype, device=ev.device)
    found_eps = torch.zeros_like(starts)
    for lo in range(owned.start, owned.stop, size):
        idx = slice(lo, lo + size)
        pts = point_of[idx]
        found[idx], found_eps[idx] = _ascend(ev, x[pts], f_x[pts], starts[idx], r, settings)
        bar.update(len(pts))
    return found, found_eps


def _best_start(by_point: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """From the (restarts, N) maxima: each point's best, the best point, and its start's index."""
    best_restart = by_point.argmax(dim=0)
    point_best = by_point.gather(0, best_restart.view(1, -1)).squeeze(0)
    top = int(point_best.argmax())
    return point_best, top, int(best_restart[top]) * by_point.shape[1] + top


def _recorded(
    argmax_point: torch.Tensor,
    perturbation: torch.Tensor,
    tops: dict[int, int],
    found_here: torch.Tensor,
    shard: Shard,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the sampling's record with the search's winners at the radii in ``tops``."""
    argmax_point, perturbation = argmax_point.clone(), perturbation.clone()
    # one rank holds each winner, the others zeros: the sum is the winner, exactly
    winners = shard.sum(found_here) if tops else found_here
    for k, top in tops.items():
        argmax_point[k] = top
        perturbation[k] = winners[k]
    return argmax_point, perturbation
