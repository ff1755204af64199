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
from typing import TYPE_CHECKING

import torch
from torch import nn

from locrob.configurable import check
from locrob.data.images import ImageData
from locrob.evaluation import EvaluationContext
from locrob.hookspecs import Register, hookimpl
from locrob.metrics.base import Metric, MetricResult, line_figure
from locrob.runtime import mix_seed

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def image_norms(x: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each image of a batch."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def add_noise_at_snr(x: torch.Tensor, snr_db: float, generator: torch.Generator) -> torch.Tensor:
    """x + n clamped to [0, 1], n Gaussian with ||x|| / ||n|| = 10^(snr_db / 20) per image.

    An all-zero image has no defined SNR and gets no noise.
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    scale = image_norms(x) / (image_norms(noise) * 10 ** (snr_db / 20))
    return (x + noise * scale.view(-1, *[1] * (x.dim() - 1))).clamp(0, 1)


@dataclass
class GaussianNoise(Metric):
    """Top-1 accuracy on noisy copies of the examples, for each SNR of the grid."""

    name = "noise"
    # CIFAR-10 models fall between 30 and 15 dB (Fig. 4); digits (dark, clamped) hold out to 0 dB
    snr_db: list[float] = field(default_factory=lambda: [40, 30, 20, 15, 10, 5, 0, -5, -10])
    repeats: int = 1

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

    @hookimpl
    @torch.no_grad()
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        grid = [float(s) for s in self.snr_db]
        # tallies stay on the device: no host synchronization inside the loops
        tally = torch.zeros(3, len(grid), dtype=torch.float64, device=context.device)
        correct, seen_snr, measured = tally  # views: += writes into tally
        clean = torch.zeros((), dtype=torch.float64, device=context.device)
        n = 0
        for b, (x, y) in enumerate(context.batches(data, desc="noise")):
            clean += model(x).argmax(1).eq(y).sum()
            n += len(y)
            norms = image_norms(x)
            for k, snr in enumerate(grid):
                for r in range(self.repeats):
                    # one stream per (batch, SNR, repeat): results do not depend on the order
                    seed = mix_seed(context.seed, b, k, r)
                    generator = torch.Generator(context.device).manual_seed(seed)
                    noisy = add_noise_at_snr(x, snr, generator)
                    correct[k] += model(noisy).argmax(1).eq(y).sum()
                    db = 20 * torch.log10(norms / image_norms(noisy - x))
                    finite = db.isfinite()  # all-zero images have no SNR
                    seen_snr[k] += db.where(finite, 0).sum()
                    measured[k] += finite.sum()
        correct, seen_snr, measured = tally.cpu()
        accuracy = (correct / (n * self.repeats)).tolist()
        summary = {f"accuracy@{snr:g}dB": a for snr, a in zip(grid, accuracy, strict=True)}
        return self.result(
            {**summary, "mean_accuracy": sum(accuracy) / len(accuracy)},
            snr_db=grid,
            accuracy=accuracy,
            clean_accuracy=float(clean) / n,
            mean_snr_after_clamp=(seen_snr / measured.clamp(min=1)).tolist(),
            n=n,
        )

    @classmethod
    def plot(cls, results: list[tuple[str, MetricResult]]) -> Figure:
        """Accuracy against SNR, one line per model, as in the paper's Fig. 4."""
        fig = line_figure(
            results,
            "snr_db",
            "accuracy",
            xlabel="SNR (dB), before clamping to [0, 1]",
            ylabel="accuracy under Gaussian noise",
            title="Gaussian noise",
            marker="o",
        )
        fig.axes[0].set_ylim(0, 1.02)
        return fig


@hookimpl
def register_metrics(register: Register) -> None:
    register("noise", GaussianNoise)
