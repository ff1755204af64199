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
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from locrob.alpha.geometry import Draws, row_norms
from locrob.alpha.settings import FORWARD_DTYPES, AlphaSettings
from locrob.errors import LocrobError
from locrob.runtime import progress

TINY = 1e-12  # the smallest denominator: shorter effective perturbations only lower the ratio


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
        if not isinstance(logits, torch.Tensor) or logits.ndim < 2 or len(logits) != len(x):
            shape = (
                tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            )
            raise LocrobError(
                f"the model must return one row of outputs per input, shape (n, ...): "
                f"{len(x)} inputs gave {shape}"
            )
        out = self.output_fn(logits.to(self.compute_dtype))
        if not isinstance(out, torch.Tensor) or len(out) != len(x):
            raise LocrobError("the output function must return one row per input")
        return out.reshape(len(x), -1)

    def ratios(
        self, x: torch.Tensor, eps: torch.Tensor, f_x: torch.Tensor, top: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ratio ||F(clamp(x+e)) - F(x)|| / ||clamp(x+e) - x|| per row, and the effective e.

        ``top`` (each row's largest output, for ``sums_to_one``) may be passed precomputed.
        A denominator below ``TINY`` is raised to it, which can only lower the ratio.
        """
        moved = x + eps
        if self.clamp is not None:
            moved = moved.clamp_(*self.clamp)
        delta = moved - x
        diff = self.outputs(moved) - f_x
        if self.sums_to_one:
            diff = complement_largest(diff, f_x.argmax(dim=1, keepdim=True) if top is None else top)
        num = row_norms(diff, self.p_out)
        return num / row_norms(delta, self.p_in).clamp_min(TINY), delta

    def perturbed(self, x: torch.Tensor, d: torch.Tensor, r: float) -> torch.Tensor:
        """The effective perturbation clamp(x + r d) - x, computed exactly as in ``ratios``."""
        moved = x + torch.mul(d.to(self.compute_dtype), r)
        return (moved.clamp_(*self.clamp) if self.clamp is not None else moved) - x

    @torch.no_grad()
    def noise_floor(self, x: torch.Tensor, f_x: torch.Tensor, top: torch.Tensor) -> float:
        """The output's floating-point noise: the largest change of F(x) when the first points
        are evaluated one at a time instead of in batches (other kernels, other rounding)."""
        m = min(len(x), 16)
        alone = torch.cat([self.outputs(x[i : i + 1]) for i in range(m)])
        diff = alone - f_x[:m]
        if self.sums_to_one:
            diff = complement_largest(diff, top[:m])
        return float(row_norms(diff, self.p_out).max())


def complement_largest(diff: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """For outputs that sum to 1 (softmax): the difference at the reference's largest
    coordinate (``top``, one index per row, shape (n, 1)), recomputed as minus the sum of the
    others.

    Exact in real arithmetic, and far more precise in floating point: a confident softmax has
    p close to 1, where p' - p is mostly rounding, while the small probabilities (and so their
    differences) keep full relative precision.
    """
    others = diff.sum(dim=1, keepdim=True) - diff.gather(1, top)
    return diff.scatter(1, top, -others)


def check_finite(f_x: torch.Tensor) -> None:
    """Name the first point whose unperturbed output is NaN or Inf."""
    bad = ~torch.isfinite(f_x).all(dim=1)
    if bool(bad.any()):
        raise LocrobError(
            f"the model returned NaN or Inf at point {int(bad.nonzero()[0, 0])} (unperturbed)"
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


def budget_chunk(
    settings: AlphaSettings, per_example: int, total: int, device: torch.device
) -> int:
    """The largest chunk that fits the memory budget (at most ``total`` pairs)."""
    budget = (
        int(settings.memory_budget_mb * 2**20)
        if settings.memory_budget_mb is not None
        else default_budget_bytes(device)
    )
    return max(1, min(total, budget // max(1, per_example), MAX_CHUNK))


MAX_CHUNK = 8192
TUNE_START = 16
_tuned: weakref.WeakKeyDictionary[object, dict[tuple, int]] = weakref.WeakKeyDictionary()


@torch.no_grad()
def tuned_chunk(ev: Evaluator, x: torch.Tensor, largest: int, evaluations: int) -> int:
    """The fastest forward batch size among 16, 32, 64, ... up to ``largest``, by timing.

    The best batch is not the largest: on a CPU, batches whose activations stay in cache run
    faster. The choice is cached per model, input shape, precision and device. It does not
    change which directions are drawn (they are addressed by pair index), only fp32 rounding.
    Runs too small to repay the timing (under 16 forwards of the largest candidate) skip it.
    """
    if largest <= TUNE_START or evaluations < 16 * largest:
        return largest
    key = (tuple(x.shape[1:]), ev.compute_dtype, ev.forward_dtype, str(ev.device), largest)
    cache = _tuned.setdefault(ev.model, {}) if _weakrefable(ev.model) else {}
    if key not in cache:
        candidates = [TUNE_START]
        while candidates[-1] * 2 <= largest:
            candidates.append(candidates[-1] * 2)
        rates = {}
        for size in candidates:
            batch = x[torch.arange(size, device=x.device) % len(x)]
            ev.outputs(batch)  # warm-up (allocator, kernel selection)
            _sync(ev.device)
            start = time.perf_counter()
            for _ in range(2):
                ev.outputs(batch)
            _sync(ev.device)
            rates[size] = 2 * size / (time.perf_counter() - start)
        cache[key] = max(rates, key=rates.__getitem__)
    return cache[key]


def _weakrefable(obj: object) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def chunk_size(
    settings: AlphaSettings, ev: Evaluator, x: torch.Tensor, per_example: int, total: int
) -> int:
    """Pairs per chunk: the explicit ``chunk_size``, else the fastest batch within the budget."""
    if settings.chunk_size is not None:
        return min(settings.chunk_size, total)
    largest = budget_chunk(settings, per_example, total, ev.device)
    return tuned_chunk(ev, x, largest, total * len(settings.radii))


def pair_chunks(n_points: int, n_draws: int, size: int) -> Iterator[tuple[int, int]]:
    """Ranges of the flat (point, draw) pair index, ``size`` pairs at a time; pair
    ``point * n_draws + draw``."""
    total = n_points * n_draws
    for start in range(0, total, size):
        yield start, min(start + size, total)


SHARED_SLOT = -1  # the draw slot of directions shared by every radius


def slot(settings: AlphaSettings, k: int) -> int:
    """The draw slot of radius ``k``: its own, or the one every radius shares."""
    return SHARED_SLOT if settings.directions == "shared" else k


@dataclass
class Sampled:
    """Raw sampling output: per-point maxima and the pair that attained each."""

    per_point: torch.Tensor  # (R, N) max ratio per radius and point
    best_pair: torch.Tensor  # (R, N) flat pair index (point * n_draws + draw) of that max
    evaluations: int


def sample(
    ev: Evaluator,
    x: torch.Tensor,
    f_x: torch.Tensor,
    radii: Sequence[float],
    settings: AlphaSettings,
    draws: Draws,
    chunk: int,
    desc: str = "alpha_lim",
) -> Sampled:
    """Max ratio per (radius, point) over ``n_draws`` random directions at each radius.

    Only the index of each point's best pair is kept, not its perturbation: directions are
    addressed by pair index, so :func:`best_perturbations` regenerates the few that are needed.
    """
    n, n_radii, n_draws = len(x), len(radii), settings.n_draws
    per_point = torch.zeros(n_radii, n, dtype=ev.compute_dtype, device=ev.device)
    best_pair = torch.full((n_radii, n), -1, dtype=torch.long, device=ev.device)
    top = f_x.argmax(dim=1, keepdim=True)
    bar = progress(total=n * n_draws * n_radii, desc=desc, unit="img", unit_scale=True)
    for start, stop in pair_chunks(n, n_draws, chunk):
        pairs = torch.arange(start, stop, device=ev.device)
        points = pairs // n_draws
        xc, fc, tc = x[points], f_x[points], top[points]
        shared = draws.get(SHARED_SLOT, start, stop) if settings.directions == "shared" else None
        for k, r in enumerate(radii):
            d = shared if shared is not None else draws.get(k, start, stop)
            ratio, _ = ev.ratios(xc, torch.mul(d.to(ev.compute_dtype), r), fc, tc)
            # NaN propagates through amax, and Inf stays: both are found after the loop
            per_point[k].scatter_reduce_(0, points, ratio, reduce="amax")
            # pairs that reach their point's running max; later pairs have larger indices
            hits = torch.where(ratio >= per_point[k][points], pairs, -1)
            best_pair[k].scatter_reduce_(0, points, hits, reduce="amax")
        bar.update((stop - start) * n_radii)
    bar.close()
    bad = ~torch.isfinite(per_point)
    if bool(bad.any()):
        k, i = bad.nonzero()[0].tolist()
        raise LocrobError(f"the model returned NaN or Inf at point {i} (radius {radii[k]:.4g})")
    return Sampled(per_point, best_pair, n * n_draws * n_radii)


def best_perturbations(
    ev: Evaluator,
    x: torch.Tensor,
    radii: Sequence[float],
    settings: AlphaSettings,
    draws: Draws,
    k: int,
    pairs: torch.Tensor,
) -> torch.Tensor:
    """Regenerate the effective perturbations of ``pairs`` at radius ``k``."""
    pair_list = pairs.tolist()
    d = draws.at([slot(settings, k)] * len(pair_list), pair_list)
    return ev.perturbed(x[pairs // settings.n_draws], d, radii[k])


def forward_dtype(settings: AlphaSettings) -> torch.dtype | None:
    return FORWARD_DTYPES[settings.forward_dtype]
