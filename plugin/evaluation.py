"""The evaluation runner: activates metrics on a run-scoped plugin manager and collects a report."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locrob import hookspecs, plugins
from locrob.configurable import instantiate
from locrob.data.cifar import DEFAULT_DATA_DIR
from locrob.data.images import ImageData, batches
from locrob.errors import LocrobError
from locrob.metrics.base import Metric, split_setting
from locrob.models.probe import check_model
from locrob.report import Report, environment
from locrob.runtime import eval_mode, on_device, progress, resolve_device
from locrob.sources import (
    as_module,
    data_options,
    load_dataset,
    load_model,
    model_info,
    warn_if_untrained,
)


@dataclass
class EvaluationContext:
    """Settings shared by every metric of one evaluation run.

    ``data_dir`` is the run's data folder (``--data-dir``): metrics that read files of their
    own (CIFAR-10-C) look there unless an option of theirs names another folder.
    """

    device: torch.device
    split: str = "test"
    batch_size: int = 256
    max_examples: int | None = None
    seed: int = 0
    data_dir: Path = DEFAULT_DATA_DIR

    def examples(self, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels measured: the first ``max_examples`` of ``split``."""
        x, y = data.split(self.split)
        if self.max_examples is not None:
            x, y = x[: self.max_examples], y[: self.max_examples]
        return x, y

    def batches(
        self, data: ImageData, desc: str = ""
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The examples as float batches in [0, 1] on the device, with a progress bar."""
        x, y = self.examples(data)
        n_batches = -(-len(y) // self.batch_size)
        yield from progress(batches(x, y, self.batch_size, self.device), total=n_batches, desc=desc)


def make_metrics(
    metrics: Sequence[str | Metric], options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Metric]:
    """Instantiate metrics from names (with ``options[name]``) or ready instances."""
    if not metrics:
        raise LocrobError("no metric requested; name at least one (like 'clean')")
    return instantiate(metrics, options, plugins.registries().metrics, Metric)


def measured_split(metric: Metric, context: EvaluationContext) -> str:
    """The split ``metric`` measures: its own ``split`` setting if it has one, else the run's."""
    return split_setting(metric.settings()) or context.split


def as_data(data: ImageData | str | tuple[Any, Any]) -> ImageData:
    """An :class:`ImageData` from itself, a dataset spec, or ``(images, labels)``.

    ``(images, labels)`` becomes a data set whose train and test splits are both those arrays.
    """
    if isinstance(data, ImageData):
        return data
    if isinstance(data, str):
        return load_dataset(data)
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        return ImageData("arrays", x, y, x, y)
    raise LocrobError(
        f"data must be an ImageData, a dataset name or (images, labels), got {type(data).__name__}"
    )


def planned_report(
    model: nn.Module | str, data: ImageData, context: EvaluationContext, name: str | None = None
) -> Report:
    """A run's report before it measures (no metrics yet): the model (a spec's
    :func:`~locrob.sources.model_info`, else its class), the data and examples, the settings
    and the environment. What makes a report comparable is known here, before any work."""
    info = {"spec": type(model).__name__, "name": type(model).__name__}
    if isinstance(model, str):
        info = model_info(model)
    return Report(
        model={**info, "name": name or info["name"]},
        dataset=data.describe(),
        split=context.split,
        n_examples=len(context.examples(data)[1]),
        metrics={},
        settings={
            "batch_size": context.batch_size,
            "seed": context.seed,
            "device": str(context.device),
        },
        environment=environment(context.device),
    )


def evaluate(
    model: nn.Module | str,
    data: ImageData | str | tuple[Any, Any] = "digits",
    metrics: Sequence[str | Metric] = ("clean",),
    *,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    split: str = "test",
    max_examples: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    name: str | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> Report:
    """Measure ``model`` on ``data`` with each metric and return one :class:`Report`.

    ``model`` is an ``nn.Module`` taking images in [0, 1], an ART PyTorch classifier, or a spec for
    :func:`locrob.load_model`; ``data`` an :class:`ImageData`, a spec for
    :func:`locrob.load_dataset`, or ``(images, labels)``. ``name`` labels the model in tables
    and plots. The model is moved to ``device`` and left there, in its original mode.
    ``data_dir`` is where metrics reading files of their own find them (default ``data``).
    ``download`` lets a model source that can fetch missing weights (``robustbench:``) do so.
    """
    data = as_data(data)
    if max_examples is not None and max_examples < 1:
        raise LocrobError(f"max_examples must be at least 1, got {max_examples}")
    if batch_size < 1:
        raise LocrobError(f"batch_size must be at least 1, got {batch_size}")
    context = EvaluationContext(
        resolve_device(device),
        split,
        batch_size,
        max_examples,
        seed,
        Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR,
    )
    planned = planned_report(model, data, context, name)
    if isinstance(model, str):
        model = load_model(model, **data_options(model, data, download=download))
    model = as_module(model)
    active = make_metrics(metrics, metric_options)

    pm = plugins.run_manager(hookspecs.EvaluationSpec, active)

    with on_device(model, context.device), eval_mode(model):
        check_model(model, context.examples(data)[0], data.num_classes, data.name, context.device)
        start = time.perf_counter()
        results = {r.name: r for r in pm.hook.measure(model=model, data=data, context=context)}
    missing = [m.name for m in active if m.name not in results]
    if missing:
        raise LocrobError(f"metric(s) {', '.join(missing)} returned no result under their own name")
    for metric in active:
        result = results[metric.name]
        if result.split is None:  # a metric that recorded its split itself knows it best
            result.split = measured_split(metric, context)
    warn_if_untrained(planned.model)  # after the run, beside its results (or not if it fails)
    return dataclasses.replace(
        planned,
        metrics={m.name: results[m.name] for m in active},
        seconds=round(time.perf_counter() - start, 3),
    )
