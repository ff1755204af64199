"""A minimal third-party locrob plugin: one metric and one defense, found by entry point alone.

It imports the hook contract and the base classes only, never the runners that call it.
"""

from dataclasses import dataclass

import torch

from locrob.defenses.base import Defense
from locrob.errors import check
from locrob.hookspecs import hookimpl
from locrob.metrics.base import Metric


@dataclass
class MeanConfidence(Metric):
    """Mean of the top softmax probability over the examples."""

    name = "mean-confidence"

    @hookimpl
    def measure(self, model, data, context):
        with torch.no_grad():
            batches = self.batches(data, context)
            top = torch.cat([model(b.x).softmax(1).amax(1).cpu() for b in batches])
        return self.result({"mean": float(top.mean())})


@dataclass
class InputNoise(Defense):
    """Train on images with added Gaussian noise, clamped to [0, 1]."""

    name = "input-noise"
    sigma: float = 0.1

    def __post_init__(self):
        check(self.sigma >= 0, self.name, f"sigma must be >= 0, got {self.sigma}")

    @hookimpl
    def transform_batch(self, model, x, y, context):
        return (x + self.sigma * torch.randn_like(x)).clamp(0, 1), y


@hookimpl
def register_metrics(register):
    register("mean-confidence", MeanConfidence)


@hookimpl
def register_defenses(register):
    register("input-noise", InputNoise)
