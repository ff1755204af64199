"""``corruptions``: accuracy under the 15 CIFAR-10-C corruptions (the paper's Table 2).

Images are corrupted on the fly from the data set being evaluated (``source="generate"``, any
data set, the ``preset`` parameters), or read from the published CIFAR-10-C / CIFAR-100-C files
through RobustBench (``source="cifar10-c"``, ``"cifar100-c"``).

Errors are 1 - accuracy. With ``E[c][s]`` the error under corruption ``c`` at severity ``s``:

* ``corruption_error``: the mean of ``E`` over corruptions and severities (Table 2's
  "corrupted" column);
* ``mCE`` (Hendrycks & Dietterich): the mean over ``c`` of ``sum_s E[c][s] / sum_s B[c][s]``,
  ``B`` a baseline model's errors, in percent (the baseline scores 100);
* ``relative_mCE`` (Table 2): ``100 (corrupted - clean) / (corrupted_V - clean_V)``, the error
  added by corruption relative to that added for a vanilla model V.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from locrob.configurable import check
from locrob.corruptions import NAMES, PRESETS, SEVERITIES, get_corruption
from locrob.data.images import ImageData, batches
from locrob.errors import LocrobError
from locrob.evaluation import EvaluationContext
from locrob.hookspecs import Register, hookimpl
from locrob.metrics.base import Metric, MetricResult
from locrob.runtime import mix_seed, progress

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SOURCES = ("generate", "cifar10-c", "cifar100-c")


def errors(result: MetricResult) -> dict[str, list[float]]:
    """Corruption name -> error at each measured severity."""
    return {
        name: [1 - a for a in accuracy]
        for name, accuracy in zip(
            result.details["corruptions"], result.details["accuracy"], strict=True
        )
    }


def mce(result: MetricResult, baseline: MetricResult) -> float:
    """Mean corruption error in percent, each corruption normalized by ``baseline``'s error."""
    ours, base = errors(result), errors(baseline)
    if result.details["severities"] != baseline.details["severities"] or set(ours) - set(base):
        raise LocrobError(
            "mCE needs the baseline measured on the same corruptions and severities; the "
            f"baseline has {sorted(base)} at severities {baseline.details['severities']}"
        )
    ratios = []
    for name, errs in ours.items():
        total = sum(base[name])
        if total == 0:
            raise LocrobError(f"mCE: the baseline makes no error on '{name}', nothing to divide by")
        ratios.append(sum(errs) / total)
    return 100 * sum(ratios) / len(ratios)


def relative_mce(result: MetricResult, vanilla: MetricResult) -> float:
    """Table 2's relative mCE in percent: corruption-added error relative to ``vanilla``'s."""
    added = vanilla.summary["corruption_error"] - vanilla.summary["clean_error"]
    if added <= 0:
        raise LocrobError(
            "relative mCE: the vanilla model loses no accuracy under corruption, nothing to "
            "divide by"
        )
    return 100 * (result.summary["corruption_error"] - result.summary["clean_error"]) / added


def _reference(path: str, role: str) -> MetricResult:
    from locrob.report import load_report

    report = load_report(path)
    if CorruptionAccuracy.name not in report.metrics:
        raise LocrobError(
            f"the {role} report '{path}' has no '{CorruptionAccuracy.name}' result; evaluate the "
            f"{role} model with --metrics {CorruptionAccuracy.name}"
        )
    return report.metrics[CorruptionAccuracy.name]


@dataclass
class CorruptionAccuracy(Metric):
    """Top-1 accuracy under each corruption and severity, with the errors Table 2 reports."""

    name = "corruptions"
    corruptions: list[str] = field(default_factory=lambda: list(NAMES))
    severities: list[int] = field(default_factory=lambda: list(SEVERITIES))
    preset: str = "cifar"
    source: str = "generate"
    data_dir: str | None = None  # where CIFAR-10-C lives; None: the run's data_dir
    baseline: str | None = None  # a report with this metric: mCE against it
    vanilla: str | None = None  # a report with this metric: Table 2's relative mCE

    def __post_init__(self) -> None:
        check(len(self.corruptions) > 0, self.name, "corruptions needs at least one name")
        check(
            len(set(self.corruptions)) == len(self.corruptions),
            self.name,
            f"corruptions are listed twice: {self.corruptions}",
        )
        check(
            len(self.severities) > 0 and all(s in SEVERITIES for s in self.severities),
            self.name,
            f"severities must be integers from 1 to 5, got {self.severities}",
        )
        check(self.preset in PRESETS, self.name, f"preset must be one of {PRESETS}")
        check(self.source in SOURCES, self.name, f"source must be one of {SOURCES}")
        if self.source == "generate":
            for name in self.corruptions:
                get_corruption(name).parameters(1, self.preset)  # unknown names fail here
        else:
            unknown = sorted(set(self.corruptions) - set(NAMES))
            check(not unknown, self.name, f"{self.source} has no files for {unknown}")

    @hookimpl
    @torch.no_grad()
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        correct = torch.zeros(
            len(self.corruptions), len(self.severities), dtype=torch.float64, device=context.device
        )
        clean = torch.zeros((), dtype=torch.float64, device=context.device)
        n = 0
        for x, y in context.batches(data, desc="clean"):
            clean += model(x).argmax(1).eq(y).sum()
            n += len(y)
        if self.source == "generate":
            self._count_generated(model, data, context, correct)
        else:
            self._count_files(model, data, context, correct, n)
        accuracy = (correct / n).tolist()
        clean_error = 1 - float(clean) / n
        corruption_error = 1 - sum(map(sum, accuracy)) / correct.numel()
        result = self.result(
            {
                "clean_error": clean_error,
                "corruption_error": corruption_error,
                "accuracy": 1 - corruption_error,
            },
            corruptions=list(self.corruptions),
            severities=list(self.severities),
            accuracy=accuracy,
            n=n,
        )
        if self.baseline:
            result.summary["mCE"] = mce(result, _reference(self.baseline, "baseline"))
        if self.vanilla:
            result.summary["relative_mCE"] = relative_mce(
                result, _reference(self.vanilla, "vanilla")
            )
        return result

    def _count_generated(
        self, model: nn.Module, data: ImageData, context: EvaluationContext, correct: torch.Tensor
    ) -> None:
        corruptions = [get_corruption(name) for name in self.corruptions]
        for b, (x, y) in enumerate(context.batches(data, desc="corruptions")):
            for c, corruption in enumerate(corruptions):
                for s, severity in enumerate(self.severities):
                    # one stream per (batch, corruption, severity): independent of the order
                    seed = mix_seed(context.seed, b, c, severity)
                    generator = torch.Generator(context.device).manual_seed(seed)
                    corrupted = corruption(x, severity, preset=self.preset, seed=generator)
                    correct[c, s] += model(corrupted).argmax(1).eq(y).sum()

    def _count_files(
        self,
        model: nn.Module,
        data: ImageData,
        context: EvaluationContext,
        correct: torch.Tensor,
        n: int,
    ) -> None:
        from locrob.adapters.robustbench import load_corrupted_cifar

        expected = self.source.removesuffix("-c")
        if data.name != expected or context.split != "test":
            raise LocrobError(
                f"{self.name}: {self.source} holds corrupted {expected} test images; evaluate "
                f"on --dataset {expected} --split test so the clean error is on the same images, "
                f"not on '{data.name}' ({context.split})"
            )
        folder = Path(self.data_dir) if self.data_dir is not None else context.data_dir
        cells = [(c, s) for c in range(len(self.corruptions)) for s in range(len(self.severities))]
        for c, s in progress(cells, desc=self.source):
            images, labels = load_corrupted_cifar(
                self.source, self.corruptions[c], self.severities[s], folder, n
            )
            for x, y in batches(images, labels, context.batch_size, context.device):
                correct[c, s] += model(x).argmax(1).eq(y).sum()

    @classmethod
    def plot(cls, results: list[tuple[str, MetricResult]]) -> Figure:
        """A heat map of the error in percent per corruption and severity, one panel per model."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(2.6 + 1.9 * len(results), 5.4), layout="constrained")
        axes = fig.subplots(1, len(results), squeeze=False, sharey=True)[0]
        image = None
        for ax, (label, result) in zip(axes, results, strict=True):
            table = errors(result)
            # percent, like the numbers in the cells and the colour bar
            grid = [[100 * e for e in table[name]] for name in result.details["corruptions"]]
            image = ax.imshow(grid, cmap="magma_r", vmin=0, vmax=100, aspect="auto")
            for i, row in enumerate(grid):
                for j, value in enumerate(row):
                    color = "white" if value > 50 else "black"
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color=color)
            ax.set_xticks(range(len(result.details["severities"])))
            ax.set_xticklabels(result.details["severities"])
            ax.set_xlabel("severity")
            # one short line each, so that neighbouring titles never run into each other
            ax.set_title(
                f"{textwrap.fill(label, 18)}\nclean {100 * result.summary['clean_error']:.1f} %"
                f"\ncorrupted {100 * result.summary['corruption_error']:.1f} %",
                fontsize=8,
            )
        names = results[0][1].details["corruptions"]
        axes[0].set_yticks(range(len(names)))
        axes[0].set_yticklabels(names, fontsize=7)
        fig.colorbar(image, ax=list(axes), label="error (%)", shrink=0.8)
        return fig

    @classmethod
    def table(cls, results: list[tuple[str, MetricResult]]) -> str:
        """Table 2 in Markdown: errors in percent, mCE and relative mCE against the first model."""
        vanilla = results[0][1]
        lines = [
            f"| model | clean error | corrupted error | mCE vs {results[0][0]} "
            f"| relative mCE vs {results[0][0]} |",
            "|---|---|---|---|---|",
        ]
        for label, result in results:
            summary = result.summary
            lines.append(
                f"| {label} | {100 * summary['clean_error']:.1f} "
                f"| {100 * summary['corruption_error']:.1f} | {mce(result, vanilla):.1f} "
                f"| {relative_mce(result, vanilla):.1f} |"
            )
        return "\n".join(lines) + "\n"


@hookimpl
def register_metrics(register: Register) -> None:
    register("corruptions", CorruptionAccuracy)
