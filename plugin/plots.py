"""Figures from reports: each metric class may draw its results (one line per model)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from locrob import plugins
from locrob.atomic import atomic_path
from locrob.metrics.base import MetricResult
from locrob.report import Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    return Path(path)


def save_plots(reports: Sequence[Report], out_dir: str | Path) -> list[Path]:
    """One PNG per metric that can plot, with every report that has it on the same figure."""
    registry = plugins.registries().metrics
    written = []
    names = dict.fromkeys(name for report in reports for name in report.metrics)
    for name in names:
        if name not in registry:
            continue
        labelled: list[tuple[str, MetricResult]] = [
            (report.label, report.metrics[name]) for report in reports if name in report.metrics
        ]
        fig = registry.get(name).plot(labelled)
        if fig is not None:
            written.append(save_figure(fig, Path(out_dir) / f"{name}.png"))
    return written
