"""``noise``'s figure: accuracy against SNR, as in the paper's Fig. 4."""

from __future__ import annotations

from typing import TYPE_CHECKING

from locrob.contract import Presentation
from locrob.hookspecs import RegisterPresentation, hookimpl
from locrob.presentation.lines import line_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s

    from locrob.contract import Labelled


def figure(results: Labelled) -> Figure:
    """Accuracy against SNR, one line per model, as in the paper's Fig. 4."""
    fig = line_figure(
        results,
        "snr_db",
        "accuracy",
        xlabel="SNR (dB), before clamping to [0, 1]",
        ylabel="accuracy under Gaussian noise",
        title="Gaussian noise",
        marker="o",
    )
    fig.axes[0].set_ylim(0, 1.02)
    return fig


@hookimpl
def register_presentations(register: RegisterPresentation) -> None:
    register("noise", Presentation(figure=figure))
