"""``clean``: top-1 accuracy on unperturbed images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from locrob.data.images import ImageData
from locrob.evaluation import EvaluationContext
from locrob.hookspecs import Register, hookimpl
from locrob.metrics.base import Metric, MetricResult


@torch.no_grad()
def predict(model: nn.Module, context: EvaluationContext, data: ImageData) -> torch.Tensor:
    """Predicted classes for the context's examples, batched on its device."""
    preds = [model(x).argmax(1).cpu() for x, _ in context.batches(data, desc="clean")]
    return torch.cat(preds)


@dataclass
class CleanAccuracy(Metric):
    """Fraction of examples classified correctly."""

    name = "clean"

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        _, y = context.examples(data)
        correct = predict(model, context, data).eq(y)
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
def register_metrics(register: Register) -> None:
    register("clean", CleanAccuracy)
