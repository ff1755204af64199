"""What every metric shares: the base class and its mechanics.

The base does what torchattacks' ``Attack.__call__`` does for an attack: it iterates the
measured split in batches on the device, gives each image its own random streams (seeded by
the image's index, so no number depends on the batch size or on how the images are split
between processes), counts correct predictions and keeps the tallies on the device. A
perturbation metric then holds only its perturbation (:class:`PerturbationMetric`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from locrob.configurable import Configurable
from locrob.contract import EvaluationContext, MetricResult, split_setting
from locrob.data.images import ImageData, batches
from locrob.distributed import Shard
from locrob.runtime import progress
from locrob.streams import Streams


@dataclass
class Batch:
    """A batch of the measured examples: float images in [0, 1] and labels on the device;
    ``first`` is the index of its first image in the split."""

    first: int
    x: torch.Tensor
    y: torch.Tensor

    @property
    def indices(self) -> range:
        """The indices in the split of the batch's images."""
        return range(self.first, self.first + len(self.y))


def top1_hits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Whether each row of ``logits`` ranks its label ``y`` first, as a bool tensor on the
    logits' device: the test every accuracy of the project (metrics, trainer) counts."""
    return logits.argmax(1).eq(y)


def correct_predictions(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Whether ``model`` classifies each image right (:func:`top1_hits`), as one bool tensor on
    the batches' device (``device`` where there is no batch)."""
    hits = []
    for x, y in batches:  # drawn with gradients on: a batch may be made by an attack
        with torch.no_grad():
            hits.append(top1_hits(model(x), y))
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool, device=device)


class Metric(Configurable):
    """Base of metric plugins.

    A subclass is a ``@dataclass`` whose fields are its settings, sets ``name``, and
    implements the evaluation hook::

        @hookimpl
        def measure(self, model, data, context) -> MetricResult: ...

    ``self.examples(data, context)`` gives the images and labels to measure on,
    ``self.batches(data, context)`` iterates them as float batches on the device and
    ``self.correct(model, data, context)`` says which the model classifies right. A metric
    that measures a split of its own choosing (``local-robustness`` and ``separation``: the
    training set) names it in a ``split`` setting, which the runner records in its result.
    """

    kind: ClassVar[str] = "metric"
    # a metric that measures only what :meth:`batches` gives it and sums its tallies over
    # :meth:`shard` declares itself shardable; any other runs on rank 0 alone in a group
    shardable: ClassVar[bool] = False

    def result(self, summary: dict[str, float], **details: Any) -> MetricResult:
        """A :class:`MetricResult` carrying this metric's name and settings."""
        return MetricResult(self.name, summary, details, self.settings())

    def measured_split(self, context: EvaluationContext) -> str:
        """The split measured: the metric's own ``split`` setting if it has one, else the run's."""
        return split_setting(self.settings()) or context.split

    def examples(
        self, data: ImageData, context: EvaluationContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels measured: the first ``context.max_examples`` of the split."""
        return context.examples(data, self.measured_split(context))

    def batches(
        self, data: ImageData, context: EvaluationContext, desc: str = "", aligned: bool = False
    ) -> Iterator[Batch]:
        """The examples as float batches in [0, 1] on the device, with a progress bar: in a
        run split over processes, this rank's contiguous range of them (:meth:`shard`).

        ``aligned`` gives each rank whole batches of the single-process run instead, each then
        computed exactly as one process computes it (what a sum of floating-point values per
        batch needs to be the same at any world size), at the cost of balance: a rank may get
        one batch more than another. Counts need not: they are exact in any grouping.
        """
        x, y = self.examples(data, context)
        size, shard = context.batch_size, self.shard(context)
        mine = shard.blocks(len(y), size) if aligned else shard.indices(len(y))
        x, y = x[mine.start : mine.stop], y[mine.start : mine.stop]
        pairs = batches(x, y, size, context.device)
        for k, (xb, yb) in enumerate(progress(pairs, total=-(-len(y) // size), desc=desc)):
            yield Batch(mine.start + k * size, xb, yb)

    def shard(self, context: EvaluationContext) -> Shard:
        """This process's part of the run: ``shard.indices(n)`` its range, ``shard.sum(t)`` a
        tally summed over the processes (single-process runs: everything, and the identity)."""
        return Shard(context.rank, context.world_size)

    def correct(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> torch.Tensor:
        """Whether the model classifies each example of :meth:`batches` right, on the device."""
        pairs = ((b.x, b.y) for b in self.batches(data, context, desc=self.name))
        return correct_predictions(model, pairs, context.device)


@dataclass
class Counts:
    """What a :class:`PerturbationMetric` counted over ``n`` examples, moved to the host once:
    ``clean`` of them classified right, ``correct[k]`` right under cell ``k`` of the grid, and
    ``observed[k]`` the sums of the metric's own integer statistics under cell ``k``
    (:meth:`observe`)."""

    n: int
    clean: int
    correct: list[int]
    observed: list[list[int]]


class PerturbationMetric(Metric):
    """Top-1 accuracy on perturbed copies of the examples, one count per cell of a grid (an
    SNR, a corruption at a severity), beside the clean accuracy.

    A subclass lists its grid (:meth:`cells`, each cell a tuple of ints, floats or strings that
    names its random draws) and perturbs a batch (:meth:`perturb`); :meth:`count` does the
    rest in one pass over the split. Image ``i`` under cell ``c`` draws from the stream of
    ``(seed, i, *c)``, so a cell's result depends on neither the batch size nor the other cells.
    """

    shardable: ClassVar[bool] = True
    observed: ClassVar[int] = 0  # how many statistics :meth:`observe` returns

    def cells(self) -> Sequence[tuple[int | float | str, ...]]:
        """The grid: one tuple per perturbation measured."""
        raise NotImplementedError

    def perturb(
        self, x: torch.Tensor, cell: tuple[int | float | str, ...], streams: Streams
    ) -> torch.Tensor:
        """The batch ``x`` perturbed as ``cell`` says, drawing from the images' ``streams``."""
        raise NotImplementedError

    def observe(self, x: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
        """``observed`` statistics of one perturbed batch, summed per cell (a 1-D int64
        tensor). Integers, so that a sum does not depend on how the images were grouped into
        batches and processes: a real value is counted in fixed point (micro-units)."""
        return torch.zeros(0, dtype=torch.int64, device=x.device)

    @torch.no_grad()
    def count(self, model: nn.Module, data: ImageData, context: EvaluationContext) -> Counts:
        """The clean and per-cell counts of correct predictions over the split."""
        cells = self.cells()
        # tallies stay on the device: no host synchronization inside the loops
        dev, width = context.device, 2 + len(cells)
        counts = torch.zeros(width, dtype=torch.int64, device=dev)  # n, clean, per cell
        observed = torch.zeros(len(cells), self.observed, dtype=torch.int64, device=dev)
        for batch in self.batches(data, context, desc=self.name):
            counts[0] += len(batch.y)
            counts[1] += correct_predictions(model, [(batch.x, batch.y)]).sum()
            for k, cell in enumerate(cells):
                streams = Streams.for_images(context.seed, batch.indices, dev, *cell)
                perturbed = self.perturb(batch.x, cell, streams)
                counts[2 + k] += correct_predictions(model, [(perturbed, batch.y)]).sum()
                observed[k] += self.observe(batch.x, perturbed)
        shard = self.shard(context)
        n, clean, *correct = shard.sum(counts).tolist()
        return Counts(n, clean, correct, shard.sum(observed).tolist())
