"""What the benchmarks share: timing and the Markdown table writer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import torch

from locrob.runtime import synchronize


def best_rate(run: Callable[[], int], device: torch.device, repeats: int = 2) -> float:
    """Images per second of ``run`` (which returns its image count), best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        images = run()
        synchronize(device)
        best = max(best, images / (time.perf_counter() - start))
    return best


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the header, its rule, one line per row of cells (already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
