"""How compatible is a data set with a Lipschitz or a local-robustness constraint at all?
(paper, Figs. 1 and 3).

With F the one-hot labels, two images of distinct classes are ``c`` apart in the output
(c = 1 in L-inf, sqrt(2) in L2). A pair at input distance delta is incompatible with an
alpha-Lipschitz F when delta < c / alpha (Fig. 1), and with alpha-robustness at radius
d ~ 2r when also delta < d (Fig. 3). Both curves need only the distribution of distinct-class
pair distances, computed here in tiles over the upper triangle, never as an N x N matrix.

For uint8 images in L-inf the distances are integers 0..255 and the histogram is exact; they are
computed by the faster of two exact integer kernels, timed on a probe tile at first use: a
fused loop that ``torch.compile`` builds, and ``torch.cdist`` (the only one when compilation is
off, ``LOCROB_COMPILE=0``, or unavailable); on a CUDA device with Triton, by one Triton kernel
that accumulates the histogram itself (:mod:`locrob.linf_triton`). For L2, or float images,
distances fall into a fine histogram whose bin width is the stated ``resolution``: a curve
value at threshold t counts the pairs certainly below t, and at most one bin's pairs
(``curve_error``) could still be below t.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from locrob import linf_triton
from locrob.alpha.geometry import parse_norm
from locrob.data.images import as_images, as_labels
from locrob.distributed import SINGLE, Shard
from locrob.errors import LocrobError
from locrob.runtime import best_rate, progress, quiet_cuda_probe, resolve_device

EXACT_BINS = 256  # uint8 L-inf: one bin per integer distance 0..255
FINE_BINS = 1 << 16
PAIR_BINS = 256  # the per-class-pair breakdown (exact for uint8 L-inf, coarse otherwise)
DEFAULT_ALPHAS = np.logspace(-1, 3, 161).tolist()
DEFAULT_DS = [0.05, 0.1, 0.2, 0.3, 0.5]


@dataclass
class Separation:
    """The distribution of distances between images of distinct classes, in [0, 1] image units."""

    norm: str
    exact: bool
    upper: float  # distances lie in [0, upper]
    counts: torch.Tensor  # (bins,) distinct-class pairs per bin
    pair_counts: torch.Tensor  # (C, C, PAIR_BINS), class a < class b in the upper triangle
    classes: list[str]
    n_images: int

    @property
    def n_pairs(self) -> int:
        return int(self.counts.sum())

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def width(self) -> float:
        """Bin width in distance units (exact uint8 L-inf: one grey level, 1/255)."""
        return self.upper / (self.bins - 1) if self.exact else self.upper / self.bins

    @property
    def resolution(self) -> float:
        """The most a reported distance can be off: 0 when exact, else one bin."""
        return 0.0 if self.exact else self.width

    @property
    def c(self) -> float:
        """Output distance of two distinct one-hot labels."""
        return 1.0 if self.norm == "inf" else math.sqrt(2.0)

    def min_distance(self) -> float:
        """The smallest distinct-class distance (lower edge of its bin when not exact)."""
        nonzero = torch.nonzero(self.counts)
        return float(nonzero[0, 0]) * self.width if len(nonzero) else float("inf")

    def count_below(self, t: float) -> int:
        """Pairs whose distance is certainly < ``t``."""
        # exact: the integer levels k with k / 255 < t; binned: the bins whose upper edge <= t
        k = math.ceil(t * 255 - 1e-9) if self.exact else math.floor(t / self.width + 1e-9)
        return int(self.counts[: max(0, min(k, self.bins))].sum())

    def curve_error(self) -> float:
        """The largest fraction of pairs in one bin: the most a binned curve can be off."""
        return 0.0 if self.exact else float(self.counts.max()) / max(1, self.n_pairs)

    def lipschitz_curve(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> list[float]:
        """Fig. 1: fraction of distinct-class pairs incompatible with an alpha-Lipschitz F."""
        total = max(1, self.n_pairs)
        return [self.count_below(self.c / a) / total for a in alphas]

    def robustness_curves(
        self, alphas: Sequence[float] = DEFAULT_ALPHAS, ds: Sequence[float] = DEFAULT_DS
    ) -> list[list[float]]:
        """Fig. 3: per d, fraction of pairs closer than d that no alpha-robust F can satisfy."""
        total = max(1, self.n_pairs)
        return [[self.count_below(min(d, self.c / a)) / total for a in alphas] for d in ds]

    def to_dict(
        self, alphas: Sequence[float] = DEFAULT_ALPHAS, ds: Sequence[float] = DEFAULT_DS
    ) -> dict[str, Any]:
        """JSON-able: the histogram, the per-class-pair counts and both curves."""
        c = len(self.classes)
        pairs = {
            f"{self.classes[a]}|{self.classes[b]}": int(self.pair_counts[a, b].sum())
            for a in range(c)
            for b in range(a + 1, c)
        }
        return {
            "norm": self.norm,
            "exact": self.exact,
            "resolution": self.resolution,
            "curve_error": self.curve_error(),
            "n_images": self.n_images,
            "n_pairs": self.n_pairs,
            "upper": self.upper,
            "min_distance": self.min_distance(),
            "bin_width": self.width,
            "histogram": self.counts.tolist() if self.exact else _compact(self.counts),
            "pairs_per_class_pair": pairs,
            "alphas": list(alphas),
            "lipschitz_curve": self.lipschitz_curve(alphas),
            "ds": list(ds),
            "robustness_curves": self.robustness_curves(alphas, ds),
        }

    @classmethod
    def from_dict(cls, details: dict[str, Any]) -> Separation:
        """A light Separation from :meth:`to_dict`'s output (a report's details), enough to
        redraw its curves: the histogram, without the per-class-pair counts."""
        counts = details["histogram"]
        if isinstance(counts, dict):  # sparse form of a fine histogram
            dense = torch.zeros(round(details["upper"] / details["bin_width"]), dtype=torch.long)
            dense[counts["bins"]] = torch.tensor(counts["counts"])
            counts = dense
        else:
            counts = torch.tensor(counts)
        return cls(
            details["norm"],
            details["exact"],
            details["upper"],
            counts,
            torch.zeros(0),
            [],
            details["n_images"],
        )


def _compact(counts: torch.Tensor) -> dict[str, list[int]]:
    """A sparse histogram: the non-empty bins and their counts."""
    nonzero = torch.nonzero(counts).flatten()
    return {"bins": nonzero.tolist(), "counts": counts[nonzero].tolist()}


def _linf_levels_cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L-inf distances between uint8 rows, in grey levels, by ``torch.cdist`` (exact in fp32)."""
    return torch.cdist(a.float(), b.float(), p=float("inf")).round_().int()


def _linf_levels_fused(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same in int32, written as one broadcast expression for ``torch.compile`` to fuse
    into a single loop (never materializing the rows x rows x features differences)."""
    return (a[:, None, :].to(torch.int32) - b[None, :, :].to(torch.int32)).abs().amax(-1)


Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KERNEL_BUILDS = 64  # tile shapes the compiled kernel is built for in one process, at most


@dataclass(frozen=True)
class KernelChoice:
    """The L-inf tile kernel picked for a device and a tile shape, with the probe's evidence:
    each candidate's pairs/s on one probe tile (``compiled`` absent when it could not be built)."""

    name: str
    kernel: Kernel
    rates: dict[str, float]


_choices: dict[tuple[str, int, int], KernelChoice] = {}


def _compiled_kernel() -> Kernel | None:
    """The fused kernel through ``torch.compile``, or None when ``LOCROB_COMPILE=0``.

    Static shapes: :func:`separation` feeds it two fixed, unaliased buffers of one tile each,
    so one build serves every tile. Fed views of one tensor with dynamic shapes instead, the
    compiler guards on their storage offsets and aliasing, and the build it falls back to for
    the diagonal tiles runs at half the speed (measured on torch 2.14, 3072-byte rows).
    """
    if os.environ.get("LOCROB_COMPILE", "1") in ("0", "false", "no", "off"):
        return None
    quiet_cuda_probe()
    return torch.compile(_linf_levels_fused, dynamic=False)


def _probes(
    rows: int, features: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of tiles on which every feature decides some distances: bytes below 128, and in
    each row one 255, at consecutive features, ``2 * rows`` of them per pair, so that a kernel
    that drops any lane, block or tail of the reduction gets distances wrong. (Random bytes
    would not show it: their largest difference is reached at many features.) The two tiles
    of a pair are separate tensors, as :func:`separation`'s two buffers are."""
    g = torch.Generator().manual_seed(0)
    index = torch.arange(rows)
    for start in range(0, features, 2 * rows):
        shape = (rows, features)
        a, b = (torch.randint(0, 128, shape, generator=g, dtype=torch.uint8) for _ in "ab")
        a[index, (start + index) % features] = 255
        b[index, (start + rows + index) % features] = 255
        yield a.to(device), b.to(device)


def pairs_per_s(kernel: Kernel, a: torch.Tensor, b: torch.Tensor) -> float:
    """Pairs per second of ``kernel`` on the tiles ``a`` and ``b`` (built or warm already)."""

    def run() -> int:
        kernel(a, b)
        return len(a) * len(b)

    return best_rate(run, a.device, repeats=3)


def linf_kernel(device: torch.device, rows: int, features: int) -> KernelChoice:
    """The faster exact L-inf kernel for tiles of ``rows`` x ``rows`` rows of ``features``
    bytes on ``device``.

    Both candidates, the fused kernel compiled by ``torch.compile`` and ``torch.cdist``, are
    timed on one probe tile of that shape at first use, as the α_lim engine tunes its chunk:
    which one wins depends on the machine (on a CPU, the compiled loop is several times faster
    with AVX-512 and barely faster with AVX2 only) and on the row width (``torch.cdist`` wins
    on 64-byte rows). The compiled one must also reproduce ``torch.cdist`` exactly on probes
    that test every feature (torch 2.14's inductor, vectorizing for AVX2 only, gets 3072-byte
    rows wrong); a failed compilation leaves ``torch.cdist``.
    """
    key = (str(device), rows, features)
    if key not in _choices:
        probes = list(_probes(rows, features, device))
        candidates: dict[str, Kernel] = {"cdist": _linf_levels_cdist}
        compiled = _compiled_kernel()
        if compiled is not None:
            try:
                # one build per tile shape, up to KERNEL_BUILDS (torch's default limit, 8, is
                # soon reached in a long session); past it, an error, never the silent eager
                # run that holds rows x rows x features int32 in memory
                limits = {"recompile_limit": KERNEL_BUILDS, "fail_on_recompile_limit_hit": True}
                with torch._dynamo.config.patch(**limits):
                    exact = all(
                        torch.equal(compiled(a, b), _linf_levels_cdist(a, b)) for a, b in probes
                    )
                if exact:
                    candidates["compiled"] = compiled
            except Exception as err:  # no compiler, unsupported platform: stay exact and eager
                warnings.warn(
                    f"separation: torch.compile is unavailable ({type(err).__name__}); using "
                    "torch.cdist, exact",
                    stacklevel=2,
                )
        a, b = probes[0]
        rates = {name: pairs_per_s(kernel, a, b) for name, kernel in candidates.items()}
        name = max(rates, key=rates.__getitem__)
        _choices[key] = KernelChoice(name, candidates[name], rates)
    return _choices[key]


TRITON_TILE = 4096  # rows per side of the Triton kernel's tiles (fewer images: one tile)
TIMING_CLASSES = 8  # runs of sorted labels in the tile that times the Triton kernel's shapes
PROBE_CLASSES = 3  # in the Triton kernel's probes: a wrong class-pair row shows with three


@dataclass(frozen=True)
class BlockChoice:
    """The Triton kernel's launch shape for a device and a tile shape, with the evidence: each
    exact candidate's pairs/s on a tile of that shape (empty when only one could run, and in
    the interpreter, which takes the first)."""

    block: linf_triton.Block
    rates: dict[str, float]


_blocks: dict[tuple[str, int, int], BlockChoice | None] = {}


def _distinct(labels_a: torch.Tensor, labels_b: torch.Tensor, diagonal: bool) -> torch.Tensor:
    """Which pairs of a tile count: distinct classes, and on a ``diagonal`` tile (both sides
    the same rows) only j > i, so each unordered pair once."""
    keep = labels_a[:, None] != labels_b[None, :]
    return keep.triu(diagonal=1) if diagonal else keep


def _by_class_pair(
    bins: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    keep: torch.Tensor,
    classes: int,
) -> torch.Tensor:
    """The (classes * classes * PAIR_BINS,) counts at (lower class, higher class, bin) of the
    kept pairs of a tile, given each kept pair's bin (0..PAIR_BINS-1)."""
    ci, cj = labels_a[:, None], labels_b[None, :]
    low = torch.minimum(ci, cj).expand_as(keep)[keep]
    high = torch.maximum(ci, cj).expand_as(keep)[keep]
    return torch.bincount(
        (low * classes + high) * PAIR_BINS + bins, minlength=classes * classes * PAIR_BINS
    )


def _sorted_labels(rows: int, classes: int, device: torch.device) -> torch.Tensor:
    """``classes`` runs of equal labels, as a tile of class-sorted rows holds."""
    return torch.arange(rows, device=device) * classes // rows


def _block_exact(block: linf_triton.Block, device: torch.device, features: int) -> bool:
    """Whether the Triton kernel in ``block``'s shape reproduces ``torch.cdist``'s class-pair
    histogram on the probe tiles along each of its paths. The tiles: rows where every feature
    decides some distances (128-255 levels), and the same rows moved by 0-3 levels (small
    distances), of unequal lengths that end in partial blocks. The labels: three classes in
    runs of a block's rows (blocks of one class, some of the same class on both sides), and
    alternating (mixed blocks; off the diagonal on the moved rows), each off the diagonal and
    on it."""
    size = max(block.rows_a, block.rows_b)
    rows = 3 * size + size // 2 + 3  # three blocks of each side, then a partial one
    runs = torch.arange(rows, device=device).div(size, rounding_mode="floor")
    ordered = runs.clamp(max=PROBE_CLASSES - 1)
    alternating = torch.arange(rows, device=device) % PROBE_CLASSES
    g = torch.Generator().manual_seed(2)
    for a, b in _probes(rows, features, device):
        moved = torch.randint(0, 4, a.shape, generator=g).to(device)
        near = (a.int() + moved).clamp(max=255).to(torch.uint8)
        short = rows - size // 2 - 1  # the other side ends in another partial block
        for x, y, labels, diagonal in (
            (a, b[:short], ordered, False),
            (a, a, ordered, True),
            (a, near[:short], alternating, False),
            (a, a, alternating, True),
        ):
            la, lb = labels, labels[: len(y)]
            out = torch.zeros(PROBE_CLASSES**2 * PAIR_BINS, dtype=torch.long, device=device)
            linf_triton.add_tile(x, y, la, lb, PROBE_CLASSES, out, diagonal, block)
            keep = _distinct(la, lb, diagonal)
            levels = _linf_levels_cdist(x, y)[keep].long()
            if not torch.equal(out, _by_class_pair(levels, la, lb, keep, PROBE_CLASSES)):
                return False
    return True


def _block_rate(block: linf_triton.Block, device: torch.device, rows: int, features: int) -> float:
    """Pairs per second of the Triton kernel in ``block``'s shape on one off-diagonal tile of
    ``rows`` x ``rows`` random rows with sorted labels (its result thrown away)."""
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randint(0, 256, (rows, features), generator=g, dtype=torch.uint8) for _ in "ab")
    a, b, labels = a.to(device), b.to(device), _sorted_labels(rows, TIMING_CLASSES, device)
    out = torch.zeros(TIMING_CLASSES**2 * PAIR_BINS, dtype=torch.long, device=device)

    def run() -> int:
        linf_triton.add_tile(a, b, labels, labels, TIMING_CLASSES, out, False, block)
        return rows * rows

    run()  # built already by the probes; this call warms the caches
    return best_rate(run, device, repeats=3)


def triton_block(device: torch.device, rows: int, features: int) -> BlockChoice | None:
    """The Triton kernel's launch shape for tiles of ``rows`` x ``rows`` rows of ``features``
    bytes on ``device``, or None where :func:`separation` does not take the kernel.

    None where it cannot run (:func:`locrob.linf_triton.usable`). Otherwise each candidate
    shape must reproduce the exact histogram on the probes, and the exact ones are timed on a
    tile of the run's shape at first use: the fastest runs (in Triton's interpreter, the
    first). A shape that fails to build, counts wrong or fails on that tile is left out, with
    a warning; None, and the other kernels, when none is left.
    """
    if not linf_triton.usable(device):
        return None
    key = (str(device), rows, features)
    if key not in _blocks:
        exact, left_out = [], []
        for block in linf_triton.candidates(features, device):
            try:
                if _block_exact(block, device, features):
                    exact.append(block)
                else:
                    left_out.append(f"{block} (wrong histogram)")
            except Exception as err:  # a shape this Triton or this device cannot build
                left_out.append(f"{block} ({type(err).__name__})")
        rates = {}
        if len(exact) > 1 and not linf_triton.interpreted():  # numpy's pace says nothing
            for block in tuple(exact):
                try:
                    rates[str(block)] = _block_rate(block, device, rows, features)
                except Exception as err:  # a shape that fails at the run's tile size only
                    exact.remove(block)
                    left_out.append(f"{block} ({type(err).__name__} on {rows} rows)")
            exact.sort(key=lambda b: -rates[str(b)])
        if left_out:
            fallback = "" if exact else "; using the other kernels"
            warnings.warn(
                f"separation: Triton kernel shapes left out: {', '.join(left_out)}{fallback}",
                stacklevel=2,
            )
        _blocks[key] = BlockChoice(exact[0], rates) if exact else None
    return _blocks[key]


@dataclass(frozen=True)
class TilePlan:
    """How the exact (uint8 L-inf) histogram of a set of images is tiled, and which kernel
    fills it: the Triton kernel's shape, or else the faster of the others."""

    tile: int
    triton: BlockChoice | None
    kernel: KernelChoice | None

    @property
    def name(self) -> str:
        if self.triton is not None:
            return f"Triton kernel ({self.triton.block})"
        assert self.kernel is not None
        return f"{self.kernel.name} kernel"

    @property
    def rates(self) -> dict[str, float]:
        """The evidence for the choice: each candidate's pairs/s on the tile that chose it."""
        chosen = self.triton if self.triton is not None else self.kernel
        assert chosen is not None
        return chosen.rates


def linf_plan(
    device: torch.device, n: int, tile: int, features: int, shard: Shard = SINGLE
) -> TilePlan:
    """The plan for ``n`` uint8 images of ``features`` bytes in L-inf: the Triton kernel on
    tiles of ``TRITON_TILE`` rows where it runs and is exact (on every rank of ``shard``'s
    group: the ranks must tile alike, or pairs would be counted twice or not at all), else
    ``tile`` rows through :func:`linf_kernel`'s choice."""
    big = tile_rows(n, max(tile, TRITON_TILE))
    triton = triton_block(device, big, features)
    if shard.world_size > 1:
        ready = torch.tensor([int(triton is not None)], device=device)
        if int(shard.sum(ready)) < shard.world_size:
            triton = None
    if triton is not None:
        return TilePlan(big, triton, None)
    small = tile_rows(n, tile)
    return TilePlan(small, None, linf_kernel(device, small, features))


def tile_rows(n: int, tile: int) -> int:
    """The rows per tile for ``n`` images: ``tile``, or the power of two that holds them all
    when fewer (few tile shapes, so few builds of the compiled kernel)."""
    return min(tile, 1 << (n - 1).bit_length())


def tiles(n: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    """Upper-triangle tiles (i0, i1, j0, j1) with j0 >= i0, covering every unordered pair once."""
    for i0 in range(0, n, size):
        for j0 in range(i0, n, size):
            yield i0, min(i0 + size, n), j0, min(j0 + size, n)


def _checked(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, list[int], list[int]]:
    """The images, their labels and the sorted classes, refused without two classes."""
    if len(x) == 0:
        raise LocrobError("no images: the separation analysis needs at least two classes of images")
    images = as_images(x, what="images")
    labels = as_labels(y, len(images), what="labels").tolist()
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise LocrobError("a single class: there are no pairs of distinct classes to measure")
    return images, labels, classes


@dataclass
class _Tally:
    """The pair histograms of one run, filled tile by tile on the device."""

    # sorted by class where the Triton kernel counts (pairs and counts are the same in any order)
    values: torch.Tensor  # (N, features): grey levels, uint8 when exact, fp64 otherwise
    dense: torch.Tensor  # (N,) labels relabelled 0..C-1, so the breakdown is dense
    n_classes: int
    p: float
    exact: bool
    block: linf_triton.Block | None  # the Triton kernel's shape, where it fills the histogram
    tile: int
    upper: float
    counts: torch.Tensor  # (bins,)
    pair_counts: torch.Tensor  # (C * C * PAIR_BINS,)
    kernel: Kernel | None = None  # exact outside the Triton kernel: the integer L-inf kernel
    buffers: list[torch.Tensor] | None = None  # ... and its two fixed tile buffers

    @classmethod
    def start(
        cls,
        images: torch.Tensor,
        labels: list[int],
        classes: list[int],
        p: float,
        tile: int,
        dev: torch.device,
        shard: Shard = SINGLE,
    ) -> _Tally:
        """Values on the device, the kernel and tile size for them (the same on every rank of
        ``shard``'s group), and empty histograms."""
        exact = images.dtype == torch.uint8 and p == float("inf")
        flat = images.reshape(len(images), -1)
        # integer levels for uint8 (exact in fp32 for L-inf), [0, 1] floats otherwise
        scale = 1.0 if images.dtype == torch.uint8 else 255.0
        index = {c: i for i, c in enumerate(classes)}
        dense = torch.tensor([index[c] for c in labels])
        plan = linf_plan(dev, len(flat), tile, flat.shape[1], shard) if exact else None
        tile = tile_rows(len(flat), tile) if plan is None else plan.tile
        if plan is not None and plan.triton is not None:  # sorted: most blocks of one class
            order = torch.argsort(dense, stable=True)  # (where the images are: one copy)
            flat, dense = flat[order.to(flat.device)], dense[order]
        # uint8 L-inf stays in integers (the fused kernel); the rest goes through cdist in fp64
        values = flat.to(dev) if exact else flat.to(dev, torch.float64) * scale
        dense = dense.to(dev)
        buffers = None
        if plan is not None and plan.triton is None:  # every tile through two buffers: one shape
            buffers = [
                torch.zeros(tile, flat.shape[1], dtype=torch.uint8, device=dev) for _ in "ab"
            ]
        n_classes = len(classes)
        return cls(
            values=values,
            dense=dense,
            n_classes=n_classes,
            p=p,
            exact=exact,
            block=None if plan is None or plan.triton is None else plan.triton.block,
            tile=tile,
            upper=1.0 if p == float("inf") else math.sqrt(flat.shape[1]),
            counts=torch.zeros(EXACT_BINS if exact else FINE_BINS, dtype=torch.long, device=dev),
            pair_counts=torch.zeros(
                n_classes * n_classes * PAIR_BINS, dtype=torch.long, device=dev
            ),
            kernel=None if plan is None or plan.kernel is None else plan.kernel.kernel,
            buffers=buffers,
        )

    def add(self, i0: int, i1: int, j0: int, j1: int) -> None:
        """Count the distinct-class pairs of one tile."""
        la, lb = self.dense[i0:i1], self.dense[j0:j1]
        if self.block is not None:  # the histogram in the kernel, every distinct-class pair
            a, b = self.values[i0:i1], self.values[j0:j1]
            linf_triton.add_tile(
                a, b, la, lb, self.n_classes, self.pair_counts, i0 == j0, self.block
            )
            return
        keep = _distinct(la, lb, diagonal=i0 == j0)
        k = self._bins(i0, i1, j0, j1, keep)
        self.counts += torch.bincount(k, minlength=len(self.counts))
        coarse = k * PAIR_BINS // len(self.counts)
        self.pair_counts += _by_class_pair(coarse, la, lb, keep, self.n_classes)

    def _bins(self, i0: int, i1: int, j0: int, j1: int, keep: torch.Tensor) -> torch.Tensor:
        """The histogram bin of each kept pair of one tile."""
        if self.exact:  # integer grey levels
            assert self.kernel is not None and self.buffers is not None
            a, b = self.buffers
            a[: i1 - i0], b[: j1 - j0] = self.values[i0:i1], self.values[j0:j1]
            return self.kernel(a, b)[: i1 - i0, : j1 - j0][keep].long()
        bins = len(self.counts)
        d = torch.cdist(self.values[i0:i1], self.values[j0:j1], p=self.p)[keep] / 255.0
        return torch.clamp((d / self.upper * bins).long(), max=bins - 1)  # d in [0, 1] units

    def totals(self, shard: Shard) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole histogram and the per-class-pair one, summed over the shard's group."""
        counts = self.counts
        if self.block is not None:  # the exact histogram: the class pairs' summed
            counts = self.pair_counts.view(-1, PAIR_BINS).sum(0)
        shard.sum(counts)
        shard.sum(self.pair_counts)
        return counts, self.pair_counts.view(self.n_classes, self.n_classes, PAIR_BINS)


def separation(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    norm: str | float = "inf",
    *,
    tile: int = 512,
    device: str | torch.device | None = None,
    shard: Shard = SINGLE,
) -> Separation:
    """The distribution of distances between every unordered pair of images of distinct classes.

    ``x``: NCHW images, uint8 or float in [0, 1]; ``y``: integer labels. Distances are in
    [0, 1] image units (uint8 levels / 255). Exact for uint8 under L-inf. With a ``shard`` of
    a process group, this rank measures every ``world_size``-th tile and the histograms are
    summed over the group (integers: the same at any world size).
    """
    images, labels, classes = _checked(x, y)
    p = parse_norm(norm)
    tally = _Tally.start(images, labels, classes, p, tile, resolve_device(device), shard)
    # strided, so that each rank gets tiles from the whole triangle (the first rows' are longest)
    mine = list(tiles(len(images), tally.tile))[shard.rank :: shard.world_size]
    for i0, i1, j0, j1 in progress(mine, desc="separation", unit="tile"):
        tally.add(i0, i1, j0, j1)
    counts, pair_counts = tally.totals(shard)
    return Separation(
        norm="inf" if p == float("inf") else "l2",
        exact=tally.exact,
        upper=tally.upper,
        counts=counts.cpu(),
        pair_counts=pair_counts.cpu(),
        classes=[str(c) for c in classes],
        n_images=len(images),
    )
