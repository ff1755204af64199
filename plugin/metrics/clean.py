"""``clean``: top-1 accuracy on unperturbed images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from locrob.contract import EvaluationContext, MetricResult
from locrob.data.images import ImageData
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric


@dataclass
class CleanAccuracy(Metric):
    """Fraction of examples classified correctly."""

    name = "clean"
    shardable = True

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        _, y = self.examples(data, context)
        mine = self.shard(context).indices(len(y))
        y = y[mine.start : mine.stop].to(context.device)
        right = self.correct(model, data, context)
        # per class: images and right answers, summed over the processes of a split run
        tally = torch.stack(
            [y.bincount(minlength=data.num_classes), y[right].bincount(minlength=data.num_classes)]
        )
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
