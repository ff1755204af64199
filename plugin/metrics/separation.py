"""``separation``: the data set's distinct-class distance distribution (paper, Figs. 1 and 3).

It measures the data, not the model, so that the data's own limits sit beside the model's
numbers in one report: how many distinct-class pairs no alpha-Lipschitz (or alpha-robust)
function could separate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from locrob.configurable import check
from locrob.data.images import SPLITS, ImageData
from locrob.evaluation import EvaluationContext
from locrob.hookspecs import Register, hookimpl
from locrob.metrics.base import Metric, MetricResult
from locrob.pair_distances import Separation, lipschitz_figure, separation

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s


@dataclass
class DatasetSeparation(Metric):
    """Distinct-class pair distances of ``split`` (the training set by default)."""

    name = "separation"
    norm: str | float = "inf"  # "l2", "inf", or 2
    split: str = "train"
    n_images: int | None = None
    alphas: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 10.0])

    def __post_init__(self) -> None:
        check(self.split in SPLITS, self.name, f"split must be one of {', '.join(SPLITS)}")

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        x, y = data.split(self.split)
        if self.n_images is not None:
            x, y = x[: self.n_images], y[: self.n_images]
        result = separation(x, y, self.norm, device=context.device)
        curve = result.lipschitz_curve(self.alphas)
        summary = {"min_distance": result.min_distance()}
        summary.update({f"incompatible@{a:g}": v for a, v in zip(self.alphas, curve, strict=True)})
        return self.result(summary, **result.to_dict())

    @classmethod
    def plot(cls, results: list[tuple[str, MetricResult]]) -> Figure:
        """Fig. 1 with one line per report's data set."""
        return lipschitz_figure([(label, _from_details(r.details)) for label, r in results])


def _from_details(details: dict) -> Separation:
    """A light Separation from a report, enough to redraw its curves."""
    counts = details["histogram"]
    if isinstance(counts, dict):  # sparse form of a fine histogram
        dense = torch.zeros(round(details["upper"] / details["bin_width"]), dtype=torch.long)
        dense[counts["bins"]] = torch.tensor(counts["counts"])
        counts = dense
    else:
        counts = torch.tensor(counts)
    return Separation(
        details["norm"],
        details["exact"],
        details["upper"],
        counts,
        torch.zeros(0),
        [],
        details["n_images"],
    )


@hookimpl
def register_metrics(register: Register) -> None:
    register("separation", DatasetSeparation)
