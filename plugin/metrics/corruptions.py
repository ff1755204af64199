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

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from locrob.contract import EvaluationContext, MetricResult
from locrob.corruptions import NAMES, PRESETS, SEVERITIES, get_corruption
from locrob.data.images import ImageData, batches
from locrob.errors import LocrobError, check
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import PerturbationMetric, correct_predictions
from locrob.runtime import progress
from locrob.streams import Streams

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
class CorruptionAccuracy(PerturbationMetric):
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

    def cells(self) -> list[tuple[str, int]]:
        return [(name, severity) for name in self.corruptions for severity in self.severities]

    def perturb(self, x: torch.Tensor, cell: tuple[str, int], streams: Streams) -> torch.Tensor:
        name, severity = cell
        return get_corruption(name)(x, severity, preset=self.preset, seed=streams)

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        if self.source == "generate":
            counts = self.count(model, data, context)
            n, clean, correct = counts.n, counts.clean, torch.tensor(counts.correct)
        else:
            n = len(self.examples(data, context)[1])
            clean = int(self.shard(context).sum(self.correct(model, data, context).sum()))
            correct = self._count_files(model, data, context, n)
        accuracy = (correct.double().view(len(self.corruptions), -1) / n).tolist()
        clean_error = 1 - clean / n
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

    @torch.no_grad()
    def _count_files(
        self, model: nn.Module, data: ImageData, context: EvaluationContext, n: int
    ) -> torch.Tensor:
        """Correct predictions on the published files' images, per cell (the grid's order)."""
        from locrob.adapters.robustbench import load_corrupted_cifar

        expected = self.source.removesuffix("-c")
        if data.name != expected or context.split != "test":
            raise LocrobError(
                f"{self.name}: {self.source} holds corrupted {expected} test images; evaluate "
                f"on --dataset {expected} --split test so the clean error is on the same images, "
                f"not on '{data.name}' ({context.split})"
            )
        folder = Path(self.data_dir) if self.data_dir is not None else context.data_dir
        shard = self.shard(context)
        mine = shard.indices(n)  # a split run: this rank's images of every file
        counts = []
        for name, severity in progress(self.cells(), desc=self.source):
            images, labels = load_corrupted_cifar(self.source, name, severity, folder, n)
            images, labels = images[mine.start : mine.stop], labels[mine.start : mine.stop]
            pairs = batches(images, labels, context.batch_size, context.device)
            counts.append(correct_predictions(model, pairs, context.device).sum())
        return shard.sum(torch.stack(counts))


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("corruptions", CorruptionAccuracy)
