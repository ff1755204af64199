"""``separation``: the data set's distinct-class distance distribution (paper, Figs. 1 and 3).

It measures the data, not the model, so that the data's own limits sit beside the model's
numbers in one report: how many distinct-class pairs no alpha-Lipschitz (or alpha-robust)
function could separate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from locrob.contract import EvaluationContext
from locrob.data.images import SPLITS, ImageData
from locrob.errors import check
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric, MetricResult
from locrob.pair_distances import separation


@dataclass
class DatasetSeparation(Metric):
    """Distinct-class pair distances of ``split`` (the training set by default)."""

    name = "separation"
    shardable = True  # the pair tiles split over the ranks, the histograms summed
    norm: str | float = "inf"  # "l2", "inf", or 2
    split: str = "train"
    max_examples: int | None = None
    alphas: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 10.0])

    def __post_init__(self) -> None:
        check(self.split in SPLITS, self.name, f"split must be one of {', '.join(SPLITS)}")

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        x, y = data.split(self.split)
        if self.max_examples is not None:
            x, y = x[: self.max_examples], y[: self.max_examples]
        result = separation(x, y, self.norm, device=context.device, shard=self.shard(context))
        curve = result.lipschitz_curve(self.alphas)
        summary = {"min_distance": result.min_distance()}
        summary.update({f"incompatible@{a:g}": v for a, v in zip(self.alphas, curve, strict=True)})
        return self.result(summary, **result.to_dict())


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("separation", DatasetSeparation)
