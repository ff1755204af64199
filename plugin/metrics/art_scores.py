"""``clever`` and ``loss-sensitivity``: ART's robustness scores, for comparison with α_lim.

``clever`` is ART's ``clever_u`` (Weng et al. 2018): per example, an extreme-value estimate of
the local Lipschitz constant of the class margins turned into a minimum-distortion score,
**capped at** ``radius``; it is slow (``nb_batches`` x ``batch_size`` gradients per example),
so it runs on the first ``n_points`` examples. ``loss-sensitivity`` is ART's
``loss_sensitivity``: the mean L2 norm of each example's input gradient of its cross-entropy
loss. Both go through the ART adapter (``pip install 'locrob[art]'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from locrob.configurable import check
from locrob.data.images import ImageData, to_float
from locrob.evaluation import EvaluationContext
from locrob.hookspecs import Register, hookimpl
from locrob.metrics.base import Metric, MetricResult


def art_classifier(model: nn.Module, data: ImageData, context: EvaluationContext) -> object:
    from locrob.adapters.art import to_art

    return to_art(model, data.image_shape, data.num_classes, context.device)


@dataclass
class Clever(Metric):
    """ART's untargeted CLEVER score on the first ``n_points`` examples (capped at ``radius``)."""

    name = "clever"
    n_points: int = 10
    nb_batches: int = 10
    batch_size: int = 20
    radius: float = 2.0
    norm: float = 2  # 1, 2 or inf (JSON: Infinity)

    def __post_init__(self) -> None:
        for key in ("n_points", "nb_batches", "batch_size"):
            check(getattr(self, key) >= 1, self.name, f"{key} must be >= 1")
        check(self.radius > 0, self.name, f"radius must be positive, got {self.radius}")
        check(self.norm in (1, 2, np.inf), self.name, f"norm must be 1, 2 or inf, not {self.norm}")

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        from art.metrics import clever_u

        x, _ = context.examples(data)
        points = to_float(x[: self.n_points]).numpy()
        classifier = art_classifier(model, data, context)
        state = np.random.get_state()  # clever_u samples with numpy's global generator
        np.random.seed(context.seed)
        try:
            scores = [
                float(
                    clever_u(
                        classifier,
                        point,
                        self.nb_batches,
                        self.batch_size,
                        self.radius,
                        self.norm,
                        verbose=False,
                    )
                )
                for point in points
            ]
        finally:
            np.random.set_state(state)
        return self.result(
            {"mean_score": float(np.mean(scores)), "min_score": float(np.min(scores))},
            scores=scores,
            capped_at=self.radius,
            n=len(scores),
        )


@dataclass
class LossSensitivity(Metric):
    """ART's loss sensitivity: the mean L2 norm of the input gradient of each example's loss."""

    name = "loss-sensitivity"

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        from art.metrics import loss_sensitivity

        classifier = art_classifier(model, data, context)
        values, n = [], 0
        for x, y in context.batches(data, desc=self.name):
            one_hot = torch.nn.functional.one_hot(y, data.num_classes).cpu().numpy()
            values.append(loss_sensitivity(classifier, x.cpu().numpy(), one_hot) * len(y))
            n += len(y)
        return self.result({"loss_sensitivity": float(sum(values) / n)}, n=n)


@hookimpl
def register_metrics(register: Register) -> None:
    register("clever", Clever)
    register("loss-sensitivity", LossSensitivity)
