"""``clean``: top-1 accuracy on unperturbed images."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from locrob.contract import EvaluationContext, MetricResult
from locrob.data.images import ImageData
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric


@dataclass
class CleanAccuracy(Metric):
    """Fraction of examples classified correctly."""

    name = "clean"

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        _, y = self.examples(data, context)
        correct = self.correct(model, data, context).cpu()
        per_class = {
            data.classes[c]: float(correct[y == c].float().mean())
            for c in range(data.num_classes)
            if bool((y == c).any())
        }
        return self.result(
            {"accuracy": float(correct.float().mean())},
            n_correct=int(correct.sum()),
            n=len(y),
            per_class_accuracy=per_class,
        )


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("clean", CleanAccuracy)
