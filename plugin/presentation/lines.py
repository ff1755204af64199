"""Line figures shared by the presentations: one line per model, the legend outside the axes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s

    from locrob.contract import MetricResult


def lines_figure(
    lines: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    **style: Any,
) -> Figure:
    """One line per (label, xs, ys), the legend outside the axes on the right."""
    from matplotlib.figure import Figure

    # outside the axes the legend can hide no line, however many models there are;
    # the constrained layout makes room for it
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for label, xs, ys in lines:
        ax.plot(xs, ys, label=label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig


def line_figure(
    results: list[tuple[str, MetricResult]],
    x: str,
    y: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    **style: Any,
) -> Figure:
    """One line per model (label, result) of ``details[y]`` against ``details[x]``."""
    lines = [(label, result.details[x], result.details[y]) for label, result in results]
    return lines_figure(lines, xlabel=xlabel, ylabel=ylabel, title=title, **style)
