"""The batched sampling estimator: a forward-pass engine.

Work is the flat list of (point, draw) pairs, processed in chunks sized to a memory budget;
inside a chunk every radius is evaluated on the same gathered points. F(x) is computed once per
point. Per-point maxima are reduced on the device with ``scatter_reduce``; Python loops only
over chunks and radii, never over draws. Differences and norms are taken in fp32 (fp64 for an
fp64 model) even when the forward pass runs in bf16/fp16, since in low precision
F(x+e) - F(x) at small r is rounding noise.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from locrob.alpha.geometry import Draws, row_norms
from locrob.alpha.philox import PhiloxDraws
from locrob.alpha.settings import FORWARD_DTYPES, AlphaSettings
from locrob.distributed import SINGLE, Shard
from locrob.errors import LocrobError
from locrob.runtime import autocast, progress, synchronize

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
    nominal: bool = False  # divide by ||e|| = r, not by the effective ||clamp(x+e) - x||
    # the sampling's form of the model (locrob.alpha.forward), where it has one
    fast: Callable[[torch.Tensor], torch.Tensor] | None = None

    def outputs(self, x: torch.Tensor, eager: bool = False) -> torch.Tensor:
        """F(x) as (n, d) rows in the compute precision (by the model as it is if ``eager``)."""
        forward = self.model if eager or self.fast is None else self.fast
        with autocast(self.device, self.forward_dtype):
            logits = forward(x)
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
        self,
        x: torch.Tensor,
        eps: torch.Tensor,
        f_x: torch.Tensor,
        radius: float,
        top: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ratio ||F(clamp(x+e)) - F(x)|| / ||clamp(x+e) - x|| per row (or / ``radius``, the
        nominal ||e||, when ``nominal``), and the effective e."""
        moved = self._clamped(x + eps)
        return self._ratios(x, moved, f_x, top, radius, lead=1), moved - x

    def ratios_along(
        self,
        x: torch.Tensor,
        d: torch.Tensor,
        r: torch.Tensor,
        f_x: torch.Tensor,
        top: torch.Tensor,
    ) -> torch.Tensor:
        """The sampling path: ratios at e = r d for every radius at once, shape (m, R).

        ``x`` (m, ...) are the points, ``d`` (m, R or 1, ...) their directions and ``r`` the
        R radii; x + r d is one fused pass and one forward batch of m R images, pair-major.
        """
        x, f_x, top = x.unsqueeze(1), f_x.unsqueeze(1), top.unsqueeze(1)
        shape = (len(x), len(r), *x.shape[2:])
        # x expanded, not broadcast: torch's broadcasting path is 2-3x slower on a CPU
        moved = torch.addcmul(x.expand(shape), r.view(1, -1, *[1] * (x.ndim - 2)), d)
        return self._ratios(x, self._clamped(moved), f_x, top, r.view(1, -1), lead=2)

    def ratios_moved(
        self,
        x: torch.Tensor,
        moved: torch.Tensor,
        denominator: torch.Tensor,
        f_x: torch.Tensor,
        top: torch.Tensor,
        r: torch.Tensor,
    ) -> torch.Tensor:
        """The sampling path with the points already moved and clamped, ``moved`` (m, R, ...),
        and the effective perturbations' norms given, ``denominator`` (m, R): shape (m, R)."""
        x, f_x, top = x.unsqueeze(1), f_x.unsqueeze(1), top.unsqueeze(1)
        return self._ratios(x, moved, f_x, top, r.view(1, -1), lead=2, denominator=denominator)

    def perturbed(self, x: torch.Tensor, d: torch.Tensor, r: float) -> torch.Tensor:
        """The effective perturbation clamp(x + r d) - x, computed as the sampling does."""
        r_t = torch.tensor(r, dtype=self.compute_dtype, device=x.device)
        return self._clamped(torch.addcmul(x, r_t, d.to(self.compute_dtype))) - x

    def _clamped(self, moved: torch.Tensor) -> torch.Tensor:
        return moved.clamp_(*self.clamp) if self.clamp is not None else moved

    def _ratios(
        self,
        x: torch.Tensor,
        moved: torch.Tensor,
        f_x: torch.Tensor,
        top: torch.Tensor | None,
        nominal: torch.Tensor | float,
        lead: int,
        denominator: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # the first ``lead`` axes of ``moved`` index the ratios; ``x``, ``f_x``, ``top`` and
        # ``nominal`` (the radius) broadcast against them
        out = self.outputs(moved.reshape(-1, *moved.shape[lead:]))
        diff = out.view(*moved.shape[:lead], -1) - f_x
        if self.sums_to_one:
            top = f_x.argmax(dim=-1, keepdim=True) if top is None else top
            diff = complement_largest(diff, top.expand(*diff.shape[:-1], 1))
        num = row_norms(diff, self.p_out, lead)
        if self.nominal:
            return num / nominal
        if denominator is None:
            denominator = row_norms(moved - x, self.p_in, lead)
        # A denominator below TINY is raised to it, which can only lower the ratio.
        return num / denominator.clamp_min(TINY)

    @torch.no_grad()
    def noise_floor(self, x: torch.Tensor, f_x: torch.Tensor, top: torch.Tensor) -> float:
        """The output's floating-point noise: the largest change of F(x) when the first points
        are evaluated one at a time by the model as it is instead of in batches as the
        sampling evaluates them (other kernels, other rounding; compiled or not)."""
        m = min(len(x), 4)
        alone = torch.cat([self.outputs(x[i : i + 1], eager=True) for i in range(m)])
        diff = alone - f_x[:m]
        if self.sums_to_one:
            diff = complement_largest(diff, top[:m])
        return float(row_norms(diff, self.p_out).max())


def complement_largest(diff: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """For outputs that sum to 1 (softmax): the difference at the reference's largest
    coordinate (``top``, one index per row, shape (..., 1)), recomputed as minus the sum of
    the others.

    Exact in real arithmetic, and far more precise in floating point: a confident softmax has
    p close to 1, where p' - p is mostly rounding, while the small probabilities (and so their
    differences) keep full relative precision.
    """
    others = diff.sum(dim=-1, keepdim=True) - diff.gather(-1, top)
    return diff.scatter(-1, top, -others)


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
    """Working memory for one chunk: a quarter of the GPU's memory, or 1 GiB on a CPU (room
    for the tuner to try 16 or more PreActResNet18 images per pass; 256 MiB held it to 11)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return 2**30


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
TUNE_SHARE = 20  # the chunks timed, at most this share of the run where they are thrown away
KEPT_SHARE = 2  # and where they are kept (sampled once, not twice)
_tuned: weakref.WeakKeyDictionary[object, dict[tuple, int]] = weakref.WeakKeyDictionary()

Chunk = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # pairs, their points, ratios (R, n)


@dataclass
class Sampler:
    """One chunk of the sampling: the ratios of a range of (point, draw) pairs at every radius.

    Pair ``point * n_draws + draw`` is the address of its directions in ``draws`` (one column
    per radius, or one shared by all), so a chunk's directions do not depend on the chunking.
    """

    ev: Evaluator
    x: torch.Tensor
    f_x: torch.Tensor
    top: torch.Tensor
    radii: torch.Tensor  # (R,) in the compute precision
    draws: Draws
    n_draws: int

    @property
    def pairs(self) -> int:
        return len(self.x) * self.n_draws

    def forward_batch(self, batch: int) -> int:
        """Images per forward pass in a whole chunk of at most ``batch`` images."""
        return forward_batch(self.pairs, len(self.radii), batch)

    def __call__(self, start: int, stop: int, batch: int) -> Chunk:
        """Pairs ``start..stop-1``, their points and their ratios, shape (R, stop - start),
        in forward passes of at most ``batch`` images when a pair's radii exceed it."""
        pairs = torch.arange(start, stop, device=self.ev.device)
        points = pairs // self.n_draws
        x, f_x, top = self.x[points], self.f_x[points], self.top[points]
        n_radii = len(self.radii)
        group = max(1, min(n_radii, batch // len(points)))  # radii per forward pass
        # where the kernel draws, directions are never materialized
        d = None
        if not isinstance(self.draws, PhiloxDraws):
            d = self.draws.get(start, stop).to(self.ev.compute_dtype)
        parts = [
            self._radii_ratios(x, f_x, top, d, start, stop, k, min(group, n_radii - k))
            for k in range(0, n_radii, group)
        ]
        return pairs, points, (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)).t()

    def _radii_ratios(
        self,
        x: torch.Tensor,
        f_x: torch.Tensor,
        top: torch.Tensor,
        d: torch.Tensor | None,
        start: int,
        stop: int,
        k: int,
        size: int,
    ) -> torch.Tensor:
        """The chunk's ratios at radii ``k..k+size-1``, one forward pass: along the directions
        ``d``, or, with none, drawn, moved and clamped in the Philox kernel."""
        r = self.radii[k : k + size]
        if d is None:
            moved, denominator = self.draws.perturbed(
                self.x, start, stop - start, self.n_draws, self.radii, k, size, self.ev.clamp
            )
            return self.ev.ratios_moved(x, moved, denominator, f_x, top, r)
        return self.ev.ratios_along(x, d if d.shape[1] == 1 else d[:, k : k + size], r, f_x, top)


def forward_batch(pairs: int, n_radii: int, batch: int) -> int:
    """Images per forward pass in a whole chunk of at most ``batch`` images, for a run of
    ``pairs`` (point, draw) pairs at ``n_radii`` radii (as :func:`sample` chunks it)."""
    chunk = min(pairs, max(1, batch // n_radii))
    return chunk * max(1, min(n_radii, batch // chunk))


@dataclass
class Tuned:
    """Images per forward pass, and the run's first chunks where the timing sampled them for
    the run (pairs ``0..position-1``; none when they were thrown away or nothing was timed)."""

    batch: int
    chunks: list[Chunk]
    position: int = 0


@torch.no_grad()
def tuned_chunk(sampler: Sampler, largest: int, evaluations: int, keep: bool = False) -> Tuned:
    """The fastest forward batch among 16, 32, 64, ... up to ``largest`` images, by timing
    whole sampling chunks (directions, perturbation, forward pass, differences).

    The best batch is not the largest: on a CPU, batches whose activations stay in cache run
    faster; but every chunk also pays a fixed cost in Python and kernel launches, which only
    timing the real step sees. The choice is cached per model, input shape, precision, device
    and number of radii. It does not change which directions are drawn (they are addressed by
    pair index), only fp32 rounding. Every candidate is timed on about as many images as two
    chunks of the largest (a chunk of 30 images takes about a millisecond: timed alone it is
    noise). The chunks timed are the run's first pairs in order:
    with ``keep`` (the run starts at pair 0 and goes on from them) they are returned, so
    timing costs nothing, and candidates are tried while their chunks fit in half the run;
    otherwise they are thrown away, and only candidates whose chunks fit in 1/``TUNE_SHARE``
    of the run are tried (tuning stays under 5 % of it). With none to compare, a CPU takes the
    smallest and a GPU the largest.
    """
    ev, n_radii = sampler.ev, len(sampler.radii)
    plan = _timing_plan(sampler, largest, evaluations // (KEPT_SHARE if keep else TUNE_SHARE))
    candidates = [size for size, _ in plan]
    if len(candidates) < 2:
        return Tuned(largest if ev.device.type == "cuda" else min(largest, TUNE_START), [])
    x = sampler.x
    key = (
        tuple(x.shape[1:]),
        ev.compute_dtype,
        ev.forward_dtype,
        str(ev.device),
        largest,
        n_radii,
        sampler.draws.width,
        candidates[-1],
    )
    cache = _tuned.setdefault(ev.model, {}) if _weakrefable(ev.model) else {}
    if key in cache:
        return Tuned(cache[key], [])
    rates, position, chunks = {}, 0, []
    for size, rounds in plan:
        pairs = _timed_pairs(sampler, size)
        for i in range(rounds):
            if i == 1:  # the first chunk is the warm-up (allocator, kernel selection)
                synchronize(ev.device)
                begin = time.perf_counter()
            chunks.append(sampler(position, position + pairs, size))
            position += pairs
        synchronize(ev.device)
        rates[size] = (rounds - 1) * pairs * n_radii / (time.perf_counter() - begin)
    cache[key] = max(rates, key=rates.__getitem__)
    return Tuned(cache[key], chunks, position) if keep else Tuned(cache[key], [])


def _timing_plan(sampler: Sampler, largest: int, budget: int) -> list[tuple[int, int]]:
    """The candidates 16, 32, ... up to ``largest`` and the chunks each is timed on: a warm-up,
    then consecutive chunks (a unit of directions shared as in the real run) of about twice
    the largest candidate's images in all; as many candidates as fit in ``budget`` images."""
    plan: list[tuple[int, int]] = []
    size = TUNE_START
    while size <= max(largest, TUNE_START):
        sizes = [*(s for s, _ in plan), size]
        target = 2 * _chunk_images(sampler, size)  # images each candidate is timed on
        trial = [(s, 1 + _timed_chunks(sampler, s, target)) for s in sizes]
        if sum(rounds * _chunk_images(sampler, s) for s, rounds in trial) > budget:
            break
        plan, size = trial, size * 2
    return plan


def _timed_chunks(sampler: Sampler, size: int, target: int) -> int:
    """Chunks of ``size`` timed after the warm-up: at least two, a whole unit of directions,
    and ``target`` images."""
    images = _chunk_images(sampler, size)
    return max(2, sampler.draws.unit // _timed_pairs(sampler, size), -(-target // images))


def _timed_pairs(sampler: Sampler, size: int) -> int:
    return min(sampler.pairs, max(1, size // len(sampler.radii)))


def _chunk_images(sampler: Sampler, size: int) -> int:
    return _timed_pairs(sampler, size) * len(sampler.radii)


def _weakrefable(obj: object) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def chunk_limit(settings: AlphaSettings, per_example: int, total: int, device: torch.device) -> int:
    """The explicit ``chunk_size``, else the largest batch within the memory budget."""
    if settings.chunk_size is not None:
        return min(settings.chunk_size, total)
    return budget_chunk(settings, per_example, total, device)


def chunk_size(
    settings: AlphaSettings, sampler: Sampler, limit: int, total: int, keep: bool
) -> Tuned:
    """Images per forward pass (pairs x radii): the explicit ``chunk_size``, else the fastest
    batch up to ``limit``. ``total`` is the number of images of the whole run; ``keep``, as
    :func:`tuned_chunk` takes it."""
    if settings.chunk_size is not None:
        return Tuned(limit, [])
    return tuned_chunk(sampler, limit, total, keep)


@dataclass
class Sampled:
    """Raw sampling output: per-point maxima and the pair that attained each."""

    per_point: torch.Tensor  # (R, N) max ratio per radius and point
    best_pair: torch.Tensor  # (R, N) flat pair index (point * n_draws + draw) of that max
    evaluations: int


def sample(
    sampler: Sampler,
    batch: int,
    desc: str = "alpha_lim",
    shard: Shard = SINGLE,
    done: Sequence[Chunk] = (),
) -> Sampled:
    """Max ratio per (radius, point) over ``n_draws`` random directions at each radius.

    Each forward pass holds a chunk of pairs at every radius (``batch`` images in all; one
    pair's radii are split over several passes where they exceed it), so the Python work per
    chunk is shared by all radii. Only the index of each point's best
    pair is kept, not its perturbation: directions are addressed by pair index, so
    :func:`best_perturbations` regenerates the few that are needed. ``done`` are the run's
    first chunks, already sampled (the tuner's), consecutive from pair 0. With a ``shard`` of
    a process group, this rank samples its contiguous range of the chunks (for a given
    ``batch``, the same chunks at any world size) and the maxima are reduced over the group:
    every rank gets the whole result, the same as one process's.
    """
    ev, n, n_radii = sampler.ev, len(sampler.x), len(sampler.radii)
    per_point = torch.zeros(n_radii, n, dtype=ev.compute_dtype, device=ev.device)
    best_pair = torch.full((n_radii, n), -1, dtype=torch.long, device=ev.device)
    offsets = (torch.arange(n_radii, device=ev.device) * n).view(-1, 1)  # flat (radius, point)

    def fold(pairs: torch.Tensor, points: torch.Tensor, ratio: torch.Tensor) -> None:
        flat = (offsets + points).flatten()
        # NaN propagates through amax, and Inf stays: both are found after the loop
        per_point.view(-1).scatter_reduce_(0, flat, ratio.flatten(), reduce="amax")
        # pairs that reach their point's running max; later pairs have larger indices
        hits = torch.where(ratio >= per_point[:, points], pairs, -1)
        best_pair.view(-1).scatter_reduce_(0, flat, hits.flatten(), reduce="amax")

    size = max(1, batch // n_radii)
    mine = shard.blocks(sampler.pairs, size)
    if done and (shard.world_size > 1 or mine.start != 0):
        raise LocrobError("chunks sampled in advance are the first of a whole run")
    bar = progress(total=len(mine) * n_radii, desc=desc, unit="img", unit_scale=True)
    position = mine.start
    for chunk in done:
        fold(*chunk)
        position += len(chunk[0])
        bar.update(len(chunk[0]) * n_radii)
    for start in range(position, mine.stop, size):
        stop = min(start + size, mine.stop)
        fold(*sampler(start, stop, batch))
        bar.update((stop - start) * n_radii)
    bar.close()
    _check_finite(per_point, sampler.radii, shard)
    if shard.world_size > 1:
        # the largest pair index attaining the group's maximum, as one process would find it
        local = per_point.clone()
        shard.max(per_point)
        shard.max(best_pair.masked_fill_(local != per_point, -1))
    return Sampled(per_point, best_pair, sampler.pairs * n_radii)


def _check_finite(per_point: torch.Tensor, radii: torch.Tensor, shard: Shard) -> None:
    """Name the first (point, radius) where the model returned NaN or Inf; every rank of a
    group learns whether any found one, so that all stop together."""
    bad = ~torch.isfinite(per_point)
    if bool(shard.sum(bad.any().long().view(1))):
        if not bool(bad.any()):
            raise LocrobError("the model returned NaN or Inf on another process's pairs")
        k, i = bad.nonzero()[0].tolist()
        radius = float(radii[k])
        raise LocrobError(f"the model returned NaN or Inf at point {i} (radius {radius:.4g})")


def best_perturbations(
    sampler: Sampler, radii: Sequence[float], k: int, pairs: torch.Tensor
) -> torch.Tensor:
    """Regenerate the effective perturbations of ``pairs`` at radius ``k``."""
    column = k if sampler.draws.width > 1 else 0  # fresh directions per radius, or shared
    pair_list = pairs.tolist()
    d = sampler.draws.at(pair_list, [column] * len(pair_list))
    return sampler.ev.perturbed(sampler.x[pairs // sampler.n_draws], d, radii[k])


def forward_dtype(settings: AlphaSettings) -> torch.dtype | None:
    return FORWARD_DTYPES[settings.forward_dtype]
