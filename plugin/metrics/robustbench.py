"""``robustbench``: RobustBench's clean and AutoAttack accuracy, as its ``benchmark`` measures
them, on the examples every other metric of the run measures.

The steps run through :mod:`locrob.adapters.benchmark` (RobustBench's ``benchmark`` calls
AutoAttack with arguments the installed ``pyautoattack`` dropped); ``pip install
'locrob[robustbench]'``. AutoAttack is one call over the examples, so the metric runs on rank
0 alone in a split run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from locrob.contract import EvaluationContext, MetricResult
from locrob.data.images import ImageData, to_float
from locrob.errors import check
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric

THREATS = ("Linf", "L2")  # RobustBench attacks these; its corruptions: the corruptions metric


@dataclass
class RobustBenchAccuracy(Metric):
    """Clean and AutoAttack (standard) accuracy at ``eps`` in the ``threat_model``'s norm."""

    name = "robustbench"
    threat_model: str = "Linf"
    eps: float = 8 / 255

    def __post_init__(self) -> None:
        check(
            self.threat_model in THREATS,
            self.name,
            f"threat_model must be Linf or L2, not {self.threat_model!r} (RobustBench's "
            "corruptions: the corruptions metric with source=cifar10-c)",
        )
        check(self.eps > 0, self.name, f"eps must be positive, got {self.eps}")

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        from locrob.adapters.benchmark import autoattack_accuracy

        x, y = self.examples(data, context)
        clean, robust = autoattack_accuracy(
            model,
            to_float(x),
            y,
            self.threat_model,
            self.eps,
            context.batch_size,
            context.device,
            context.seed,
        )
        return self.result(
            {"clean_accuracy": clean, "autoattack_accuracy": robust},
            threat_model=self.threat_model,
            n_examples=len(y),
            eps=self.eps,
            attack="AutoAttack (standard)",
        )


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("robustbench", RobustBenchAccuracy)
