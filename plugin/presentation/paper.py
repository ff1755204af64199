"""Figures of the paper that show no metric's results: Fig. 2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def sigmoid_figure(radii: Sequence[float], curve: Sequence[float]) -> Figure:
    """Fig. 2: α_lim(σ, r) of the sigmoid against r (left), and a mediator-hyperplane
    classifier that is 0-robust up to half the distance between its two points (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(radii, curve)
    left.set_xlabel("r")
    left.set_ylabel("α_lim(σ, r)")
    left.set_title("sigmoid, R = {-10, 10} (paper, Fig. 2 left)", fontsize=9)
    left.grid(alpha=0.3)
    grid = torch.linspace(-0.5, 1.5, 801)
    right.plot(grid, (grid > 0.5).float(), label="F: mediator hyperplane at 1/2")
    right.plot([0, 1], [0, 1], "o", color="black", label="training points 0 and 1")
    # F is constant on the ball of radius 1/2 around each training point: α_lim(F, 1/2) = 0
    for point, label in ((0.0, "balls of radius r = 1/2 around them"), (1.0, None)):
        right.axvspan(point - 0.5, point + 0.5, alpha=0.1, color="tab:green", label=label)
    right.set_title("α_lim(F, 1/2) = 0, yet F is not Lipschitz (Fig. 2 right)", fontsize=9)
    right.set_xlabel("x")
    right.set_ylabel("F(x)")
    right.legend(fontsize=7, loc="center right")
    return fig
