"""``corruptions``'s figure (a heat map of the errors) and table (the paper's Table 2)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from locrob import markdown
from locrob.contract import Presentation
from locrob.hookspecs import RegisterPresentation, hookimpl
from locrob.metrics.corruptions import errors, mce, relative_mce

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s

    from locrob.contract import Labelled


def figure(results: Labelled) -> Figure:
    """A heat map of the error in percent per corruption and severity, one panel per model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.6 + 1.9 * len(results), 5.4), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False, sharey=True)[0]
    image = None
    for ax, (label, result) in zip(axes, results, strict=True):
        table = errors(result)
        # percent, like the numbers in the cells and the colour bar
        grid = [[100 * e for e in table[name]] for name in result.details["corruptions"]]
        image = ax.imshow(grid, cmap="magma_r", vmin=0, vmax=100, aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                color = "white" if value > 50 else "black"
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color=color)
        ax.set_xticks(range(len(result.details["severities"])))
        ax.set_xticklabels(result.details["severities"])
        ax.set_xlabel("severity")
        # one short line each, so that neighbouring titles never run into each other
        ax.set_title(
            f"{textwrap.fill(label, 18)}\nclean {100 * result.summary['clean_error']:.1f} %"
            f"\ncorrupted {100 * result.summary['corruption_error']:.1f} %",
            fontsize=8,
        )
    names = results[0][1].details["corruptions"]
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=7)
    fig.colorbar(image, ax=list(axes), label="error (%)", shrink=0.8)
    return fig


def table(results: Labelled) -> str:
    """Table 2 in Markdown: errors in percent, mCE and relative mCE against the first model."""
    vanilla = results[0][1]
    header = [
        "model",
        "clean error",
        "corrupted error",
        f"mCE vs {results[0][0]}",
        f"relative mCE vs {results[0][0]}",
    ]
    rows = [
        [
            label,
            f"{100 * result.summary['clean_error']:.1f}",
            f"{100 * result.summary['corruption_error']:.1f}",
            f"{mce(result, vanilla):.1f}",
            f"{relative_mce(result, vanilla):.1f}",
        ]
        for label, result in results
    ]
    return markdown.table(header, rows)


@hookimpl
def register_presentations(register: RegisterPresentation) -> None:
    register("corruptions", Presentation(figure=figure, table=table))
