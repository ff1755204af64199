"""``local-robustness``'s figure: alpha_lim(F, r) against r, as in the paper's Fig. 5."""

from __future__ import annotations

from typing import TYPE_CHECKING

from locrob.contract import Presentation
from locrob.hookspecs import RegisterPresentation, hookimpl
from locrob.presentation.lines import line_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s

    from locrob.contract import Labelled


def figure(results: Labelled) -> Figure:
    """alpha_lim against r, one line per model, as in the paper's Fig. 5; where a result
    holds the certified upper bound too (``bound=True``), the band up to it, on a log scale
    (the two sides can lie orders of magnitude apart)."""
    first = results[0][1].details
    settings = first.get("settings", {})
    points = settings.get("max_examples", settings.get("n_points", ""))  # n_points: old reports
    banded = [(label, r.details) for label, r in results if "upper" in r.details]
    fig = line_figure(
        results,
        "radii",
        "curve",
        xlabel="radius r",
        ylabel=r"$\alpha_{lim}(F, r)$"
        + ("\nlower (line), certified upper (dashed)" if banded else ": lower bound"),
        title=f"local robustness: {settings.get('norm', '')} norm, "
        f"{first.get('method', '')}, {points} points x "
        f"{settings.get('n_draws', '')} draws",
        linewidth=1.8,
    )
    if banded:
        ax = fig.axes[0]
        colors = {line.get_label(): line.get_color() for line in ax.get_lines()}
        for label, details in banded:
            upper = details["upper"]
            ax.fill_between(
                upper["radii"], details["curve"], upper["curve"], color=colors[label], alpha=0.1
            )
            # the band's top edge, dashed: overlapping bands still show whose bound is whose
            ax.plot(upper["radii"], upper["curve"], color=colors[label], linestyle="--", lw=1.2)
        ax.set_yscale("log")
    return fig


@hookimpl
def register_presentations(register: RegisterPresentation) -> None:
    register("local-robustness", Presentation(figure=figure))
