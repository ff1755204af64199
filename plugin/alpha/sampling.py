"""The batched sampling estimator: a forward-pass engine.

Work is the flat list of (point, draw) pairs, processed in chunks sized to a memory budget;
inside a chunk every radius is evaluated on the same gathered points. F(x) is computed once per
point. Per-point maxima are reduced on the device with ``scatter_reduce``; Python loops only
over chunks and radii, never over draws. Differences and norms are taken in fp32 (fp64 for an
fp64 model) even when the forward pass runs in bf16/fp16, since in low precision
F(x+e) - F(x) at small r is rounding noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from locrob.alpha.geometry import Draws, row_norms
from locrob.alpha.settings import FORWARD_DTYPES, AlphaSettings
from locrob.errors import LocrobError
from locrob.runtime import progress

TINY = 1e-12  # effective perturbations shorter than this (relative to r) give no ratio


@dataclass
class Evaluator:
    """Evaluates F = output_fn(model(.)) and the ratio on batches, in a fixed precision."""

    model: Callable[[torch.Tensor], torch.Tensor]
    output_fn: Callable[[torch.Tensor], torch.Tensor]
    p_in: float
    p_out: float
    clamp: tuple[float, float] | None
    compute_dtype: torch.dtype
    forward_dtype: torch.dtype | None
    device: torch.device
    sums_to_one: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.forward_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.forward_dtype)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) as (n, d) rows in the compute precision."""
        with self.autocast():
            logits = self.model(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim < 1 or len(logits) != len(x):
            shape = (
                tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            )
            raise LocrobError(
                f"the model must return one row per input: {len(x)} inputs gave {shape}"
            )
        out = self.output_fn(logits.to(self.compute_dtype))
        if not isinstance(out, torch.Tensor) or len(out) != len(x):
            raise LocrobError("the output function must return one row per input")
        return out.reshape(len(x), -1)

    def ratios(
        self, x: torch.Tensor, eps: torch.Tensor, f_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ratio ||F(clamp(x+e)) - F(x)|| / ||clamp(x+e) - x|| per row, and the effective e."""
        moved = x + eps
        if self.clamp is not None:
            moved = moved.clamp(*self.clamp)
        delta = moved - x
        den = row_norms(delta, self.p_in)
        diff = self.outputs(moved) - f_x
        if self.sums_to_one:
            diff = complement_largest(diff, f_x)
        num = row_norms(diff, self.p_out)
        ratio = torch.where(den > TINY, num / den.clamp_min(TINY), torch.zeros_like(num))
        return ratio, delta


def complement_largest(diff: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For outputs that sum to 1 (softmax): the difference at the reference's largest
    coordinate, recomputed as minus the sum of the others.

    Exact in real arithmetic, and far more precise in floating point: a confident softmax has
    p close to 1, where p' - p is mostly rounding, while the small probabilities (and so their
    differences) keep full relative precision.
    """
    k = reference.argmax(dim=1, keepdim=True)
    others = diff.sum(dim=1, keepdim=True) - diff.gather(1, k)
    return diff.scatter(1, k, -others)


def check_finite(nonfinite: torch.Tensor, radii: torch.Tensor | None = None) -> None:
    """Name the first point (and radius) where the model's output was NaN or Inf.

    ``nonfinite`` counts bad evaluations per (radius, point), or per point for F(x) itself.
    """
    bad = (nonfinite != 0) if nonfinite.dtype != torch.bool else nonfinite
    if not bool(bad.any()):
        return
    where = bad.nonzero()[0].tolist()
    if radii is None or bad.ndim == 1:
        raise LocrobError(f"the model returned NaN or Inf at point {where[-1]} (unperturbed)")
    raise LocrobError(
        f"the model returned NaN or Inf at point {where[1]} (radius {float(radii[where[0]]):.4g})"
    )


def activation_bytes(model: Callable[[torch.Tensor], torch.Tensor], x1: torch.Tensor) -> int:
    """Bytes of every leaf module's output for one example: a per-example memory estimate."""
    total = [0]
    handles = []
    if isinstance(model, nn.Module):
        for module in model.modules():
            if not list(module.children()):
                handles.append(
                    module.register_forward_hook(
                        lambda m, i, o: total.__setitem__(
                            0,
                            total[0] + (o.numel() * o.element_size() if torch.is_tensor(o) else 0),
                        )
                    )
                )
    try:
        with torch.no_grad():
            out = model(x1)
    finally:
        for handle in handles:
            handle.remove()
    return max(total[0], out.numel() * out.element_size()) + x1.numel() * x1.element_size()


def default_budget_bytes(device: torch.device) -> int:
    """Working memory for one chunk: a quarter of the GPU's memory, or 256 MiB on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return 256 * 2**20


def chunk_size(settings: AlphaSettings, per_example: int, total: int, device: torch.device) -> int:
    """Pairs per chunk: the explicit ``chunk_size``, else what fits the memory budget."""
    if settings.chunk_size is not None:
        return min(settings.chunk_size, total)
    budget = (
        int(settings.memory_budget_mb * 2**20)
        if settings.memory_budget_mb is not None
        else default_budget_bytes(device)
    )
    # each pair holds its input, perturbation, perturbed input and the forward activations
    return max(1, min(total, budget // max(1, per_example), 8192))


def pair_chunks(n_points: int, n_draws: int, size: int) -> Iterator[tuple[int, int]]:
    """Ranges of the flat (point, draw) pair index, ``size`` pairs at a time; pair
    ``point * n_draws + draw``."""
    total = n_points * n_draws
    for start in range(0, total, size):
        yield start, min(start + size, total)


SHARED_SLOT = -1  # the draw slot of directions shared by every radius


@dataclass
class Sampled:
    """Raw sampling output: per-point maxima and where each point's maximum was found."""

    per_point: torch.Tensor  # (R, N)
    best_delta: torch.Tensor | None  # (R, N, *shape) when kept for the search
    argmax_point: torch.Tensor  # (R,)
    perturbation: torch.Tensor  # (R, *shape)
    evaluations: int


def sample(
    ev: Evaluator,
    x: torch.Tensor,
    f_x: torch.Tensor,
    radii: torch.Tensor,
    settings: AlphaSettings,
    draws: Draws,
    chunk: int,
    keep_point_deltas: bool = False,
    desc: str = "alpha_lim",
) -> Sampled:
    """Max ratio per (radius, point) over ``n_draws`` random directions at each radius."""
    n, shape = len(x), tuple(x.shape[1:])
    n_radii, n_draws = len(radii), settings.n_draws
    per_point = torch.zeros(n_radii, n, dtype=ev.compute_dtype, device=ev.device)
    best_ratio = torch.full((n_radii,), -1.0, dtype=ev.compute_dtype, device=ev.device)
    argmax_point = torch.zeros(n_radii, dtype=torch.long, device=ev.device)
    perturbation = torch.zeros(n_radii, *shape, dtype=ev.compute_dtype, device=ev.device)
    best_delta = (
        torch.zeros(n_radii, n, *shape, dtype=ev.compute_dtype, device=ev.device)
        if keep_point_deltas
        else None
    )
    nonfinite = torch.zeros(n_radii, n, dtype=torch.int32, device=ev.device)
    total = n * n_draws
    bar = progress(total=total * n_radii, desc=desc, unit="img", unit_scale=True)
    for start, stop in pair_chunks(n, n_draws, chunk):
        points = torch.arange(start, stop, device=ev.device) // n_draws
        xc, fc = x[points], f_x[points]
        shared = draws.get(SHARED_SLOT, start, stop) if settings.directions == "shared" else None
        for k in range(n_radii):
            d = shared if shared is not None else draws.get(k, start, stop)
            ratio, delta = ev.ratios(xc, d.to(ev.compute_dtype) * radii[k], fc)
            nonfinite[k].scatter_add_(0, points, (~torch.isfinite(ratio)).to(torch.int32))
            per_point[k].scatter_reduce_(0, points, ratio, reduce="amax")
            # the radius's best so far, updated without a host sync
            top = ratio.argmax()
            better = ratio[top] > best_ratio[k]
            best_ratio[k] = torch.where(better, ratio[top], best_ratio[k])
            argmax_point[k] = torch.where(better, points[top], argmax_point[k])
            perturbation[k] = torch.where(better, delta[top], perturbation[k])
            if best_delta is not None:
                # keep, for each point, the perturbation of its best draw so far
                improved = ratio >= per_point[k][points]
                best_delta[k][points[improved]] = delta[improved]
            bar.update(len(points))
    bar.close()
    check_finite(nonfinite, radii)
    return Sampled(per_point, best_delta, argmax_point, perturbation, total * n_radii)


def forward_dtype(settings: AlphaSettings) -> torch.dtype | None:
    return FORWARD_DTYPES[settings.forward_dtype]
