"""``clever`` and ``loss-sensitivity``: ART's robustness scores, for comparison with α_lim.

``clever`` is ART's ``clever_u`` (Weng et al. 2018): per example, an extreme-value estimate of
the local Lipschitz constant of the class margins turned into a minimum-distortion score,
**capped at** ``radius``; it is slow (``nb_batches`` x ``batch_size`` gradients per example),
so it runs on the first ``max_examples`` examples. ``loss-sensitivity`` is ART's
``loss_sensitivity``: the mean L2 norm of each example's input gradient of its cross-entropy
loss. Both go through the ART adapter (``pip install 'locrob[art]'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from locrob.contract import EvaluationContext
from locrob.data.images import ImageData, to_float
from locrob.errors import check
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric, MetricResult


def art_classifier(model: nn.Module, data: ImageData, context: EvaluationContext) -> object:
    from locrob.adapters.art import to_art

    return to_art(model, data.image_shape, data.num_classes, context.device)


@dataclass
class Clever(Metric):
    """ART's untargeted CLEVER score (capped at ``radius``) on the first ``max_examples``."""

    name = "clever"
    shardable = True  # the points split over the ranks, each scored from its own seed
    max_examples: int = 10
    nb_batches: int = 10
    batch_size: int = 20
    radius: float = 2.0
    norm: float = 2  # 1, 2 or inf (JSON: Infinity)

    def __post_init__(self) -> None:
        for key in ("max_examples", "nb_batches", "batch_size"):
            check(getattr(self, key) >= 1, self.name, f"{key} must be >= 1")
        check(self.radius > 0, self.name, f"radius must be positive, got {self.radius}")
        check(self.norm in (1, 2, np.inf), self.name, f"norm must be 1, 2 or inf, not {self.norm}")

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        from locrob.adapters.art import clever_scores

        x, _ = self.examples(data, context)
        n = min(self.max_examples, len(x))
        shard = self.shard(context)
        mine = shard.indices(n)
        scores = clever_scores(
            art_classifier(model, data, context),
            to_float(x[mine.start : mine.stop]).numpy(),
            nb_batches=self.nb_batches,
            batch_size=self.batch_size,
            radius=self.radius,
            norm=self.norm,
            seed=context.seed,
            first=mine.start,
        )
        part = torch.tensor(scores, dtype=torch.float64, device=context.device)
        found = shard.whole(part, n, mine.start).tolist()
        return self.result(
            {"mean_score": float(np.mean(found)), "min_score": float(np.min(found))},
            scores=found,
            capped_at=self.radius,
            n=n,
        )


@dataclass
class LossSensitivity(Metric):
    """ART's loss sensitivity: the mean L2 norm of the input gradient of each example's loss."""

    name = "loss-sensitivity"
    shardable = True  # whole batches to each rank

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        from locrob.adapters.art import loss_sensitivity

        classifier = art_classifier(model, data, context)
        n = len(self.examples(data, context)[1])
        # one sum per batch, put together over the ranks, then added in batch order as one
        # process adds them
        size, first, sums = context.batch_size, 0, []
        for b in self.batches(data, context, desc=self.name, aligned=True):
            one_hot = torch.nn.functional.one_hot(b.y, data.num_classes).cpu().numpy()
            first = first if sums else b.first // size
            sums.append(loss_sensitivity(classifier, b.x.cpu().numpy(), one_hot) * len(b.y))
        part = torch.tensor(sums, dtype=torch.float64, device=context.device)
        total = self.shard(context).whole(part, -(-n // size), first).sum()
        return self.result({"loss_sensitivity": float(total) / n}, n=n)


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("clever", Clever)
    register("loss-sensitivity", LossSensitivity)
