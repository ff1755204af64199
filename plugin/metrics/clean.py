"""``clean``: top-1 accuracy on unperturbed images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from locrob.contract import EvaluationContext, MetricResult
from locrob.data.images import ImageData
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric, correct_predictions


@dataclass
class CleanAccuracy(Metric):
    """Fraction of examples classified correctly."""

    name = "clean"
    shardable = True

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        # per class: images and right answers, summed over the processes of a split run
        tally = torch.zeros(2, data.num_classes, dtype=torch.int64, device=context.device)
        for b in self.batches(data, context, desc=self.name):
            right = correct_predictions(model, [(b.x, b.y)])
            tally[0] += b.y.bincount(minlength=data.num_classes)
            tally[1] += b.y[right].bincount(minlength=data.num_classes)
        seen, hits = self.shard(context).sum(tally).cpu()
        per_class = {
            data.classes[c]: float(hits[c] / seen[c]) for c in range(data.num_classes) if seen[c]
        }
        n, n_correct = int(seen.sum()), int(hits.sum())
        return self.result(
            {"accuracy": n_correct / n},
            n_correct=n_correct,
            n=n,
            per_class_accuracy=per_class,
        )


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("clean", CleanAccuracy)
