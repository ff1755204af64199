"""``locrob bench separation``: pairs per second of the tiled distance histogram against a full
``torch.cdist`` matrix and plain broadcasting, on the same images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import torch

from locrob import markdown
from locrob.errors import LocrobError
from locrob.runtime import resolve_device, synchronize

T = TypeVar("T")


@dataclass
class SeparationBench:
    """Unordered image pairs per second of one method, and its largest buffer."""

    method: str
    images: int
    pairs_per_s: float
    largest_buffer_mb: float
    ours: bool = False  # locrob's rows; the others are the baselines
    # locrob's rows: each candidate kernel's pairs/s on the tile that chose the one timed
    # (the probe tile of the torch kernels, or a tile of the run's shape for Triton's)
    probe: dict[str, float] = field(default_factory=dict)


def _distinct_histogram(d: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.bincount(torch.round(d[keep]).long(), minlength=256)


def _timed(dev: torch.device, fn: Callable[[], T]) -> tuple[T, float]:
    """``fn``'s result and its seconds, the device's queued work included."""
    synchronize(dev)
    start = time.perf_counter()
    out = fn()
    synchronize(dev)
    return out, time.perf_counter() - start


def _pairs(m: int) -> int:
    """Unordered pairs of ``m`` images."""
    return m * (m - 1) // 2


def bench_separation(
    n: int = 10_000, baseline_n: int = 1500, device: str | None = None, tile: int = 512
) -> list[SeparationBench]:
    """The L-inf analysis of ``n`` random 3x32x32 uint8 images, and two baselines on the
    first ``baseline_n``: one full ``torch.cdist`` matrix, and plain broadcasting in row tiles.
    All three produce the same exact histogram (checked)."""
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    reference, rows = _locrob_rows(x, y, baseline_n, dev, tile)
    xs = x[:baseline_n].flatten(1).to(dev, torch.float32)
    ys = y[:baseline_n].to(dev)
    upper = torch.ones(baseline_n, baseline_n, dtype=torch.bool, device=dev).triu(1)
    keep = upper & (ys[:, None] != ys[None])
    full, cdist_row = _cdist_row(xs, keep, dev)
    brute, broadcast_row = _broadcast_row(xs, keep, dev)
    if not (torch.equal(full.cpu(), reference.cpu()) and torch.equal(brute.cpu(), reference.cpu())):
        raise LocrobError("the baselines disagree with the tiled histogram")
    return [*rows, cdist_row, broadcast_row]


def _locrob_rows(
    x: torch.Tensor, y: torch.Tensor, baseline_n: int, dev: torch.device, tile: int
) -> tuple[torch.Tensor, list[SeparationBench]]:
    """locrob's rows, on all the images and on the first ``baseline_n``, and the latter's
    histogram, the baselines' reference."""
    from locrob.pair_distances import linf_plan, separation

    n = len(x)
    # each size's kernel probed (and built) outside the timing
    plans = {m: linf_plan(dev, m, tile, x[0].numel()) for m in (n, baseline_n)}
    rows, histograms = [], []
    for m in (n, baseline_n):
        found, seconds = _timed(
            dev, partial(separation, x[:m], y[:m], "inf", tile=tile, device=dev)
        )
        histograms.append(found.counts)
        plan = plans[m]
        # the Triton kernel writes no distances: its largest buffer is the (class-sorted) images
        buffer = m * x[0].numel() if plan.triton is not None else plan.tile**2 * 8
        method = f"locrob tiles, {plan.name}"
        rows.append(
            SeparationBench(method, m, _pairs(m) / seconds, buffer / 2**20, True, plan.rates)
        )
    return histograms[-1], rows


def _cdist_row(
    xs: torch.Tensor, keep: torch.Tensor, dev: torch.device
) -> tuple[torch.Tensor, SeparationBench]:
    """The histogram from one full ``torch.cdist`` matrix, and its row."""
    m = len(xs)
    full, seconds = _timed(
        dev, lambda: _distinct_histogram(torch.cdist(xs, xs, p=float("inf")), keep)
    )
    row = SeparationBench("torch.cdist, full matrix", m, _pairs(m) / seconds, m**2 * 4 / 2**20)
    return full, row


def _broadcast_row(
    xs: torch.Tensor, keep: torch.Tensor, dev: torch.device
) -> tuple[torch.Tensor, SeparationBench]:
    """The histogram from plain broadcasting in 16-row tiles, and its row."""
    m, step = len(xs), 16

    def broadcast() -> torch.Tensor:
        out = torch.empty(m, m, device=dev)
        for i in range(0, m, step):
            out[i : i + step] = (xs[i : i + step, None] - xs[None]).abs().amax(-1)
        return _distinct_histogram(out, keep)

    brute, seconds = _timed(dev, broadcast)
    buffer = step * m * xs.shape[1] * 4 + m**2 * 4
    row = SeparationBench("broadcasting, 16-row tiles", m, _pairs(m) / seconds, buffer / 2**20)
    return brute, row


def separation_table(rows: Sequence[SeparationBench]) -> str:
    """A Markdown table, with each rate as a multiple of the best baseline's, after a line
    naming the torch version and, for each of locrob's rows, every candidate kernel's rate on
    the tile that chose it."""
    best = max(r.pairs_per_s for r in rows if not r.ours)
    lines = [f"torch {torch.__version__}; candidates timed on the tile that chose the kernel:"]
    for r in rows:
        if r.ours:
            rates = "; ".join(
                f"{name}: {rate / 1e6:.2f} M pairs/s" for name, rate in r.probe.items()
            )
            lines.append(f"- {r.images:,} images: {rates or 'one candidate, not timed'}")
    header = ["method", "images", "pairs/s", "vs best baseline", "largest buffer (MiB)"]
    cells = (
        [
            r.method,
            f"{r.images:,}",
            f"{r.pairs_per_s:,.0f}",
            f"{r.pairs_per_s / best:.2f}x",
            f"{r.largest_buffer_mb:,.1f}",
        ]
        for r in rows
    )
    return "\n".join(lines) + "\n\n" + markdown.table(header, cells)
