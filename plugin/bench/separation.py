"""``locrob bench separation``: pairs per second of the tiled distance histogram against a full
``torch.cdist`` matrix and plain broadcasting, on the same images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from locrob import markdown
from locrob.errors import LocrobError
from locrob.runtime import resolve_device, synchronize


@dataclass
class SeparationBench:
    """Unordered image pairs per second of one method, and its largest buffer."""

    method: str
    images: int
    pairs_per_s: float
    largest_buffer_mb: float
    # locrob's rows: each kernel's pairs/s on the probe tile that chose the one timed
    probe: dict[str, float] = field(default_factory=dict)


def _distinct_histogram(d: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.bincount(torch.round(d[keep]).long(), minlength=256)


def bench_separation(
    n: int = 10_000, baseline_n: int = 1500, device: str | None = None, tile: int = 512
) -> list[SeparationBench]:
    """The L-inf analysis of ``n`` random 3x32x32 uint8 images, and two baselines on the
    first ``baseline_n``: one full ``torch.cdist`` matrix, and plain broadcasting in row tiles.
    All three produce the same exact histogram (checked)."""
    from locrob.pair_distances import linf_kernel, separation, tile_rows

    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    features = 3 * 32 * 32
    rows = []

    def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
        synchronize(dev)
        start = time.perf_counter()
        out = fn()
        synchronize(dev)
        return out, time.perf_counter() - start

    def pairs(m: int) -> int:
        return m * (m - 1) // 2

    # each size's kernel probed (and built) outside the timing
    choices = {m: linf_kernel(dev, tile_rows(m, tile), features) for m in (n, baseline_n)}
    buffer = tile**2 * 8 / 2**20

    def locrob_row(m: int, seconds: float) -> SeparationBench:
        method = f"locrob tiles, {choices[m].name} kernel"
        return SeparationBench(method, m, pairs(m) / seconds, buffer, choices[m].rates)

    _, seconds = timed(lambda: separation(x, y, "inf", tile=tile, device=dev).counts)
    rows.append(locrob_row(n, seconds))
    xs = x[:baseline_n].flatten(1).to(dev, torch.float32)
    ys = y[:baseline_n].to(dev)
    upper = torch.ones(baseline_n, baseline_n, dtype=torch.bool, device=dev).triu(1)
    keep = upper & (ys[:, None] != ys[None])
    subset = (x[:baseline_n], y[:baseline_n])
    reference, seconds = timed(lambda: separation(*subset, "inf", tile=tile, device=dev).counts)
    rows.append(locrob_row(baseline_n, seconds))

    full, seconds = timed(lambda: _distinct_histogram(torch.cdist(xs, xs, p=float("inf")), keep))
    rows.append(
        SeparationBench(
            "torch.cdist, full matrix",
            baseline_n,
            pairs(baseline_n) / seconds,
            baseline_n**2 * 4 / 2**20,
        )
    )

    def broadcast() -> torch.Tensor:
        out = torch.empty(baseline_n, baseline_n, device=dev)
        step = 16
        for i in range(0, baseline_n, step):
            out[i : i + step] = (xs[i : i + step, None] - xs[None]).abs().amax(-1)
        return _distinct_histogram(out, keep)

    brute, seconds = timed(broadcast)
    buffer = 16 * baseline_n * features * 4 + baseline_n**2 * 4
    rows.append(
        SeparationBench(
            "broadcasting, 16-row tiles", baseline_n, pairs(baseline_n) / seconds, buffer / 2**20
        )
    )
    if not (torch.equal(full.cpu(), reference.cpu()) and torch.equal(brute.cpu(), reference.cpu())):
        raise LocrobError("the baselines disagree with the tiled histogram")
    return rows


def separation_table(rows: Sequence[SeparationBench]) -> str:
    """A Markdown table, with each rate as a multiple of the best baseline's, after a line
    naming the torch version and the kernel the probe chose (with both kernels' probe rates)."""
    best = max(r.pairs_per_s for r in rows if not r.probe)
    probe = next(r.probe for r in rows if r.probe)
    rates = ", ".join(f"{name} {rate / 1e6:.2f} M" for name, rate in probe.items())
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
    version = f"torch {torch.__version__}; kernel chosen on the probe tile (pairs/s): {rates}"
    return version + "\n\n" + markdown.table(header, cells)
