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
    """alpha_lim against r, one line per model, as in the paper's Fig. 5."""
    first = results[0][1].details
    settings = first.get("settings", {})
    points = settings.get("max_examples", settings.get("n_points", ""))  # n_points: old reports
    return line_figure(
        results,
        "radii",
        "curve",
        xlabel="radius r",
        ylabel=r"$\alpha_{lim}(F, r)$ (lower bound)",
        title=f"local robustness: {settings.get('norm', '')} norm, "
        f"{first.get('method', '')}, {points} points x "
        f"{settings.get('n_draws', '')} draws",
        linewidth=1.8,
    )


@hookimpl
def register_presentations(register: RegisterPresentation) -> None:
    register("local-robustness", Presentation(figure=figure))
