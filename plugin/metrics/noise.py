"""``noise``: accuracy under additive Gaussian noise over a grid of signal-to-noise ratios
(the paper's Fig. 4).

Each image x gets Gaussian noise n scaled so that SNR(dB) = 20 log10(||x|| / ||n||) is exactly
the grid value for that image, then x + n is clamped to [0, 1]. Clamping removes part of the
noise, so the SNR actually seen is higher; it is reported beside the nominal one. (The
Laplacian authors drew one noise image for the whole test set and reported the mean SNR it
gave; fixing the SNR per image makes the grid the same for every data set.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from locrob.contract import EvaluationContext, MetricResult
from locrob.data.images import ImageData
from locrob.errors import check
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import PerturbationMetric
from locrob.streams import Streams


def accuracy_key(snr_db: float) -> str:
    """The summary key of the accuracy at a signal-to-noise ratio: ``accuracy@0dB``."""
    return f"accuracy@{snr_db:g}dB"


def image_norms(x: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each image of a batch."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def add_noise_at_snr(x: torch.Tensor, snr_db: float, streams: Streams) -> torch.Tensor:
    """x + n clamped to [0, 1], n Gaussian with ||x|| / ||n|| = 10^(snr_db / 20) per image,
    image ``i``'s noise drawn from ``streams``' row ``i``.

    An all-zero image has no defined SNR and gets no noise.
    """
    noise = streams.randn(x.shape[1:], x.dtype)
    scale = image_norms(x) / (image_norms(noise) * 10 ** (snr_db / 20))
    return (x + noise * scale.view(-1, *[1] * (x.dim() - 1))).clamp(0, 1)


@dataclass
class GaussianNoise(PerturbationMetric):
    """Top-1 accuracy on noisy copies of the examples, for each SNR of the grid."""

    name = "noise"
    # CIFAR-10 models fall between 30 and 15 dB (Fig. 4); digits (dark, clamped) hold out to 0 dB
    snr_db: list[float] = field(default_factory=lambda: [40, 30, 20, 15, 10, 5, 0, -5, -10])
    repeats: int = 1
    observed = 2  # the SNR after clamping (micro-dB, summed) and the images that have one

    def __post_init__(self) -> None:
        check(len(self.snr_db) > 0, self.name, "snr_db needs at least one value")
        check(
            all(math.isfinite(s) for s in self.snr_db),
            self.name,
            f"snr_db values must be finite numbers (dB), got {self.snr_db}",
        )
        check(
            self.repeats >= 1,
            self.name,
            f"repeats must be an integer >= 1, got {self.repeats}",
        )

    def cells(self) -> list[tuple[float, int]]:
        return [(float(snr), r) for snr in self.snr_db for r in range(self.repeats)]

    def perturb(self, x: torch.Tensor, cell: tuple[float, int], streams: Streams) -> torch.Tensor:
        return add_noise_at_snr(x, cell[0], streams)

    def observe(self, x: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
        """The SNR left after clamping in micro-dB, summed over the images that have one, and
        their count."""
        db = 20 * torch.log10(image_norms(x.double()) / image_norms((perturbed - x).double()))
        finite = db.isfinite()  # all-zero images have no SNR
        return torch.stack([(db.where(finite, 0) * 1e6).round().long().sum(), finite.sum()])

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        counts = self.count(model, data, context)
        grid = [float(s) for s in self.snr_db]
        # the cells run over the repeats inside each SNR: sum each SNR's repeats
        correct = torch.tensor(counts.correct, dtype=torch.float64).view(len(grid), -1).sum(1)
        seen_snr, measured = torch.tensor(counts.observed).view(len(grid), -1, 2).sum(1).T
        seen_snr = seen_snr.double() / 1e6
        accuracy = (correct / (counts.n * self.repeats)).tolist()
        summary = {accuracy_key(snr): a for snr, a in zip(grid, accuracy, strict=True)}
        return self.result(
            {**summary, "mean_accuracy": sum(accuracy) / len(accuracy)},
            snr_db=grid,
            accuracy=accuracy,
            clean_accuracy=counts.clean / counts.n,
            mean_snr_after_clamp=(seen_snr / measured.clamp(min=1)).tolist(),
            n=counts.n,
        )


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("noise", GaussianNoise)
